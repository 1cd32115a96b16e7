//! Delivery itself, beside the evaluation tests of `alerts.rs`: retries while
//! the SMTP server or a webhook receiver is down or failing, a notification
//! left pending by a stopped process, `synchealth alerts test`, and email
//! over STARTTLS and implicit TLS with a private CA.

use super::*;

#[tokio::test]
async fn alerts_test_delivers_a_signed_test_notification() {
    let Some(w) = world(Backend::Sqlite, "alerts_test_command", 20, false).await else {
        return;
    };
    let record = alerts_cmd::test(w.store.clone(), &w.settings.alerts, "hook").await.unwrap();
    assert_eq!((record.status.as_str(), record.kind.as_str(), record.attempts), ("delivered", "test", 1));
    let hooks = w.hooks.on("hook");
    assert_eq!(hooks.len(), 1);
    let body = &hooks[0].body;
    assert_eq!(
        (body["kind"].as_str(), body["state"].as_str(), body["severity"].as_str()),
        (Some("test"), Some("test"), Some("test"))
    );
    let fingerprint = body["fingerprint"].as_str().unwrap();
    assert_eq!(fingerprint.len(), 16, "a real fingerprint: {body}");
    assert_eq!(record.fingerprint, fingerprint);
    assert_signed_now(&hooks[0]);

    // To Alertmanager receivers it is resolved (their statuses are firing
    // and resolved; only firing opens an incident), with severity `test`.
    let record = alerts_cmd::test(w.store.clone(), &w.settings.alerts, "am").await.unwrap();
    assert_eq!(record.status, "delivered");
    let am = &w.hooks.on("am")[0].body;
    assert_eq!(am["status"], "resolved", "{am}");
    assert_eq!(am["alerts"][0]["status"], "resolved");
    assert_eq!(am["alerts"][0]["labels"]["severity"], "test");
    assert_eq!(am["alerts"][0]["fingerprint"], fingerprint);
    assert_ne!(am["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    let unknown = alerts_cmd::test(w.store.clone(), &w.settings.alerts, "pager").await.unwrap_err();
    assert!(unknown.to_string().contains("no channel named \"pager\""), "{unknown}");
}
#[tokio::test]
async fn an_email_left_pending_by_a_stopped_process_is_delivered_by_the_next_one() {
    let Some(w) = world(Backend::Sqlite, "alerts_resume", 20, false).await else {
        return;
    };
    let first = tokio::spawn(alerts_role::evaluator(w.store.clone(), &w.settings.alerts).unwrap().run(INTERVAL));
    w.spike().await;
    wait_for("the webhooks", Duration::from_secs(10), || (w.total_received() == 3).then_some(())).await;
    let email_record =
        || async { w.store.notifications(None, 10).await.unwrap().into_iter().find(|n| n.channel == "email").unwrap() };
    let started = Instant::now();
    while email_record().await.attempts < 1 {
        assert!(started.elapsed() < Duration::from_secs(10), "no email attempt");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The webhooks' deliveries recorded as delivered too: one whose answer
    // came but was not yet recorded when its process stopped is still
    // `pending`, and the next lease holder sends it again (README,
    // "Delivery"; seen once in CI as 7 messages for 4).
    let started = Instant::now();
    loop {
        let records = w.store.notifications(None, 10).await.unwrap();
        if records.iter().filter(|n| n.channel != "email" && n.status == "delivered").count() == 3 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "webhook deliveries not recorded: {records:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The process stops, and its retries with it.
    first.abort();
    let _ = first.await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let stopped = email_record().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(email_record().await, stopped, "no retry once the process is gone");
    assert_eq!(stopped.status, "pending");

    let smtp = Smtp::start(w.smtp_port, w.mail.path()).await;
    let second = tokio::spawn(alerts_role::evaluator(w.store.clone(), &w.settings.alerts).unwrap().run(INTERVAL));
    let email = wait_for("the resumed email", Duration::from_secs(15), || w.emails().first().cloned()).await;
    assert_eq!(email["subject"], "[FIRING] success rate 50% < 95% — release 2.3.0");
    let delivered = settled_email_record(&w.store).await;
    assert_eq!((delivered.id.as_str(), delivered.status.as_str()), (stopped.id.as_str(), "delivered"));
    assert_eq!(delivered.attempts, stopped.attempts + 1);
    evaluations_later(&w.store, 2).await;
    assert_eq!(w.total_received(), 4, "nothing else sent again: {:?}", w.received());
    second.abort();
    smtp.stop().await;
}
#[tokio::test]
async fn webhook_5xx_answers_are_retried_and_4xx_answers_are_not() {
    let Some(mut w) = world(Backend::Sqlite, "alerts_webhook_retries", 20, false).await else {
        return;
    };
    let hook_url = |path: &str| {
        let ChannelSettings::Webhook(hook) = &w.settings.alerts.channels["hook"] else { unreachable!() };
        hook.url.expose().replace("/hook", path)
    };
    let (flaky, gone) = (hook_url("/flaky"), hook_url("/gone"));
    w.settings.alerts.channels.insert("flaky".into(), ChannelSettings::Webhook(webhook(flaky, false)));
    w.settings.alerts.channels.insert("gone".into(), ChannelSettings::Webhook(webhook(gone, false)));

    let flaky = alerts_cmd::test(w.store.clone(), &w.settings.alerts, "flaky").await.unwrap();
    assert_eq!((flaky.status.as_str(), flaky.attempts, flaky.last_error.as_deref()), ("delivered", 3, None));
    assert_eq!(w.hooks.on("flaky").len(), 3);

    let gone = alerts_cmd::test(w.store.clone(), &w.settings.alerts, "gone").await.unwrap();
    assert_eq!((gone.status.as_str(), gone.attempts), ("failed", 1));
    assert!(gone.last_error.as_deref().unwrap_or("").contains("404"), "{gone:?}");
    assert_eq!(w.hooks.on("gone").len(), 1);
}
/// A private CA and a server certificate it signed for 127.0.0.1 (made by
/// openssl): (CA certificate, server certificate, server key).
fn private_ca(dir: &Path) -> (String, String, String) {
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let openssl = |args: &[&str]| {
        let status = std::process::Command::new("openssl")
            .args(args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl {args:?}");
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let (ca, ca_key, cert, key, csr) =
        (path("ca.pem"), path("ca.key"), path("cert.pem"), path("key.pem"), path("server.csr"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
    ]);
    openssl(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", &key, "-out", &csr]);
    let ext = path("server.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "1",
        "-out",
        &cert,
        "-extfile",
        &ext,
    ]);
    (ca, cert, key)
}
#[tokio::test]
async fn email_goes_out_over_starttls_and_implicit_tls_and_an_untrusted_certificate_is_refused() {
    let Some(w) = world(Backend::Sqlite, "alerts_smtp_tls", 20, false).await else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(certs.path());
    let mut settings = w.settings.alerts.clone();
    settings.retry = RetrySettings { initial_delay_ms: 50, max_delay_ms: 50, max_attempts: 2 };
    let cases = [
        ("starttls", SmtpSecurity::StartTls, ["--tlscert", cert.as_str(), "--tlskey", key.as_str()]),
        ("tls", SmtpSecurity::Tls, ["--smtpscert", cert.as_str(), "--smtpskey", key.as_str()]),
    ];
    for (name, security, flags) in cases {
        let port = free_port();
        let mail = tempfile::tempdir().unwrap();
        let smtp = Smtp::start_with(port, mail.path(), &flags).await;
        let channel = |trusted: bool| email_channel(port, security, trusted.then(|| PathBuf::from(&ca)));
        settings.channels.insert(name.to_string(), channel(true));
        let record = alerts_cmd::test(w.store.clone(), &settings, name).await.unwrap();
        assert_eq!((record.status.as_str(), record.attempts), ("delivered", 1), "{name}: {record:?}");
        let received = emails(mail.path());
        assert_eq!(received.len(), 1, "{name}");
        assert!(received[0]["subject"].as_str().unwrap().starts_with("[TEST] "), "{name}: {received:?}");

        // Without the certificate trusted, the connection is refused.
        settings.channels.insert(name.to_string(), channel(false));
        let refused = alerts_cmd::test(w.store.clone(), &settings, name).await.unwrap();
        assert_eq!(refused.status, "failed", "{name}: {refused:?}");
        assert_eq!(emails(mail.path()).len(), 1, "{name}: nothing more delivered");
        smtp.stop().await;
    }
}
