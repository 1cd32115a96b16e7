//! Conflicts and errors ([`synchealth_store::Signals`]) against brute force
//! on both stores: sample weights, conflicts beyond their details
//! (unclassified), an entity named twice in one attempt, filters, an event
//! sent twice, error messages that differ only in their ids, and the limits
//! on entities and groups.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use synchealth_schema::{error_fingerprint, ConflictResolution, StoredEvent};
use synchealth_store::signals::{ConflictAggregate, ErrorAggregate};
use synchealth_store::{Filters, Query, SharedStore};
use uuid::Uuid;

use crate::helpers::{fixture_base_ms, insert_all, project, query, rfc3339, stamp, HOUR_MS};

on_both_stores!(
    conflicts_by_time_kind_resolution_and_entity_match_a_brute_force_count,
    errors_by_kind_and_fingerprint_match_a_brute_force_count,
    queue_lag_is_each_devices_latest_and_matches_a_brute_force_count
);

const ENTITIES: [&str; 5] = ["todo", "list", "comment", "attachment", "tag"];
const KINDS: [&str; 3] = ["update_update", "update_delete", "insert_insert"];
const RESOLUTIONS: [&str; 4] = ["last_write_wins", "crdt_merge", "server_wins", "unresolved"];
const STEP: u32 = 1800;

/// About 600 events over six hours from 12 devices.
fn events(p: &synchealth_schema::ProjectName, base: i64) -> Vec<StoredEvent> {
    let mut rng = StdRng::seed_from_u64(19);
    (0..600)
        .map(|i| {
            let occurred = base + rng.gen_range(0..6 * HOUR_MS);
            let success = rng.gen_bool(0.7);
            let mut details = Vec::new();
            if rng.gen_bool(0.3) {
                for _ in 0..rng.gen_range(1..4) {
                    details.push(json!({
                        // Skewed, so that entities have distinct totals.
                        "entity": ENTITIES[rng.gen_range(0..ENTITIES.len()).min(rng.gen_range(0..ENTITIES.len()))],
                        "kind": KINDS[rng.gen_range(0..KINDS.len())],
                        "resolution": RESOLUTIONS[rng.gen_range(0..RESOLUTIONS.len())],
                        "count": rng.gen_range(1..5),
                    }));
                }
            }
            // Tags conflict once in many attempts: the most attempts, few conflicts.
            if i % 4 == 0 {
                details.push(json!({"entity": "tag", "kind": "other", "resolution": "custom", "count": 1}));
            }
            let version = ["2.0.0", "2.1.0", "2.2.0"][i % 3];
            let os = ["ios", "android"][i % 2];
            let sample_rate = [1.0, 0.5, 0.25][i % 3 / 2 + i % 2];
            let sum: u64 = details.iter().map(|d| d["count"].as_u64().unwrap_or(0)).sum();
            let mut json = json!({
                "event_id": Uuid::new_v4().to_string(),
                "device_id": format!("dev-{}", i % 12),
                "occurred_at": rfc3339(occurred),
                "success": success,
                "duration_ms": 100 + i,
                "app_version": version,
                "os": os,
                "network": "wifi",
                "sample_rate": sample_rate,
            });
            if !details.is_empty() {
                json["conflict_details"] = json!(details);
                // Some events count conflicts their details do not classify.
                if rng.gen_bool(0.3) {
                    json["conflicts"] = json!(sum + rng.gen_range(1..3));
                }
            } else if rng.gen_bool(0.05) {
                json["conflicts"] = json!(rng.gen_range(1..4));
            }
            if !success {
                let (kind, message) = match rng.gen_range(0..4) {
                    0 => (
                        "timeout",
                        format!("timeout after {} ms for todo {}", rng.gen_range(1000..40000), Uuid::new_v4()),
                    ),
                    1 => ("server", format!("HTTP {} from 10.0.0.{}", [500, 502][i % 2], i % 9)),
                    2 => ("conflict", format!("constraint \"todos_pkey\" violated by '{}'", Uuid::new_v4())),
                    _ => ("network", String::new()),
                };
                json["error_kind"] = json!(kind);
                if !message.is_empty() {
                    json["error_message"] = json!(message);
                }
            }
            stamp(p, json, occurred + 1_000, occurred + 1_050)
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn kept<'e>(events: &'e [StoredEvent], q: &Query) -> impl Iterator<Item = &'e StoredEvent> + 'e {
    let (from, to, filters) = (q.from_ms, q.to_ms, q.filters.clone());
    events.iter().filter(move |e| {
        e.event_time_ms >= from
            && e.event_time_ms < to
            && filters.os.as_deref().is_none_or(|os| e.event.os == os)
            && filters.app_version.as_deref().is_none_or(|v| e.event.app_version == v)
    })
}

fn expected_conflicts(events: &[StoredEvent], q: &Query) -> ConflictAggregate {
    let step_ms = i64::from(STEP) * 1000;
    let mut cells: BTreeMap<(i64, Option<String>, Option<String>), f64> = BTreeMap::new();
    let mut entities: BTreeMap<String, (f64, f64, f64, BTreeSet<String>)> = BTreeMap::new();
    for e in kept(events, q) {
        let bucket = e.event_time_ms.div_euclid(step_ms) * i64::from(STEP);
        let mut classified = 0u64;
        let mut named = BTreeSet::new();
        for d in &e.event.conflict_details {
            classified += u64::from(d.count);
            let key = (bucket, Some(d.kind.as_str().to_string()), Some(d.resolution.as_str().to_string()));
            *cells.entry(key).or_default() += e.weight * f64::from(d.count);
            let entry = entities.entry(d.entity.clone()).or_default();
            entry.0 += e.weight * f64::from(d.count);
            if d.resolution.overwrites() {
                entry.1 += e.weight * f64::from(d.count);
            }
            if named.insert(d.entity.clone()) {
                entry.2 += e.weight;
            }
            entry.3.insert(e.event.device_id.clone());
        }
        let rest = u64::from(e.event.conflicts).saturating_sub(classified);
        if rest > 0 {
            *cells.entry((bucket, None, None)).or_default() += e.weight * rest as f64;
        }
    }
    let mut out = ConflictAggregate::default();
    for ((bucket, kind, resolution), conflicts) in cells {
        out.series.push(synchealth_store::signals::ConflictCell { bucket, kind, resolution, conflicts });
    }
    for (entity, (conflicts, overwrites, attempts, devices)) in entities {
        out.entities.push(synchealth_store::signals::EntityConflicts {
            entity,
            conflicts,
            overwrites,
            attempts,
            devices: devices.len() as u64,
        });
    }
    out.entities_by_attempts = out.entities.clone();
    out.entities.sort_by(|a, b| b.conflicts.total_cmp(&a.conflicts).then_with(|| a.entity.cmp(&b.entity)));
    out.entities_by_attempts.sort_by(|a, b| b.attempts.total_cmp(&a.attempts).then_with(|| a.entity.cmp(&b.entity)));
    out
}

fn assert_conflicts_match(mut got: ConflictAggregate, want: &ConflictAggregate, limit: usize, context: &str) {
    got.series.sort_by(|a, b| (a.bucket, &a.kind, &a.resolution).cmp(&(b.bucket, &b.kind, &b.resolution)));
    let keys = |c: &ConflictAggregate| {
        c.series.iter().map(|s| (s.bucket, s.kind.clone(), s.resolution.clone())).collect::<Vec<_>>()
    };
    assert_eq!(keys(&got), keys(want), "{context}: the series' cells");
    for (g, w) in got.series.iter().zip(&want.series) {
        assert!(close(g.conflicts, w.conflicts), "{context}: cell {w:?}, got {g:?}");
    }
    let names =
        |v: &[synchealth_store::signals::EntityConflicts]| v.iter().map(|e| e.entity.clone()).collect::<Vec<_>>();
    let orders = [
        ("conflicts", &got.entities, &want.entities),
        ("attempts", &got.entities_by_attempts, &want.entities_by_attempts),
    ];
    for (order, got, want) in orders {
        let want = &want[..limit.min(want.len())];
        assert_eq!(names(got), names(want), "{context}: the entities by {order}, largest first");
        for (g, w) in got.iter().zip(want) {
            assert!(
                close(g.conflicts, w.conflicts) && close(g.overwrites, w.overwrites) && close(g.attempts, w.attempts),
                "{context}: entity {w:?}, got {g:?}"
            );
            assert_eq!(g.devices, w.devices, "{context}: devices of {}", w.entity);
        }
    }
    match (got.overwrite_share(), want.overwrite_share()) {
        (Some(g), Some(w)) => assert!(close(g, w), "{context}: overwrite share {g} against {w}"),
        (g, w) => assert_eq!(g, w, "{context}: overwrite share"),
    }
}

async fn conflicts_by_time_kind_resolution_and_entity_match_a_brute_force_count(store: SharedStore) {
    let p = project("signals");
    let base = fixture_base_ms();
    let events = events(&p, base);
    insert_all(&*store, &events).await;
    // The same attempt sent again counts once.
    let again = store.insert(&events[..50]).await.expect("a resend");
    assert_eq!(again.inserted, 0, "a resent batch stores nothing new");
    assert!(
        events.iter().any(|e| e.event.conflicts as usize > e.event.conflict_details.len()),
        "fixture has unclassified conflicts"
    );

    let mut ios = query(&p, (base + HOUR_MS / 2, base + 5 * HOUR_MS));
    ios.filters = Filters { os: Some("ios".into()), ..Filters::default() };
    let cases = [
        ("the whole window", query(&p, (base, base + 6 * HOUR_MS)), 10usize),
        ("a partial window on ios", ios, 10),
        ("the top two entities", query(&p, (base, base + 6 * HOUR_MS)), 2),
    ];
    for (context, q, limit) in cases {
        let got = store.conflicts(&q, STEP, limit as u32).await.expect("conflicts");
        let want = expected_conflicts(&events, &q);
        assert!(want.total() > 0.0 && want.overwrite_share().is_some(), "{context}: the fixture has conflicts");
        assert!(want.series.iter().any(|c| c.kind.is_none()), "{context}: the fixture has unclassified conflicts");
        if limit == 2 {
            assert_ne!(want.entities[..2], want.entities_by_attempts[..2], "the two orders differ at the top");
        }
        assert_conflicts_match(got, &want, limit, context);
    }
    let empty = store.conflicts(&query(&p, (base - 2 * HOUR_MS, base)), STEP, 10).await.expect("conflicts");
    assert_eq!(empty, ConflictAggregate::default(), "a window without events has no conflicts");
    assert_eq!(empty.overwrite_share(), None);
    assert!(ConflictResolution::LastWriteWins.overwrites() && !ConflictResolution::CrdtMerge.overwrites());
}

async fn errors_by_kind_and_fingerprint_match_a_brute_force_count(store: SharedStore) {
    let p = project("signals");
    let base = fixture_base_ms();
    let events = events(&p, base);
    insert_all(&*store, &events).await;
    let again = store.insert(&events[100..150]).await.expect("a resend");
    assert_eq!(again.inserted, 0, "a resent batch stores nothing new");

    let q = query(&p, (base + HOUR_MS, base + 6 * HOUR_MS));
    let got = store.errors(&q, STEP, 3).await.expect("errors");
    let want = expected_errors(&events, &q);
    assert_errors_match(&got, &want, 3);
    // Messages differing only in ids are one group, and its example is one of them.
    let timeouts = got.groups.iter().find(|g| g.kind.as_deref() == Some("timeout")).expect("a timeout group");
    assert_eq!(timeouts.fingerprint, "timeout after ? ms for todo ?");
    assert!(timeouts.example.starts_with("timeout after "), "{:?}", timeouts.example);
    // A failure without a message groups under its kind, fingerprint empty.
    let all = store.errors(&q, STEP, 100).await.expect("errors");
    assert!(all.groups.iter().any(|g| g.kind.as_deref() == Some("network") && g.fingerprint.is_empty()));
    assert_errors_match(&all, &expected_errors(&events, &q), 100);

    let mut filtered = q.clone();
    filtered.filters = Filters { app_version: Some("2.1.0".into()), ..Filters::default() };
    let got = store.errors(&filtered, STEP, 100).await.expect("errors");
    assert_errors_match(&got, &expected_errors(&events, &filtered), 100);
    assert!(got.groups.iter().all(|g| g.releases.len() == 1 && g.releases[0].0 == "2.1.0"));
}

struct Want {
    kinds: Vec<(Option<String>, f64, u64, u64)>,
    groups: Vec<WantGroup>,
}

struct WantGroup {
    kind: Option<String>,
    fingerprint: String,
    attempts: f64,
    events: u64,
    devices: u64,
    first: i64,
    last: i64,
    examples: BTreeSet<String>,
    releases: BTreeMap<String, f64>,
    series: BTreeMap<i64, f64>,
}

fn expected_errors(events: &[StoredEvent], q: &Query) -> Want {
    let step_ms = i64::from(STEP) * 1000;
    let mut kinds: BTreeMap<Option<String>, (f64, u64, BTreeSet<String>)> = BTreeMap::new();
    let mut groups: BTreeMap<(Option<String>, String), (WantGroup, BTreeSet<String>)> = BTreeMap::new();
    for e in kept(events, q).filter(|e| !e.event.success) {
        let kind = e.event.error_kind.map(|k| k.as_str().to_string());
        let k = kinds.entry(kind.clone()).or_default();
        k.0 += e.weight;
        k.1 += 1;
        k.2.insert(e.event.device_id.clone());
        let message = e.event.error_message.clone().unwrap_or_default();
        let fingerprint = error_fingerprint(&message);
        let (g, devices) = groups.entry((kind.clone(), fingerprint.clone())).or_insert_with(|| {
            (
                WantGroup {
                    kind,
                    fingerprint,
                    attempts: 0.0,
                    events: 0,
                    devices: 0,
                    first: i64::MAX,
                    last: i64::MIN,
                    examples: BTreeSet::new(),
                    releases: BTreeMap::new(),
                    series: BTreeMap::new(),
                },
                BTreeSet::new(),
            )
        });
        g.attempts += e.weight;
        g.events += 1;
        devices.insert(e.event.device_id.clone());
        g.devices = devices.len() as u64;
        g.first = g.first.min(e.event_time_ms);
        if e.event_time_ms > g.last {
            g.examples.clear();
        }
        if e.event_time_ms >= g.last {
            g.examples.insert(message);
        }
        g.last = g.last.max(e.event_time_ms);
        *g.releases.entry(e.event.app_version.clone()).or_default() += e.weight;
        *g.series.entry(e.event_time_ms.div_euclid(step_ms) * i64::from(STEP)).or_default() += e.weight;
    }
    let mut kinds: Vec<_> = kinds.into_iter().map(|(k, (a, n, d))| (k, a, n, d.len() as u64)).collect();
    kinds.sort_by(|a, b| {
        b.1.total_cmp(&a.1).then_with(|| a.0.clone().unwrap_or_default().cmp(&b.0.clone().unwrap_or_default()))
    });
    let mut groups: Vec<WantGroup> = groups.into_values().map(|(g, _)| g).collect();
    let key = |g: &WantGroup| format!("{}\u{0}{}", g.kind.clone().unwrap_or_default(), g.fingerprint);
    groups.sort_by(|a, b| b.attempts.total_cmp(&a.attempts).then_with(|| key(a).cmp(&key(b))));
    Want { kinds, groups }
}

fn assert_errors_match(got: &ErrorAggregate, want: &Want, limit: usize) {
    let kinds: Vec<_> = got.kinds.iter().map(|k| (k.kind.clone(), k.events, k.devices)).collect();
    let want_kinds: Vec<_> = want.kinds.iter().map(|k| (k.0.clone(), k.2, k.3)).collect();
    assert_eq!(kinds, want_kinds, "kinds, largest first");
    for (g, w) in got.kinds.iter().zip(&want.kinds) {
        assert!(close(g.attempts, w.1), "attempts of {:?}: {} against {}", w.0, g.attempts, w.1);
    }
    let want_groups = &want.groups[..limit.min(want.groups.len())];
    let names: Vec<_> = got.groups.iter().map(|g| (g.kind.clone(), g.fingerprint.clone())).collect();
    let want_names: Vec<_> = want_groups.iter().map(|g| (g.kind.clone(), g.fingerprint.clone())).collect();
    assert_eq!(names, want_names, "groups, largest first");
    for (g, w) in got.groups.iter().zip(want_groups) {
        let context = format!("group {:?} {:?}", w.kind, w.fingerprint);
        assert!(close(g.attempts, w.attempts), "{context}: attempts {} against {}", g.attempts, w.attempts);
        assert_eq!(
            (g.events, g.devices, g.first_seen_ms, g.last_seen_ms),
            (w.events, w.devices, w.first, w.last),
            "{context}"
        );
        assert!(
            w.examples.contains(&g.example),
            "{context}: example {:?} is not a latest message {:?}",
            g.example,
            w.examples
        );
        let releases: BTreeMap<String, f64> = g.releases.iter().cloned().collect();
        assert_eq!(releases.keys().collect::<Vec<_>>(), w.releases.keys().collect::<Vec<_>>(), "{context}: releases");
        for (version, attempts) in &w.releases {
            assert!(close(releases[version], *attempts), "{context}: release {version}");
        }
        assert!(g.releases.windows(2).all(|p| p[0].1 >= p[1].1), "{context}: releases largest first");
        let series: Vec<i64> = g.series.iter().map(|(b, _)| *b).collect();
        assert_eq!(series, w.series.keys().copied().collect::<Vec<_>>(), "{context}: series buckets, oldest first");
        for ((_, g), w) in g.series.iter().zip(w.series.values()) {
            assert!(close(*g, *w), "{context}: series");
        }
    }
}

async fn queue_lag_is_each_devices_latest_and_matches_a_brute_force_count(store: SharedStore) {
    let p = project("lag");
    let base = fixture_base_ms();
    let mut rng = StdRng::seed_from_u64(7);
    let mut events = Vec::new();
    for i in 0..400 {
        let device = format!("dev-{}", i % 40);
        // Whole seconds, so that two events of a device tie now and then.
        let occurred = base + rng.gen_range(0..7200) * 1000;
        let depth: u32 = [0, 0, 3, 40][rng.gen_range(0..4)];
        let os = ["ios", "android"][i % 2];
        let mut json = json!({
            "event_id": Uuid::new_v4().to_string(),
            "device_id": device,
            "occurred_at": rfc3339(occurred),
            "success": true,
            "duration_ms": 100,
            "queue_depth": depth,
            "app_version": "2.0.0",
            "os": os,
            "network": "wifi",
        });
        // Most probes send the oldest change's age; some (older ones) do not.
        if depth > 0 && rng.gen_bool(0.8) {
            json["queue_oldest_at"] = json!(rfc3339(occurred - rng.gen_range(0..900) * 1000));
        }
        events.push(stamp(&p, json, occurred + 500, occurred + 600));
    }
    insert_all(&*store, &events).await;
    let mut ios = query(&p, (base + 1800 * 1000, base + 7200 * 1000));
    ios.filters = Filters { os: Some("ios".into()), ..Filters::default() };
    for q in [query(&p, (base, base + 7200 * 1000)), ios] {
        let mut latest: BTreeMap<&str, &StoredEvent> = BTreeMap::new();
        for e in kept(&events, &q) {
            let key = |e: &StoredEvent| (e.event_time_ms, e.event.event_id.hyphenated().to_string());
            let slot = latest.entry(e.event.device_id.as_str()).or_insert(e);
            if key(e) > key(slot) {
                *slot = e;
            }
        }
        let mut want: Vec<u64> =
            latest.values().filter_map(|e| e.queue_lag_ms.or((e.event.queue_depth == 0).then_some(0))).collect();
        want.sort_unstable();
        let got = store.queue_lags(&q).await.expect("queue lags");
        assert_eq!(got.devices, latest.len() as u64, "devices in the window");
        assert_eq!(got.lags_ms, want, "each device's latest known lag");
        assert!(
            want.len() < latest.len() && want.iter().any(|l| *l > 300_000),
            "the fixture has unknown and long lags"
        );
        let summary = got.summary(300_000);
        let over = want.iter().filter(|l| **l > 300_000).count() as f64 / want.len() as f64;
        assert_eq!(summary.over_threshold_share, Some(over));
        let p90 = want[((0.9 * want.len() as f64).ceil() as usize) - 1] as f64;
        assert_eq!(summary.p90, Some(p90));
    }
    let none = store.queue_lags(&query(&p, (base - HOUR_MS, base))).await.expect("queue lags");
    assert_eq!((none.devices, none.summary(300_000).p50), (0, None));
}
