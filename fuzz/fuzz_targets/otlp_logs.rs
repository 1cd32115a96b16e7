//! The OTLP logs decoder of `POST /v1/logs` (protobuf and JSON) on
//! arbitrary bytes: it must answer, never panic. The first byte chooses the
//! encoding, so one corpus covers both.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((first, body)) = data.split_first() {
        synchealth_collector::decode_and_map_for_fuzzing(body, first % 2 == 0);
    }
});
