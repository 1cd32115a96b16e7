# One image for every role: the `synchealth` binary.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p synchealth

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/synchealth /usr/local/bin/synchealth
USER nobody
EXPOSE 8080
ENTRYPOINT ["synchealth"]
CMD ["up", "--listen", "0.0.0.0:8080", "--data-dir", "/tmp/synchealth"]
