//! `Packet::parse` on arbitrary datagrams, and everything a parsed RRQ flows
//! into before a transfer starts: option negotiation, the OACK, the path.
//!
//! Beyond "never panics", it checks that every packet the server can encode
//! parses back to what was encoded, that a negotiated transfer only uses
//! values RFC 2348/2349/7440 allow, and that `path::resolve` never returns a
//! path that could climb out of the root. The raw input also goes through
//! the netascii conversion, whose output must decode back to the input.

#![no_main]

use std::path::Component;

use dls::engine::image::to_netascii;
use dls::tftp::negotiate::{self, Limits, Mode, MAX_BLKSIZE, MIN_BLKSIZE};
use dls::tftp::path::{self, MAX_NAME_LEN};
use dls::tftp::transfer::Transfer;
use dls::tftp::wire::{self, ErrorCode, Packet, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_resolve(data);
    check_netascii(data);
    let Ok(packet) = Packet::parse(data) else {
        return;
    };
    match &packet {
        Packet::Rrq(req) => {
            check_request_round_trip(wire::OP_RRQ, req);
            check_rrq(req, data.len() as u64);
        }
        Packet::Wrq(req) => check_request_round_trip(wire::OP_WRQ, req),
        Packet::Data { block, data } => {
            let mut buf = wire::encode_data_header(*block).to_vec();
            buf.extend_from_slice(data);
            assert_eq!(Packet::parse(&buf), Ok(packet.clone()));
        }
        Packet::Ack { block } => {
            let mut buf = Vec::new();
            wire::encode_ack(&mut buf, *block);
            assert_eq!(Packet::parse(&buf), Ok(packet.clone()));
        }
        Packet::Error { code, message } => {
            assert_eq!(ErrorCode::from_u16(code.to_u16()), *code);
            assert!(!message.contains(&0));
            let text = String::from_utf8_lossy(message);
            let mut buf = Vec::new();
            wire::encode_error(&mut buf, *code, &text);
            let Ok(Packet::Error {
                code: again,
                message: m,
            }) = Packet::parse(&buf)
            else {
                panic!("encoded ERROR does not parse: {buf:?}");
            };
            assert_eq!(again, *code);
            assert_eq!(m, text.as_bytes());
        }
        Packet::Oack { options } => {
            let Some(owned) = utf8_pairs(options) else {
                return;
            };
            let pairs: Vec<(&str, String)> =
                owned.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            let mut buf = Vec::new();
            wire::encode_oack(&mut buf, &pairs);
            assert_eq!(Packet::parse(&buf), Ok(packet.clone()));
        }
        Packet::Unknown(op) => assert!(!(wire::OP_RRQ..=wire::OP_OACK).contains(op)),
    }
});

/// A request re-encoded parses to the same request (names and values that
/// are not UTF-8 cannot go through `encode_request` and are skipped).
fn check_request_round_trip(opcode: u16, req: &Request<'_>) {
    let (Ok(mode), Some(options)) = (std::str::from_utf8(req.mode), utf8_pairs(&req.options))
    else {
        return;
    };
    let options: Vec<(&str, &str)> = options
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut buf = Vec::new();
    wire::encode_request(&mut buf, opcode, req.filename, mode, &options);
    let again = Packet::parse(&buf).expect("encoded request parses");
    let again = match again {
        Packet::Rrq(r) | Packet::Wrq(r) => r,
        other => panic!("request came back as {other:?}"),
    };
    assert_eq!(&again, req);
}

/// What the server does with an RRQ before the first DATA: mode, options,
/// OACK and the transfer it sets up.
fn check_rrq(req: &Request<'_>, size: u64) {
    let _ = Mode::parse(req.mode);
    let limits = Limits {
        max_blksize: 1468,
        max_windowsize: 64,
        ..Limits::default()
    };
    for limits in [Limits::default(), limits] {
        let n = negotiate::negotiate(req, size, &limits);
        assert!(n.blksize >= MIN_BLKSIZE);
        assert!(n.blksize <= MAX_BLKSIZE.min(limits.max_blksize));
        assert!((1..=limits.max_windowsize).contains(&n.windowsize));
        assert!(
            n.windowsize == 1
                || u32::from(n.windowsize) * u32::from(n.blksize) <= limits.max_window_bytes
        );
        assert!(n.timeout.as_secs() <= 255);

        // Each option is answered at most once, only if it was asked for,
        // and with a decimal value.
        for (i, (name, value)) in n.oack.iter().enumerate() {
            assert!(n.oack[..i].iter().all(|(k, _)| k != name), "{:?}", n.oack);
            assert!(req
                .options
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case(name.as_bytes())));
            assert!(!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()));
        }

        let mut buf = Vec::new();
        wire::encode_oack(&mut buf, &n.oack);
        let Ok(Packet::Oack { options }) = Packet::parse(&buf) else {
            panic!("encoded OACK does not parse: {buf:?}");
        };
        assert_eq!(options.len(), n.oack.len());
        for ((k, v), (k2, v2)) in options.iter().zip(&n.oack) {
            assert_eq!((*k, *v), (k2.as_bytes(), v2.as_bytes()));
        }

        let t = Transfer::new(&n, size, &limits, std::time::Instant::now());
        assert_eq!(t.blksize(), usize::from(n.blksize));
        assert!(t.poll_transmit().is_some());
    }
    check_resolve(req.filename);
}

/// `resolve` either refuses a name or returns plain components that stay
/// below the root.
fn check_resolve(name: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(p) = path::resolve(name) else {
        return;
    };
    assert!(name.len() <= MAX_NAME_LEN && !name.contains(&b'\\'));
    assert!(p.is_relative());
    assert!(p.as_os_str().len() <= name.len());
    assert!(p.components().count() > 0);
    for c in p.components() {
        let Component::Normal(c) = c else {
            panic!("{name:?} resolved to {p:?}, component {c:?}");
        };
        assert!(!c.as_bytes().contains(&b'/'));
    }
}

/// netascii (RFC 764) decodes back to the input: CR LF -> LF, CR NUL -> CR.
fn check_netascii(raw: &[u8]) {
    let out = to_netascii(raw);
    let grown = raw.iter().filter(|&&b| b == b'\n' || b == b'\r').count();
    assert_eq!(out.len(), raw.len() + grown);
    let mut back = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < out.len() {
        match (out[i], out.get(i + 1)) {
            (b'\r', Some(b'\n')) => back.push(b'\n'),
            (b'\r', Some(0)) => back.push(b'\r'),
            (b'\r', next) => panic!("bare CR before {next:?} in {out:?}"),
            (b, _) => {
                back.push(b);
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    assert_eq!(back, raw);
}

fn utf8_pairs(options: &[(&[u8], &[u8])]) -> Option<Vec<(String, String)>> {
    options
        .iter()
        .map(|(k, v)| {
            let k = std::str::from_utf8(k).ok()?;
            let v = std::str::from_utf8(v).ok()?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}
