//! The control thread's HTTP request path on arbitrary bytes: parsing must
//! never panic, must answer every complete or oversized head, and must keep
//! to its size bound.
#![no_main]

use dls::control::http::{parse_request, MAX_REQUEST};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(Some(req)) => {
            assert!(req.method.len() + req.path.len() <= data.len());
        }
        Ok(None) => assert!(data.len() < MAX_REQUEST, "an oversized head must be refused"),
        Err(resp) => assert!([400, 413, 431].contains(&resp.status), "{}", resp.status),
    }
});
