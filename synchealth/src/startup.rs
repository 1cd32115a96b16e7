//! Building and running the HTTP application for a set of roles: the store,
//! the listener, each chosen role (built in `roles/`) merged onto one router
//! with the ops routes, and the graceful shutdown that drains the pipeline.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::StatusCode;
use axum::Router;
use synchealth_collector::Pipeline;
use synchealth_store::{ClickHouseConfig, ClickHouseStore, ClusterConfig, SharedStore, SqliteStore};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::bootstrap::{provision, Generated};
use crate::roles::Roles;
use crate::{ops, Settings};

/// Opens the configured store: ClickHouse when a URL is set, else the
/// embedded SQLite file in the data directory. Applies migrations.
pub async fn open_store(settings: &Settings) -> anyhow::Result<SharedStore> {
    let store: SharedStore = match &settings.clickhouse.url {
        Some(url) => {
            let config = ClickHouseConfig {
                url: url.clone(),
                user: settings.clickhouse.user.clone(),
                password: settings.clickhouse.password.as_ref().map(|p| p.expose().to_string()),
                database: settings.clickhouse.database.clone(),
            };
            let read = &settings.clickhouse_read;
            let mut store =
                ClickHouseStore::connect(config).await.with_context(|| format!("connecting to ClickHouse at {url}"))?;
            if let Some(name) = &settings.clickhouse.cluster {
                store = store.with_cluster(ClusterConfig {
                    name: name.clone(),
                    insert_quorum: settings.clickhouse.insert_quorum,
                });
            }
            Arc::new(store.with_reader(
                read.user.clone(),
                read.password.as_ref().map(|p| p.expose().to_string()),
                &read.limits(),
            ))
        }
        None => {
            std::fs::create_dir_all(&settings.data_dir)
                .with_context(|| format!("creating the data directory {}", settings.data_dir.display()))?;
            let path = settings.data_dir.join("synchealth.db");
            Arc::new(
                SqliteStore::open(&path).with_context(|| format!("opening the embedded store {}", path.display()))?,
            )
        }
    };
    store.migrate().await.context("applying storage migrations")?;
    tracing::info!(store = store.kind(), "Store ready.");
    Ok(store)
}

/// A built, bound application, ready to run.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    store: SharedStore,
    background: Vec<JoinHandle<()>>,
    /// The collector's ingest pipeline, drained after the last request.
    pipeline: Option<Pipeline>,
    generated: Generated,
    public_url: String,
    limits: crate::serve::ConnectionLimits,
}

impl Application {
    /// Opens the store, provisions first-start secrets, binds the listener
    /// (port 0 picks a free one) and assembles the routes of `roles`.
    pub async fn build(mut settings: Settings, roles: Roles) -> anyhow::Result<Application> {
        // Bound first: alert links default to the address really bound
        // (`--listen 127.0.0.1:0` included).
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding the listen address {}", settings.listen))?;
        let bound = listener.local_addr().context("reading the bound address")?;
        let limits = settings.server.limits().fitted_to(crate::serve::raise_open_files_limit());
        settings.alerts.public_url = settings.public_url_for(bound);
        let store = open_store(&settings).await?;
        let generated = provision(&store, &settings).await?;
        let pipeline = if roles.collector {
            Some(crate::roles::collector::pipeline(store.clone(), &settings).await?)
        } else {
            None
        };
        let mut router = ops::router(store.clone(), pipeline.as_ref().map(Pipeline::handle));
        router = router.merge(crate::telemetry::metrics_router());
        crate::metrics_catalog::register(settings.metrics.per_project);
        synchealth_collector::set_per_project_metrics(settings.metrics.per_project);
        if let Some(pipeline) = &pipeline {
            let state = crate::roles::collector::state(store.clone(), &settings, pipeline);
            router = router.merge(synchealth_collector::router(state));
        }
        if roles.dashboard {
            let state = crate::roles::dashboard::state(store.clone(), &settings)?;
            router = router.merge(synchealth_dashboard::router(state));
        }
        let router = router.layer((
            // The path only, never the query: a beacon's `?ingest_key=`
            // must not land in the logs (the default span records the URI).
            TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<axum::body::Body>| {
                tracing::debug_span!("request", method = %request.method(), path = %request.uri().path())
            }),
            TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, Duration::from_secs(30)),
        ));
        let mut background = Vec::new();
        if roles.collector {
            background.push(tokio::spawn(retention_loop(store.clone(), settings.retention_days)));
        }
        if roles.alerts {
            let evaluator = crate::roles::alerts::evaluator(store.clone(), &settings.alerts)?;
            background.push(tokio::spawn(evaluator.run(settings.alerts.interval()?)));
        }
        Ok(Application {
            listener,
            router,
            store,
            background,
            pipeline,
            generated,
            public_url: settings.alerts.public_url,
            limits,
        })
    }

    /// `routes` served beside the roles' (the demo's example app), outside
    /// their request layers.
    pub fn with_routes(mut self, routes: Router) -> Application {
        self.router = self.router.merge(routes);
        self
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// The dashboard's address in alert links (`alerts.public_url`, by
    /// default the bound address).
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// The store the application writes to and reads from.
    pub fn store(&self) -> SharedStore {
        self.store.clone()
    }

    /// Secrets generated at this start (to print once).
    pub fn generated(&self) -> &Generated {
        &self.generated
    }

    /// Serves until SIGTERM or Ctrl-C; in-flight requests finish first, then
    /// the ingest pipeline flushes what it holds (to the store or the spool).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let addr = self.listener.local_addr().context("reading the bound address")?;
        tracing::info!(%addr, "Listening.");
        tracing::info!(max_connections = self.limits.max_connections, header_read_timeout = ?self.limits.header_read_timeout, "Connection limits.");
        crate::serve::serve(self.listener, self.router, self.limits, shutdown_signal()).await;
        // Drained after the last request, so queued events reach the store
        // or the spool.
        if let Some(pipeline) = self.pipeline {
            pipeline.shutdown().await;
        }
        for task in self.background {
            task.abort();
        }
        tracing::info!("Stopped.");
        Ok(())
    }
}

/// Drops expired data hourly (first pass at start).
async fn retention_loop(store: SharedStore, days: u32) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        if let Err(e) = store.apply_retention(days).await {
            tracing::warn!(error = %e, days, "Retention pass failed; will retry next hour.");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("Shutting down: finishing in-flight requests.");
}
