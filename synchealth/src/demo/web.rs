//! The web probe's example app (`client-probe/web/example/`), served by
//! `synchealth up --demo` under `/demo/web/`, so a newcomer opens one page
//! and sees a browser device on the dashboard beside the simulated fleet,
//! with no Node or second server.
//!
//! The page is served from the collector's own origin, and a browser still
//! sends `Origin` with its posts, so the page uses an ingest key of its own
//! whose allowed origins are exactly the addresses this instance answers on
//! (the loopback address it is bound to, `localhost` on the same port, and
//! the public URL): the fleet's key and every other key keep refusing
//! browsers. The key is public by design (it is in every client); the page
//! gets it in a `<meta>` element rather than in its URL.
//!
//! The probe bundle is the build's minified file, checked in beside the
//! example (`scripts/test` fails when it no longer matches a fresh build),
//! so `cargo build` alone embeds it.

use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::response::{Html, IntoResponse, Redirect};
use axum::routing::get;
use axum::Router;

use crate::{Application, Settings};

const INDEX: &str = include_str!("../../../client-probe/web/example/index.html");
const APP: &str = include_str!("../../../client-probe/web/example/app.js");
const PROBE: &str = include_str!("../../../client-probe/web/example/probe.min.js");

/// Where the example app is served.
pub const PATH: &str = "/demo/web/";

/// The page's own resources and its collector, nothing else; its one
/// `<style>` is inline.
const POLICY: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'unsafe-inline'";

/// The origins a browser names when it posts from the served page.
pub fn origins(port: u16, public_url: &str) -> Vec<String> {
    let mut origins = vec![format!("http://127.0.0.1:{port}"), format!("http://localhost:{port}")];
    let (scheme, rest) = public_url.split_once("://").unwrap_or(("", ""));
    let host = rest.split('/').next().unwrap_or("");
    if let Some(origin) = synchealth_collector::parse_allowed_origin(&format!("{scheme}://{host}")) {
        if origin != "*" && !origins.contains(&origin) {
            origins.push(origin);
        }
    }
    origins
}

/// The example app's routes, the page carrying `ingest_key`.
pub fn router(ingest_key: &str) -> Router {
    let meta = format!("<meta name=\"synchealth-ingest-key\" content=\"{}\">\n", attribute(ingest_key));
    let index: std::sync::Arc<str> = INDEX.replacen("<title>", &format!("{meta}<title>"), 1).into();
    let script = |body: &'static str| {
        move || async move { ([(CONTENT_TYPE, "text/javascript; charset=utf-8"), (CACHE_CONTROL, "no-cache")], body) }
    };
    Router::new()
        .route("/demo/web", get(|| async { Redirect::permanent(PATH) }))
        .route(
            PATH,
            get(move || {
                let index = index.clone();
                async move { ([(CONTENT_SECURITY_POLICY, POLICY)], Html(index.to_string())).into_response() }
            }),
        )
        .route("/demo/web/app.js", get(script(APP)))
        .route("/demo/web/probe.min.js", get(script(PROBE)))
}

/// Adds the example app to `app`'s routes, with its key, and says where.
pub async fn beside(app: Application, settings: &Settings) -> anyhow::Result<Application> {
    let key = key(&app, settings).await?;
    println!("synchealth: the web probe's example app (a browser device): http://127.0.0.1:{}{PATH}", app.port());
    Ok(app.with_routes(router(&key)))
}

/// The key the served page posts with, allowed from [`origins`]; created
/// once (kept in `<data_dir>/demo/web_ingest_key`) and its origins brought
/// up to date at every start, as the port may change.
pub async fn key(app: &Application, settings: &Settings) -> anyhow::Result<String> {
    let path = settings.data_dir.join("demo").join("web_ingest_key");
    super::own_key(app.store(), &path, "demo web example", origins(app.port(), app.public_url())).await
}

/// `text` safe inside a double-quoted HTML attribute.
fn attribute(text: &str) -> String {
    text.replace('&', "&amp;").replace('"', "&quot;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origins_are_the_loopback_address_localhost_and_the_public_url() {
        assert_eq!(
            origins(8080, "https://sync.example.com/dashboard"),
            ["http://127.0.0.1:8080", "http://localhost:8080", "https://sync.example.com"]
        );
        assert_eq!(origins(9000, "http://127.0.0.1:9000"), ["http://127.0.0.1:9000", "http://localhost:9000"]);
    }

    #[test]
    fn a_key_cannot_break_out_of_its_attribute() {
        assert_eq!(attribute("a\"><script>"), "a&quot;&gt;&lt;script&gt;");
    }
}
