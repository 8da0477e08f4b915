//! The PDU framing and BHS decoder on arbitrary bytes: never panics, and a
//! decoded header re-encodes to a header that decodes the same.

#![no_main]

use dls::iscsi::frame::{self, Digests, Frame, Pdu};
use dls::iscsi::pdu::{self, Header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, bytes)) = input.split_first() else {
        return;
    };
    let digests = Digests {
        header: mode & 1 != 0,
        data: mode & 2 != 0,
    };
    let max = if mode & 4 != 0 { 8192 } else { 0x00ff_ffff };
    let mut rest = bytes;
    while let Ok(Frame::Complete(layout)) = frame::frame(rest, digests, max) {
        let total = layout.total();
        if let Ok((pdu, used)) = Pdu::parse(rest, digests, max) {
            assert_eq!(used, total);
            assert!(pdu.data.len() <= max as usize);
            let again = pdu.header.encode(pdu.ahs.len(), pdu.data.len() as u32);
            assert_eq!(Header::parse(&again), pdu.header);
            assert_eq!(pdu::data_len(&again) as usize, pdu.data.len());
        }
        rest = rest.get(total..).unwrap_or_default();
    }
});
