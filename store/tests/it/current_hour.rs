//! A window ending now, whose last hour is still being written: the stores
//! may read it from what they keep per hour (each device's latest so far),
//! and must then leave out what came after the window's end, for a few
//! devices and for thousands.

use synchealth_schema::{Network, StoredEvent};
use synchealth_store::{Dimension, Filters, Grouping, Query, SharedStore};
use uuid::Uuid;

use crate::helpers::{assert_answer_matches, insert_all, now_ms, project, query, simple_event_with_id, HOUR_MS};

on_both_stores!(a_window_ending_now_counts_its_last_hour_up_to_the_end_and_no_further);

fn event(p: &synchealth_schema::ProjectName, device: &str, at: i64, queue_depth: u32, network: Network) -> StoredEvent {
    let mut e = simple_event_with_id(p, device, at, queue_depth, Uuid::new_v4());
    e.event.network = network;
    e
}

async fn a_window_ending_now_counts_its_last_hour_up_to_the_end_and_no_further(store: SharedStore) {
    let p = project("current_hour");
    // Twenty seconds ago: recent enough to be "now", and room for events after it.
    let end = now_ms() - 20_000;
    let mut events = vec![
        event(&p, "before-and-after", end - 5 * 60_000, 5, Network::Wifi),
        event(&p, "before-and-after", end + 5_000, 500, Network::Cellular),
        event(&p, "only-before", end - 1_000, 7, Network::Cellular),
        event(&p, "only-after", end - 2 * HOUR_MS, 9, Network::Wifi),
        event(&p, "only-after", end + 1_000, 900, Network::Wifi),
        event(&p, "at-the-end", end, 11, Network::Wifi),
        event(&p, "earlier", end - 3 * HOUR_MS + 1, 13, Network::Wifi),
    ];
    insert_all(store.as_ref(), &events).await;
    check(&store, &p, end, &events, "a few devices after the end").await;

    // More devices with an event after the end than are worth reading one by one.
    let many: Vec<StoredEvent> = (0..2_100)
        .flat_map(|i| {
            let device = format!("busy-{i:04}");
            let mut pair = vec![event(&p, &device, end + 2_000, 100 + i, Network::Wifi)];
            if i % 2 == 0 {
                pair.push(event(&p, &device, end - 10_000, i, Network::Cellular));
            }
            pair
        })
        .collect();
    insert_all(store.as_ref(), &many).await;
    events.extend(many);
    check(&store, &p, end, &events, "thousands after the end").await;
}

async fn check(store: &SharedStore, p: &synchealth_schema::ProjectName, end: i64, events: &[StoredEvent], what: &str) {
    let filters = [Filters::default(), Filters { network: Some(Network::Wifi), ..Filters::default() }];
    let groupings = [Grouping::Total, Grouping::Time { step_seconds: 3600 }, Grouping::By(Dimension::Network)];
    for window in [(end - 3 * HOUR_MS, end), (end - 30 * 60_000, end), (end - 26 * HOUR_MS, end)] {
        for filters in &filters {
            let q = Query { filters: filters.clone(), ..query(p, window) };
            for grouping in groupings {
                let answer = store.aggregate(&q, grouping).await.expect("aggregate");
                let context = format!("{what}, {window:?}, {filters:?}, {grouping:?}");
                assert_answer_matches(&answer, events, &q, grouping, &context);
            }
        }
    }
}
