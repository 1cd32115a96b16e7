//! The batch parser of `POST /v1/events` on arbitrary bytes: it must answer
//! (a parsed batch or an error), never panic, and never accept an event the
//! contract forbids.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(batch) = synchealth_schema::parse_batch_with_limit(data, 5000) {
        for (_, event) in &batch.events {
            assert!((synchealth_schema::MIN_SAMPLE_RATE..=1.0).contains(&event.sample_rate));
        }
    }
});
