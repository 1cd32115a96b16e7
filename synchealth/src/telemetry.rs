//! The process's own telemetry: logs (`tracing` to stderr, filtered by
//! `RUST_LOG`), traces (OpenTelemetry over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is
//! set) and metrics (the `metrics` facade into a Prometheus recorder,
//! rendered at `GET /metrics` by every role).

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// The `service.name` of exported traces.
pub const SERVICE_NAME: &str = "synchealth";

/// Installed tracing; flushes and stops the trace exporter when shut down
/// or dropped.
#[derive(Debug)]
pub struct Telemetry {
    tracer_provider: Option<SdkTracerProvider>,
}

/// Whether traces should be exported: an OTLP endpoint is configured.
pub fn otlp_configured() -> bool {
    ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.trim().is_empty()))
}

/// Installs the global `tracing` subscriber: human-readable logs on stderr
/// filtered by `RUST_LOG` (else `default_filter`), plus an OpenTelemetry layer
/// exporting spans over OTLP/HTTP (protobuf) when an endpoint is configured;
/// the exporter reads the standard `OTEL_EXPORTER_OTLP_*` variables.
pub fn init(default_filter: &str) -> anyhow::Result<Telemetry> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let tracer_provider = if otlp_configured() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
            .context("building the OTLP trace exporter (OTEL_EXPORTER_OTLP_ENDPOINT)")?;
        let resource = Resource::builder().with_service_name(SERVICE_NAME).build();
        Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
    } else {
        None
    };
    let otel = tracer_provider
        .as_ref()
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer(SERVICE_NAME)));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .context("installing the tracing subscriber")?;
    if tracer_provider.is_some() {
        tracing::info!("Exporting traces over OTLP.");
    }
    Ok(Telemetry { tracer_provider })
}

impl Telemetry {
    /// Flushes pending spans and stops the exporter (blocks until done or
    /// the exporter's timeout).
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.tracer_provider.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("synchealth: flushing traces failed: {e}");
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The process-wide Prometheus recorder, installed on first use. Every
/// [`crate::Application`] of a process (tests build many) shares it, so the
/// counters are per process, as Prometheus expects.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = crate::metrics_catalog::with_buckets(PrometheusBuilder::new()).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "Histogram buckets refused; latencies render as summaries.");
            PrometheusBuilder::new()
        });
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            // Another recorder came first (an embedding program's): /metrics
            // then shows only what this one was given, which is nothing.
            tracing::warn!("A metrics recorder was already installed; /metrics will be empty.");
        }
        // Drains histograms so they do not grow without bound between scrapes.
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            upkeep.run_upkeep();
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "Could not start the metrics upkeep thread.");
        }
        handle
    })
}

/// `GET /metrics`: every metric of the process in the Prometheus text format.
pub fn metrics_router() -> Router {
    let handle = prometheus();
    Router::new().route(
        "/metrics",
        get(move || async move {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()).into_response()
        }),
    )
}
