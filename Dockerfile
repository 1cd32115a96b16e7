# syntax=docker/dockerfile:1
# One image for every role: the `synchealth` binary (collector, dashboard,
# alerts, migrate, demo...). Multi-stage: a Rust toolchain builds it, a slim
# Debian of the same release runs it (same glibc).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the build directory between builds; the
# binary is copied out of the cached target directory, which is not a layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p synchealth \
    && install -D -m 0755 target/release/synchealth /out/synchealth

FROM debian:bookworm-slim
# curl: container healthchecks. ca-certificates: for tools run in the
# container (synchealth's own TLS, to SMTP servers and https webhooks, uses
# rustls with the Mozilla roots built in).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/synchealth \
    && chown nobody:nogroup /var/lib/synchealth
COPY --from=build /out/synchealth /usr/local/bin/synchealth
USER nobody
ENV SYNCHEALTH_LISTEN=0.0.0.0:8080 \
    SYNCHEALTH_DATA_DIR=/var/lib/synchealth
VOLUME /var/lib/synchealth
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=5 CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["synchealth"]
# The single-binary default: every role over the embedded store.
CMD ["up"]
