//! Login negotiation on a hostile byte stream: every PDU the framing finds
//! is fed to the login until it ends. Never panics; a refusal always carries
//! a non-zero status and a success a TSIH.

#![no_main]

use std::time::{Duration, Instant};

use dls::iscsi::chap::Credentials;
use dls::iscsi::frame::{self, Digests, Frame, Pdu};
use dls::iscsi::login::{Login, Step, TargetEntry, LOGIN_MAX_DATA};
use dls::iscsi::negotiate::Limits;
use libfuzzer_sys::fuzz_target;

fn targets() -> Vec<TargetEntry> {
    vec![
        TargetEntry {
            iqn: "iqn.2026-01.example:disk0".into(),
            chap: None,
            mutual_chap: None,
            initiators: vec![],
        },
        TargetEntry {
            iqn: "iqn.2026-01.example:secure".into(),
            chap: Some(Credentials {
                user: "alice".into(),
                secret: b"twelve-bytes!".to_vec(),
            }),
            mutual_chap: Some(Credentials {
                user: "target".into(),
                secret: b"target-secret".to_vec(),
            }),
            initiators: vec!["iqn.2026-01.example:init".into()],
        },
    ]
}

fuzz_target!(|bytes: &[u8]| {
    let targets = targets();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut login = Login::new(Limits::default(), 1, [7; 17], deadline);
    let mut rest = bytes;
    while let Ok(Frame::Complete(layout)) = frame::frame(rest, Digests::default(), LOGIN_MAX_DATA) {
        let Ok((pdu, used)) = Pdu::parse(rest, Digests::default(), LOGIN_MAX_DATA) else {
            return;
        };
        rest = rest.get(used.max(layout.total())..).unwrap_or_default();
        match login.handle(&pdu, &targets) {
            Step::Continue(next, response) => {
                assert_eq!(response.header.status_class, 0);
                let _ = response.encode();
                login = *next;
            }
            Step::FullFeature(est, response) => {
                assert_eq!(response.header.tsih, 1);
                assert!(est.params.initiator_mrdsl >= 512);
                return;
            }
            Step::Refused(response, _) => {
                assert_ne!(response.header.status_class, 0);
                return;
            }
        }
    }
});
