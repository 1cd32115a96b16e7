//! The server's connection limits over real sockets: the header-read
//! timeout closes a stalled connection, and beyond the connection cap
//! requests get 503 while `/healthz` still answers.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{spawn_app_with, Backend, ADMIN_PASSWORD};

fn port_of(address: &str) -> u16 {
    address.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_headers_is_closed_after_the_header_read_timeout() {
    let (app, _) = spawn_app_with(Backend::Sqlite, "conn_header_timeout", |s| s.server.header_read_timeout_ms = 500)
        .await
        .unwrap();
    let mut stalled = TcpStream::connect(("127.0.0.1", port_of(&app.address))).await.unwrap();
    stalled.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: ").await.unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the server closed the connection within 5 s");
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "not before the timeout: {elapsed:?}");
    let text = String::from_utf8_lossy(&rest);
    assert!(!text.contains("200 OK"), "the stalled request was never served: {text}");
    // A keep-alive connection left idle after a response is closed too.
    let mut idle = TcpStream::connect(("127.0.0.1", port_of(&app.address))).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut all = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut all)).await;
    assert!(read.is_ok(), "the idle keep-alive connection was closed within 5 s");
    assert!(String::from_utf8_lossy(&all).starts_with("HTTP/1.1 200"), "after its answer");
    // And a complete request on a new connection is served as usual.
    assert_eq!(app.client.get(format!("{}/healthz", app.address)).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn beyond_the_connection_cap_requests_get_503_while_healthz_still_answers() {
    let (app, _) = spawn_app_with(Backend::Sqlite, "conn_cap", |s| s.server.max_connections = 3).await.unwrap();
    let port = port_of(&app.address);
    // Three connections that send nothing hold the three slots.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fresh = || reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let api = fresh()
        .get(format!("{}/api/v1/summary", app.address))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 503);
    assert_eq!(api.headers()["retry-after"], "1");
    assert_eq!(api.headers()["connection"], "close");
    let body: serde_json::Value = api.json().await.unwrap();
    assert_eq!(body["error"], "busy");
    let healthz = fresh().get(format!("{}/healthz", app.address)).send().await.unwrap();
    assert_eq!(healthz.status(), 200, "the liveness probe still gets through");
    // One held connection goes: its slot is free again.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = fresh()
            .get(format!("{}/api/v1/summary", app.address))
            .basic_auth("admin", Some(ADMIN_PASSWORD))
            .send()
            .await
            .unwrap()
            .status();
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "still {status} 5 s after a connection closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
