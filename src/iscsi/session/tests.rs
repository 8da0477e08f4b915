//! Scripted full-feature-phase exchanges on a virtual clock. The harness
//! plays the engine: it encodes each PDU to bytes (with the negotiated
//! digests), parses it back, feeds it, performs the I/O the session asks
//! for on an in-memory store, and reads every transmitted PDU back from
//! its wire bytes.

use std::time::{Duration, Instant};

use super::mock::{MemTarget, BLOCK};
use super::*;
use crate::iscsi::backend::ResetEvent;
use crate::iscsi::frame::{self, encode_pdu, Pdu};
use crate::iscsi::login::{Established, SessionType, TargetEntry};
use crate::iscsi::negotiate::Params;
use crate::iscsi::pdu::{
    DataIn, DataOut, Header, LoginRequest, LogoutRequest, NopOut, R2t, Reject, ScsiCommand,
    ScsiResponse, Snack, TaskMgmtRequest, TextRequest,
};
use std::collections::HashMap;

const INITIATOR: &str = "iqn.2026-01.example:init";

struct Harness {
    s: Session,
    scsi: MemTarget,
    targets: Vec<TargetEntry>,
    t0: Instant,
    now: Instant,
    /// LUN 0's bytes.
    store: Vec<u8>,
    /// Auto-complete I/O; when false, writes and requests wait in `held`.
    auto_io: bool,
    held: Vec<IoId>,
    itt: u32,
    cmd_sn: u32,
}

fn params() -> Params {
    let mut p = Params::new();
    p.initiator_mrdsl = 8192;
    p.target_mrdsl = 65536;
    p
}

fn targets() -> Vec<TargetEntry> {
    ["iqn.2026-01.example:disk0", "iqn.2026-01.example:disk1"]
        .iter()
        .map(|iqn| TargetEntry {
            iqn: iqn.to_string(),
            chap: None,
            mutual_chap: None,
            initiators: vec![],
        })
        .collect()
}

fn start_with(p: Params, session_type: SessionType, exp_cmd_sn: u32) -> Harness {
    let est = Established {
        params: p,
        session_type,
        target: (session_type == SessionType::Normal).then_some(0),
        initiator_name: INITIATOR.into(),
        isid: [0x80, 0, 0, 0, 0, 1],
        tsih: 1,
        cid: 0,
        exp_cmd_sn,
        stat_sn: 100,
    };
    let timers = Timers {
        nop_interval: Duration::from_secs(10),
        nop_timeout: Duration::from_secs(5),
    };
    let t0 = Instant::now();
    let portals = vec!["127.0.0.1:3260".parse().unwrap()];
    let s = Session::new(est, &Limits::default(), timers, portals, t0);
    let store = (0..2048 * BLOCK as usize)
        .map(|i| (i % 251) as u8)
        .collect();
    Harness {
        s,
        scsi: MemTarget::new(&[(2048, false), (2048, true)]),
        targets: targets(),
        t0,
        now: t0,
        store,
        auto_io: true,
        held: Vec::new(),
        itt: 0x10,
        cmd_sn: exp_cmd_sn,
    }
}

fn start(p: Params) -> Harness {
    start_with(p, SessionType::Normal, 1)
}

/// A PDU as the initiator reads it off the wire.
#[derive(Debug)]
struct Got {
    h: Header,
    data: Vec<u8>,
}

fn cdb(bytes: &[u8]) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[..bytes.len()].copy_from_slice(bytes);
    c
}

fn read10(lba: u32, blocks: u16) -> [u8; 16] {
    let l = lba.to_be_bytes();
    let b = blocks.to_be_bytes();
    cdb(&[0x28, 0, l[0], l[1], l[2], l[3], 0, b[0], b[1], 0])
}

fn write10(lba: u32, blocks: u16, fua: bool) -> [u8; 16] {
    let mut c = read10(lba, blocks);
    c[0] = 0x2a;
    c[1] = if fua { 0x08 } else { 0 };
    c
}

const LUN1: u64 = 0x0001_0000_0000_0000;

impl Harness {
    fn at(&mut self, secs: u64) {
        self.now = self.t0 + Duration::from_secs(secs);
    }

    fn feed(&mut self, h: Header, data: &[u8]) -> Option<StoreWrite> {
        let mut bytes = Vec::new();
        encode_pdu(
            &mut bytes,
            h.encode(0, data.len() as u32),
            data,
            self.s.digests(),
        );
        self.feed_bytes(&bytes)
    }

    fn feed_bytes(&mut self, bytes: &[u8]) -> Option<StoreWrite> {
        let digests = self.s.digests();
        let write = match Pdu::parse(bytes, digests, self.s.max_recv_data()) {
            Ok((pdu, _)) => {
                let w = self
                    .s
                    .handle_pdu(&pdu, self.now, &mut self.scsi, &self.targets);
                if let Some(w) = &w {
                    let off = w.offset as usize;
                    let piece = &pdu.data[w.range.clone()];
                    if w.lun == 0 {
                        self.store[off..off + piece.len()].copy_from_slice(piece);
                    }
                }
                w
            }
            Err(e) => {
                self.s.handle_error(e);
                None
            }
        };
        if let Some(w) = &write {
            self.io(w.id);
        }
        self.run_io();
        write
    }

    fn io(&mut self, id: IoId) {
        if self.auto_io {
            self.s.io_complete(id, Ok(()), &mut self.scsi);
        } else {
            self.held.push(id);
        }
    }

    fn run_io(&mut self) {
        while let Some((id, req)) = self.s.poll_io() {
            if let IoRequest::Unmap { ranges, .. } = &req {
                self.scsi.unmapped.extend(ranges);
            }
            self.io(id);
        }
    }

    fn command(&mut self, cdb: [u8; 16], lun: u64, edtl: u32, read: bool, data: &[u8]) -> u32 {
        self.itt += 1;
        let c = ScsiCommand {
            final_bit: true,
            read,
            write: !read && edtl > 0,
            attr: 1,
            lun,
            itt: self.itt,
            expected_len: edtl,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: 0,
            cdb,
            ..ScsiCommand::default()
        };
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        self.feed(Header::ScsiCommand(c), data);
        self.itt
    }

    fn tur(&mut self, cmd_sn: u32, immediate: bool) -> Vec<Got> {
        self.itt += 1;
        let c = ScsiCommand {
            immediate,
            final_bit: true,
            itt: self.itt,
            cmd_sn,
            ..ScsiCommand::default()
        };
        self.feed(Header::ScsiCommand(c), &[]);
        self.drain()
    }

    /// Everything the session sends now, read back from wire bytes.
    fn drain(&mut self) -> Vec<Got> {
        let mut got = Vec::new();
        while let Some(t) = self.s.poll_transmit() {
            let payload: Vec<u8> = match &t.data {
                Payload::None => Vec::new(),
                Payload::Inline(b) => b.to_vec(),
                Payload::Store { lun, offset, len } => {
                    assert_eq!(*lun, 0);
                    self.store[*offset as usize..*offset as usize + *len as usize].to_vec()
                }
            };
            let mut wire = t.header.as_slice().to_vec();
            wire.extend_from_slice(&payload);
            wire.extend_from_slice(&[0u8; 3][..t.pad_len()]);
            if t.data_digest {
                wire.extend_from_slice(&frame::data_digest([&payload[..]]));
            }
            let (pdu, used) =
                Pdu::parse(&wire, self.s.digests(), u32::MAX).expect("well-formed PDU");
            assert_eq!(used, wire.len());
            got.push(Got {
                h: pdu.header,
                data: pdu.data.to_vec(),
            });
        }
        got
    }
}

fn response(g: &Got) -> ScsiResponse {
    match g.h {
        Header::ScsiResponse(r) => r,
        other => panic!("expected SCSI Response, got {other:?}"),
    }
}

fn sense_key(g: &Got) -> (u8, u8, u8) {
    // SenseLength, then fixed-format sense.
    (g.data[2 + 2] & 0x0f, g.data[2 + 12], g.data[2 + 13])
}

fn data_ins(got: &[Got]) -> Vec<DataIn> {
    got.iter()
        .filter_map(|g| match g.h {
            Header::DataIn(d) => Some(d),
            _ => None,
        })
        .collect()
}

#[test]
fn bc_20_1_data_in_split_by_mrdsl_and_burst() {
    let mut p = params();
    p.initiator_mrdsl = 4096;
    p.max_burst_length = 16384;
    let mut h = start(p);
    let itt = h.command(read10(0, 128), 0, 65536, true, &[]);
    let got = h.drain();
    let d = data_ins(&got);
    assert_eq!(got.len(), 16, "status rides on the last Data-In");
    let mut total = 0;
    for (n, (pdu, g)) in d.iter().zip(&got).enumerate() {
        assert_eq!(pdu.itt, itt);
        assert_eq!(pdu.data_sn, n as u32);
        assert_eq!(pdu.buffer_offset, n as u32 * 4096);
        assert_eq!(g.data.len(), 4096);
        assert_eq!(&g.data[..], &h.store[n * 4096..(n + 1) * 4096]);
        assert_eq!(pdu.final_bit, n % 4 == 3, "sequences of 16384 bytes");
        assert_eq!(pdu.has_status, n == 15);
        total += g.data.len();
    }
    assert_eq!(total, 65536);
    assert_eq!(h.s.stats().data_in_bytes, 65536);
    let last = d[15];
    assert_eq!(
        (last.status, last.underflow, last.overflow),
        (0, false, false)
    );
    assert_eq!(last.stat_sn, 100);
    assert_eq!(h.tur(h.cmd_sn, false).len(), 1);
}

#[test]
fn bc_20_2_odd_mrdsl_is_honoured() {
    let mut p = params();
    p.initiator_mrdsl = 16_777_215;
    p.max_burst_length = 16_777_215;
    let mut h = start(p);
    h.command(read10(0, 2048), 0, 1 << 20, true, &[]);
    let got = h.drain();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data.len(), 1 << 20);
    let mut p = params();
    p.initiator_mrdsl = 1000;
    let mut h = start(p);
    h.command(read10(0, 4), 0, 2048, true, &[]);
    let lens: Vec<usize> = h.drain().iter().map(|g| g.data.len()).collect();
    assert_eq!(lens, vec![1000, 1000, 48]);
}

fn write_params() -> Params {
    let mut p = params();
    p.initiator_mrdsl = 4096;
    p.max_burst_length = 16384;
    p.first_burst_length = 8192;
    p.immediate_data = true;
    p.initial_r2t = true;
    p
}

#[test]
fn bc_20_3_read_only_lun_discards_immediate_data() {
    let mut h = start(write_params());
    h.itt += 1;
    let c = ScsiCommand {
        final_bit: true,
        write: true,
        lun: LUN1,
        itt: h.itt,
        expected_len: 8192,
        cmd_sn: 1,
        cdb: write10(0, 16, false),
        ..ScsiCommand::default()
    };
    let w = h.feed(Header::ScsiCommand(c), &[0xee; 4096]);
    assert_eq!(w, None, "nothing written");
    let got = h.drain();
    assert_eq!(got.len(), 1, "no R2T: {got:?}");
    let r = response(&got[0]);
    assert_eq!(r.status, status::CHECK_CONDITION);
    assert_eq!(sense_key(&got[0]), (0x07, 0x27, 0x00));
    assert!(r.underflow);
    assert_eq!(r.residual, 8192);
}

/// A Data-Out numbered like an initiator numbers them: DataSN counts from 0
/// within each sequence (per TTT) of each task.
fn data_out(itt: u32, ttt: u32, offset: u32, final_bit: bool) -> Header {
    thread_local! {
        static NEXT_SN: std::cell::RefCell<HashMap<(u32, u32), u32>> = Default::default();
    }
    let data_sn = NEXT_SN.with(|m| {
        let mut m = m.borrow_mut();
        let n = m.entry((itt, ttt)).or_insert(0);
        *n += 1;
        *n - 1
    });
    Header::DataOut(DataOut {
        final_bit,
        itt,
        ttt,
        buffer_offset: offset,
        data_sn,
        ..DataOut::default()
    })
}

#[test]
fn data_sn_out_of_sequence_is_rejected_and_not_taken() {
    let mut p = write_params();
    p.initial_r2t = false;
    let mut h = start(p);
    h.itt += 1;
    let itt = h.itt;
    let c = ScsiCommand {
        final_bit: false,
        write: true,
        itt,
        expected_len: 1024,
        cmd_sn: 1,
        cdb: write10(0, 2, false),
        ..ScsiCommand::default()
    };
    h.feed(Header::ScsiCommand(c), &[]);
    let first = Header::DataOut(DataOut {
        itt,
        ttt: RESERVED_TAG,
        buffer_offset: 0,
        data_sn: 1,
        ..DataOut::default()
    });
    h.feed(first, &[0; 512]);
    let got = h.drain();
    assert!(matches!(got[0].h, Header::Reject(_)), "{got:?}");
    assert!(!got.iter().any(|g| matches!(g.h, Header::ScsiResponse(_))));
    assert_eq!(h.s.tasks_in_flight(), 1, "the write waits for its data");
    assert_eq!(h.s.close_reason(), None);
}

#[test]
fn bc_20_4_immediate_data_then_r2ts() {
    let mut p = write_params();
    p.max_outstanding_r2t = 2;
    let mut h = start(p);
    h.itt += 1;
    let itt = h.itt;
    let payload: Vec<u8> = (0..65536u32).map(|i| (i * 7) as u8).collect();
    let c = ScsiCommand {
        final_bit: true,
        write: true,
        itt,
        expected_len: 65536,
        cmd_sn: 1,
        cdb: write10(8, 128, false),
        ..ScsiCommand::default()
    };
    let w = h.feed(Header::ScsiCommand(c), &payload[..4096]).unwrap();
    assert_eq!((w.offset, w.range.clone()), (8 * BLOCK, 0..4096));
    let mut got = h.drain();
    let mut solicited = 4096;
    while !got.is_empty() {
        let mut next = Vec::new();
        let r2ts: Vec<R2t> = got
            .iter()
            .filter_map(|g| match g.h {
                Header::R2t(r) => Some(r),
                _ => None,
            })
            .collect();
        assert!(r2ts.len() <= 2, "MaxOutstandingR2T");
        for r in r2ts {
            assert!(r.desired_len <= 16384);
            assert_eq!(r.buffer_offset, solicited);
            solicited += r.desired_len;
            // Data-Out PDUs of at most our MRDSL (65536), 4096 here.
            let mut off = r.buffer_offset;
            while off < r.buffer_offset + r.desired_len {
                let end = (off + 4096).min(r.buffer_offset + r.desired_len);
                let fin = end == r.buffer_offset + r.desired_len;
                h.feed(
                    data_out(itt, r.ttt, off, fin),
                    &payload[off as usize..end as usize],
                );
                off = end;
            }
            next.extend(h.drain());
        }
        if let Some(last) = got.iter().find(|g| matches!(g.h, Header::ScsiResponse(_))) {
            assert_eq!(response(last).status, 0);
            assert_eq!(response(last).exp_data_sn, 4, "four R2Ts");
            break;
        }
        got = next;
    }
    assert_eq!(solicited, 65536);
    assert_eq!(&h.store[8 * 512..8 * 512 + 65536], &payload[..]);
}

#[test]
fn unsolicited_data_out_before_r2ts() {
    let mut p = write_params();
    p.initial_r2t = false;
    let mut h = start(p);
    h.itt += 1;
    let itt = h.itt;
    let c = ScsiCommand {
        final_bit: false,
        write: true,
        itt,
        expected_len: 16384,
        cmd_sn: 1,
        cdb: write10(0, 32, true),
        ..ScsiCommand::default()
    };
    assert!(h.feed(Header::ScsiCommand(c), &[1; 2048]).is_some());
    assert!(
        h.drain().is_empty(),
        "no R2T while unsolicited data may come"
    );
    assert!(h
        .feed(data_out(itt, RESERVED_TAG, 2048, true), &[2; 2048])
        .is_some());
    let got = h.drain();
    let Header::R2t(r) = got[0].h else {
        panic!("{got:?}")
    };
    assert_eq!((r.buffer_offset, r.desired_len, r.r2t_sn), (4096, 12288, 0));
    // Unsolicited data after F=1 breaks the protocol.
    h.feed(data_out(itt, RESERVED_TAG, 4096, true), &[3; 16]);
    assert!(matches!(
        h.drain()[0].h,
        Header::Reject(Reject {
            reason: RejectReason::ProtocolError,
            ..
        })
    ));
    h.feed(data_out(itt, r.ttt, 4096, true), &[3; 12288]);
    let got = h.drain();
    assert_eq!(response(&got[0]).status, 0, "FUA: flushed, then GOOD");
    assert_eq!(
        &h.store[2040..2056],
        &[1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2]
    );
}

#[test]
fn failed_write_is_never_good() {
    let mut h = start(write_params());
    h.auto_io = false;
    h.command(write10(0, 8, false), 0, 4096, false, &[9; 4096]);
    assert!(h.drain().is_empty(), "status waits for the write");
    let id = h.held.pop().unwrap();
    h.s.io_complete(id, Err(std::io::ErrorKind::Other), &mut h.scsi);
    let got = h.drain();
    assert_eq!(sense_key(&got[0]), (0x03, 0x0c, 0x00));
}

#[test]
fn bc_21_2_data_digest_over_data_and_pad() {
    let mut p = params();
    p.digests = Digests {
        header: true,
        data: true,
    };
    let mut h = start(p);
    let mut inquiry = cdb(&[0x12, 0, 0, 0, 36, 0]);
    h.command(inquiry, 0, 36, true, &[]);
    let got = h.drain();
    assert_eq!(got[0].data.len(), 36);
    inquiry[4] = 37;
    h.command(inquiry, 0, 37, true, &[]);
    // The harness re-parses the wire bytes with digests on: a digest over
    // the wrong bytes would fail there.
    let got = h.drain();
    assert_eq!(got[0].data.len(), 37);
}

#[test]
fn bc_21_2_corrupt_header_digest_drops_connection() {
    let mut p = params();
    p.digests = Digests {
        header: true,
        data: false,
    };
    let mut h = start(p);
    let c = ScsiCommand {
        final_bit: true,
        itt: 5,
        cmd_sn: 1,
        ..ScsiCommand::default()
    };
    let mut bytes = Vec::new();
    encode_pdu(
        &mut bytes,
        Header::ScsiCommand(c).encode(0, 0),
        &[],
        h.s.digests(),
    );
    bytes[49] ^= 0xff;
    h.feed_bytes(&bytes);
    assert_eq!(h.scsi.executed, 0);
    assert_eq!(h.s.close_reason(), Some(CloseReason::DigestError));
    assert!(h.drain().is_empty());
}

#[test]
fn oversized_data_segment_is_rejected_and_closes() {
    let mut h = start(params());
    let nop = NopOut {
        immediate: true,
        itt: 1,
        ttt: RESERVED_TAG,
        ..NopOut::default()
    };
    h.feed(Header::NopOut(nop), &vec![0; 65537]);
    let got = h.drain();
    assert!(matches!(
        got[0].h,
        Header::Reject(Reject {
            reason: RejectReason::ProtocolError,
            ..
        })
    ));
    assert_eq!(got[0].data.len(), BHS_LEN);
    assert_eq!(h.s.close_reason(), Some(CloseReason::ProtocolError));
}

#[test]
fn bc_22_a_initiator_ping_is_echoed() {
    let mut h = start(params());
    let nop = NopOut {
        immediate: true,
        itt: 0x10,
        ttt: RESERVED_TAG,
        cmd_sn: 1,
        ..NopOut::default()
    };
    h.feed(Header::NopOut(nop), b"0123456789abcdef");
    let got = h.drain();
    let Header::NopIn(n) = got[0].h else { panic!() };
    assert_eq!(
        (n.itt, n.ttt, n.lun, n.stat_sn),
        (0x10, RESERVED_TAG, 0, 100)
    );
    assert_eq!(got[0].data, b"0123456789abcdef");
    assert_eq!(response(&h.tur(1, false)[0]).stat_sn, 101);
}

#[test]
fn bc_22_b_target_keepalive_answered_silently() {
    let mut h = start(params());
    assert_eq!(h.s.poll_timeout(), Some(h.t0 + Duration::from_secs(10)));
    h.at(10);
    h.s.handle_timeout(h.now);
    let got = h.drain();
    let Header::NopIn(n) = got[0].h else { panic!() };
    assert_eq!(n.itt, RESERVED_TAG);
    assert_ne!(
        n.ttt, RESERVED_TAG,
        "a ping that wants an answer has a valid TTT"
    );
    assert_eq!(n.stat_sn, 100);
    h.at(12);
    let reply = NopOut {
        immediate: true,
        itt: RESERVED_TAG,
        ttt: n.ttt,
        cmd_sn: 1,
        ..NopOut::default()
    };
    h.feed(Header::NopOut(reply), &[]);
    assert!(h.drain().is_empty(), "no PDU back, no Reject");
    h.at(16);
    h.s.handle_timeout(h.now);
    assert_eq!(h.s.close_reason(), None);
    assert_eq!(
        response(&h.tur(1, false)[0]).stat_sn,
        100,
        "StatSN not advanced by the ping"
    );
}

#[test]
fn bc_22_c_dead_initiator_is_dropped_after_timeout() {
    let mut h = start(params());
    h.at(10);
    h.s.handle_timeout(h.now);
    h.drain();
    assert_eq!(h.s.poll_timeout(), Some(h.t0 + Duration::from_secs(15)));
    h.at(14);
    h.s.handle_timeout(h.now);
    assert_eq!(h.s.close_reason(), None);
    h.at(15);
    h.s.handle_timeout(h.now);
    assert_eq!(h.s.close_reason(), Some(CloseReason::NopTimeout));
    assert_eq!(h.s.poll_timeout(), None);
}

#[test]
fn bc_22_d_nop_out_without_tags_gets_nothing() {
    let mut h = start(params());
    let nop = NopOut {
        immediate: true,
        itt: RESERVED_TAG,
        ttt: RESERVED_TAG,
        cmd_sn: 1,
        ..NopOut::default()
    };
    h.feed(Header::NopOut(nop), &[]);
    assert!(h.drain().is_empty());
    assert_eq!(response(&h.tur(1, false)[0]).stat_sn, 100);
}

fn window(g: &Got) -> (u32, u32) {
    let r = response(g);
    (r.exp_cmd_sn, r.max_cmd_sn)
}

#[test]
fn bc_23_cmdsn_window() {
    let mut h = start(params());
    let (e, m) = (1u32, 128u32);
    assert!(h.tur(m + 1, false).is_empty(), "beyond MaxCmdSN");
    let got = h.tur(e, false);
    assert_eq!(response(&got[0]).status, 0);
    assert_eq!(window(&got[0]), (2, 129));
    assert!(h.tur(e, false).is_empty(), "stale");
    assert!(h.tur(e.wrapping_sub(1), false).is_empty(), "stale");
    let got = h.tur(2, true);
    assert_eq!(window(&got[0]), (2, 129), "immediate: CmdSN not consumed");
    assert_eq!(response(&h.tur(2, false)[0]).status, 0);
    assert_eq!(h.scsi.executed, 3);
    assert_eq!(h.s.stats().out_of_window, 3);
    assert_eq!(h.s.close_reason(), None);
}

#[test]
fn bc_23_cmdsn_window_wraps() {
    let mut h = start_with(params(), SessionType::Normal, 0xffff_fff0);
    for i in 0..32u32 {
        let sn = 0xffff_fff0u32.wrapping_add(i);
        let got = h.tur(sn, false);
        assert_eq!(response(&got[0]).status, 0, "CmdSN {sn:#x}");
        let (exp, max) = window(&got[0]);
        assert_eq!(exp, sn.wrapping_add(1));
        assert!(
            !serial::lt(max, exp.wrapping_sub(1)),
            "MaxCmdSN >= ExpCmdSN - 1"
        );
    }
    assert!(
        h.tur(0xffff_fff0, false).is_empty(),
        "stale across the wrap"
    );
}

#[test]
fn queue_depth_128_and_closed_window() {
    let mut h = start(params());
    h.auto_io = false;
    for _ in 0..128 {
        h.command(cdb(&[0x35]), 0, 0, false, &[]);
    }
    assert_eq!(h.s.tasks_in_flight(), 128);
    assert_eq!(h.s.backlog(), 0);
    assert_eq!(h.held.len(), 128);
    // Window closed: CmdSN 129 is beyond MaxCmdSN 128.
    assert!(h.tur(129, false).is_empty());
    // An immediate command past a full queue gets TASK SET FULL.
    assert_eq!(response(&h.tur(129, true)[0]).status, status::TASK_SET_FULL);
    for id in std::mem::take(&mut h.held) {
        h.s.io_complete(id, Ok(()), &mut h.scsi);
    }
    let got = h.drain();
    assert_eq!(got.len(), 128);
    let (exp, max) = window(got.last().unwrap());
    assert_eq!((exp, max), (129, 129 + 127));
    assert_eq!(response(&h.tur(129, false)[0]).status, 0);
}

fn report_luns(alloc: u32) -> [u8; 16] {
    let a = alloc.to_be_bytes();
    cdb(&[0xa0, 0, 0, 0, 0, 0, a[0], a[1], a[2], a[3], 0, 0])
}

#[test]
fn bc_19_report_luns_residuals() {
    let mut h = start(params());
    h.scsi.luns.truncate(1);
    h.command(report_luns(512), 0, 512, true, &[]);
    let got = h.drain();
    let d = data_ins(&got)[0];
    assert_eq!(
        got[0].data,
        [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    assert!(d.has_status && d.underflow && !d.overflow);
    assert_eq!(d.residual, 496);

    h.command(report_luns(16), 0, 16, true, &[]);
    let d = data_ins(&h.drain())[0];
    assert!(!d.underflow && !d.overflow);
    assert_eq!(d.residual, 0);

    h.command(report_luns(8), 0, 8, true, &[]);
    assert_eq!(sense_key(&h.drain()[0]), (0x05, 0x24, 0x00));

    h.command(report_luns(512), 0, 256, true, &[]);
    let d = data_ins(&h.drain())[0];
    assert!(d.underflow);
    assert_eq!(d.residual, 240);

    // Two LUNs, EDTL 16 with alloc 24: 16 bytes sent, 8 more in overflow.
    h.scsi.luns.push((8, false));
    h.command(report_luns(24), 0, 16, true, &[]);
    let got = h.drain();
    assert_eq!(got[0].data.len(), 16);
    assert_eq!(&got[0].data[..4], &[0, 0, 0, 16]);
    let d = data_ins(&got)[0];
    assert!(d.overflow && !d.underflow);
    assert_eq!(d.residual, 8);
}

#[test]
fn sense_after_data_comes_in_a_scsi_response() {
    let mut h = start(params());
    let itt = h.command(cdb(&[0xf0]), 0, 8, true, &[]);
    let got = h.drain();
    assert_eq!(got.len(), 2);
    let d = data_ins(&got)[0];
    assert!(d.final_bit && !d.has_status);
    let r = response(&got[1]);
    assert_eq!(
        (r.itt, r.status, r.exp_data_sn),
        (itt, status::CHECK_CONDITION, 1)
    );
    assert_eq!(sense_key(&got[1]), (0x03, 0x11, 0x00));
}

#[test]
fn reads_interleave_round_robin() {
    let mut p = params();
    p.initiator_mrdsl = 512;
    let mut h = start(p);
    let a = h.command(read10(0, 2), 0, 1024, true, &[]);
    let b = h.command(read10(2, 2), 0, 1024, true, &[]);
    let order: Vec<u32> = data_ins(&h.drain()).iter().map(|d| d.itt).collect();
    assert_eq!(order, vec![a, b, a, b]);
}

#[test]
fn unmap_parameter_list_goes_through_memory() {
    let mut h = start(write_params());
    let mut list = vec![0, 22, 0, 16, 0, 0, 0, 0];
    list.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 0]);
    h.command(
        cdb(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0]),
        0,
        24,
        false,
        &list,
    );
    assert_eq!(response(&h.drain()[0]).status, 0);
    assert_eq!(h.scsi.unmapped, vec![(4 * BLOCK, 2 * BLOCK)]);
}

fn tmf(h: &mut Harness, function: u8, lun: u64, referenced_tag: u32) -> u8 {
    h.itt += 1;
    let t = TaskMgmtRequest {
        immediate: true,
        function,
        lun,
        itt: h.itt,
        referenced_tag,
        cmd_sn: h.cmd_sn,
        ref_cmd_sn: h.cmd_sn.wrapping_sub(1),
        ..TaskMgmtRequest::default()
    };
    h.feed(Header::TaskMgmtRequest(t), &[]);
    let got = h.drain();
    let Some(Header::TaskMgmtResponse(r)) = got.last().map(|g| g.h) else {
        panic!("{got:?}")
    };
    r.response
}

#[test]
fn task_management() {
    let mut h = start(params());
    h.auto_io = false;
    let itt = h.command(cdb(&[0x35]), 0, 0, false, &[]);
    assert_eq!(tmf(&mut h, 1, 0, itt), 0, "ABORT TASK of a live task");
    let id = h.held.pop().unwrap();
    h.s.io_complete(id, Ok(()), &mut h.scsi);
    assert!(h.drain().is_empty(), "no status for an aborted task");
    // RefCmdSN below ExpCmdSN: that command already arrived and finished.
    assert_eq!(
        tmf(&mut h, 1, 0, 0x7777),
        1,
        "finished task: does not exist"
    );
    h.command(cdb(&[0x35]), 0, 0, false, &[]);
    h.command(cdb(&[0x35]), LUN1, 0, false, &[]);
    assert_eq!(tmf(&mut h, 5, 0, 0), 0, "LUN RESET");
    assert_eq!(h.s.tasks_in_flight(), 1);
    assert_eq!(h.scsi.resets, vec![ResetEvent::Lun(0)]);
    assert_eq!(tmf(&mut h, 5, 0x0007_0000_0000_0000, 0), 2, "no such LUN");
    assert_eq!(tmf(&mut h, 6, 0, 0), 0, "TARGET WARM RESET");
    assert_eq!(h.s.tasks_in_flight(), 0);
    assert_eq!(tmf(&mut h, 3, 0, 0), 5, "CLEAR ACA: not supported");
    assert_eq!(tmf(&mut h, 7, 0, 0), 5, "TARGET COLD RESET: not supported");
    assert_eq!(tmf(&mut h, 8, 0, 0), 4, "TASK REASSIGN needs ERL 2");
    assert_eq!(tmf(&mut h, 0x33, 0, 0), 5);
}

#[test]
fn abort_task_of_unknown_old_tag() {
    let mut h = start_with(params(), SessionType::Normal, 1000);
    h.itt += 1;
    let t = TaskMgmtRequest {
        immediate: true,
        function: 1,
        itt: h.itt,
        referenced_tag: 0x4242,
        cmd_sn: 1000,
        ref_cmd_sn: 10,
        ..TaskMgmtRequest::default()
    };
    h.feed(Header::TaskMgmtRequest(t), &[]);
    let Header::TaskMgmtResponse(r) = h.drain()[0].h else {
        panic!()
    };
    assert_eq!(r.response, 1, "task does not exist");
}

fn text(h: &mut Harness, ttt: u32, data: &[u8]) -> Vec<Got> {
    let t = TextRequest {
        immediate: true,
        final_bit: true,
        itt: 0x99,
        ttt,
        cmd_sn: h.cmd_sn,
        ..TextRequest::default()
    };
    h.feed(Header::TextRequest(t), data);
    h.drain()
}

#[test]
fn bc_21_1_send_targets_in_discovery() {
    let mut h = start_with(params(), SessionType::Discovery, 1);
    let got = text(&mut h, RESERVED_TAG, b"SendTargets=All\0");
    let Header::TextResponse(r) = got[0].h else {
        panic!()
    };
    assert!(r.final_bit && !r.cont);
    assert_eq!(r.ttt, RESERVED_TAG);
    let body = String::from_utf8(got[0].data.clone()).unwrap();
    assert_eq!(
        body,
        "TargetName=iqn.2026-01.example:disk0\0TargetAddress=127.0.0.1:3260,1\0\
         TargetName=iqn.2026-01.example:disk1\0TargetAddress=127.0.0.1:3260,1\0"
    );
}

#[test]
fn long_text_response_continues_by_ttt() {
    let mut p = params();
    p.initiator_mrdsl = 512;
    let mut h = start_with(p, SessionType::Discovery, 1);
    h.targets = (0..40)
        .map(|i| TargetEntry {
            iqn: format!("iqn.2026-01.example:disk{i}"),
            chap: None,
            mutual_chap: None,
            initiators: vec![],
        })
        .collect();
    let mut got = text(&mut h, RESERVED_TAG, b"SendTargets=All\0");
    let mut body = Vec::new();
    loop {
        let Header::TextResponse(r) = got[0].h else {
            panic!()
        };
        assert!(got[0].data.len() <= 512);
        body.extend_from_slice(&got[0].data);
        if r.final_bit {
            break;
        }
        assert!(r.cont);
        got = text(&mut h, r.ttt, &[]);
    }
    let names = body
        .split(|&b| b == 0)
        .filter(|s| s.starts_with(b"TargetName="))
        .count();
    assert_eq!(names, 40);
    assert!(matches!(text(&mut h, 0x5555, &[])[0].h, Header::Reject(_)));
}

#[test]
fn unknown_text_keys_and_split_request() {
    let mut h = start(params());
    let got = text(&mut h, RESERVED_TAG, b"X-private=1\0");
    assert_eq!(got[0].data, b"X-private=NotUnderstood\0");
    // A request split with C=1 is acknowledged, then joined.
    let t = TextRequest {
        immediate: true,
        cont: true,
        itt: 0x99,
        ttt: RESERVED_TAG,
        ..TextRequest::default()
    };
    h.feed(Header::TextRequest(t), b"SendTar");
    let got = h.drain();
    let Header::TextResponse(r) = got[0].h else {
        panic!()
    };
    assert!(got[0].data.is_empty());
    let got = text(&mut h, r.ttt, b"gets=\0");
    assert_eq!(
        got[0].data,
        b"TargetName=iqn.2026-01.example:disk0\0TargetAddress=127.0.0.1:3260,1\0"
    );
}

#[test]
fn bc_28_d_discovery_session_refuses_scsi_commands() {
    let mut h = start_with(params(), SessionType::Discovery, 1);
    let got = h.tur(1, false);
    assert!(matches!(
        got[0].h,
        Header::Reject(Reject {
            reason: RejectReason::CommandNotSupported,
            ..
        })
    ));
    assert_eq!(h.scsi.executed, 0);
}

#[test]
fn logout_closes_after_response() {
    let mut h = start(params());
    let l = LogoutRequest {
        immediate: true,
        reason: 0,
        itt: 0x77,
        cmd_sn: 1,
        ..LogoutRequest::default()
    };
    h.feed(Header::LogoutRequest(l), &[]);
    let got = h.drain();
    let Header::LogoutResponse(r) = got[0].h else {
        panic!()
    };
    assert_eq!((r.response, r.itt, r.stat_sn), (0, 0x77, 100));
    assert_eq!(h.s.close_reason(), Some(CloseReason::Logout));
    assert!(h.tur(1, false).is_empty(), "nothing after logout");
    let mut h = start(params());
    let l = LogoutRequest {
        immediate: true,
        reason: 2,
        itt: 1,
        ..LogoutRequest::default()
    };
    h.feed(Header::LogoutRequest(l), &[]);
    let Header::LogoutResponse(r) = h.drain()[0].h else {
        panic!()
    };
    assert_eq!(r.response, 2, "recovery not supported");
    assert_eq!(h.s.close_reason(), None);
}

#[test]
fn malformed_pdus_are_rejected() {
    let mut h = start(params());
    let mut unknown = [0u8; BHS_LEN];
    unknown[0] = 0x1c;
    h.feed(Header::parse(&unknown), &[]);
    h.feed(Header::Snack(Snack::default()), &[]);
    h.feed(Header::LoginRequest(LoginRequest::default()), &[]);
    h.feed(data_out(0x4444, 0x55, 0, true), &[0; 8]);
    let reasons: Vec<RejectReason> = h
        .drain()
        .iter()
        .map(|g| match g.h {
            Header::Reject(r) => r.reason,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            RejectReason::CommandNotSupported,
            RejectReason::SnackReject,
            RejectReason::ProtocolError,
            RejectReason::InvalidPduField
        ]
    );
    // Unsolicited data for a task that does not exist is dropped quietly.
    h.feed(data_out(0x4444, RESERVED_TAG, 0, true), &[0; 8]);
    assert!(h.drain().is_empty());
    // Immediate data when the command has no W bit.
    h.command(read10(0, 1), 0, 512, true, &[1; 16]);
    assert!(matches!(h.drain()[0].h, Header::Reject(_)));
    // A duplicate ITT while the first is in flight.
    h.auto_io = false;
    let c = ScsiCommand {
        final_bit: true,
        itt: 0x600,
        cmd_sn: h.cmd_sn,
        cdb: cdb(&[0x35]),
        ..ScsiCommand::default()
    };
    h.feed(Header::ScsiCommand(c), &[]);
    let c = ScsiCommand {
        immediate: true,
        ..c
    };
    h.feed(Header::ScsiCommand(c), &[]);
    assert!(matches!(
        h.drain()[0].h,
        Header::Reject(Reject {
            reason: RejectReason::TaskInProgress,
            ..
        })
    ));
}

#[test]
fn data_digest_error_is_rejected_then_closes() {
    let mut p = params();
    p.digests = Digests {
        header: false,
        data: true,
    };
    let mut h = start(p);
    let nop = NopOut {
        immediate: true,
        itt: 1,
        ttt: RESERVED_TAG,
        ..NopOut::default()
    };
    let mut bytes = Vec::new();
    encode_pdu(
        &mut bytes,
        Header::NopOut(nop).encode(0, 4),
        b"ping",
        h.s.digests(),
    );
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    h.feed_bytes(&bytes);
    let got = h.drain();
    assert!(matches!(
        got[0].h,
        Header::Reject(Reject {
            reason: RejectReason::DataDigestError,
            ..
        })
    ));
    assert_eq!(&got[0].data[..], &bytes[..BHS_LEN]);
    assert_eq!(h.s.close_reason(), Some(CloseReason::DigestError));
}

#[test]
fn unsolicited_data_after_early_failure_is_dropped() {
    let mut p = write_params();
    p.initial_r2t = false;
    let mut h = start(p);
    h.itt += 1;
    let itt = h.itt;
    let c = ScsiCommand {
        write: true,
        lun: LUN1,
        itt,
        expected_len: 8192,
        cmd_sn: 1,
        cdb: write10(0, 16, false),
        ..ScsiCommand::default()
    };
    h.feed(Header::ScsiCommand(c), &[1; 1024]);
    assert_eq!(sense_key(&h.drain()[0]), (0x07, 0x27, 0x00));
    assert_eq!(
        h.feed(data_out(itt, RESERVED_TAG, 1024, true), &[2; 1024]),
        None
    );
    assert!(h.drain().is_empty());
}

#[test]
fn send_targets_in_a_normal_session() {
    let mut h = start(params());
    let got = text(&mut h, RESERVED_TAG, b"SendTargets=All\0");
    assert_eq!(got[0].data, b"SendTargets=Reject\0");
}

/// The engine's whole call order, from the first login byte to a read:
/// login PDUs framed without digests, the Established handed to a
/// Session, then full-feature PDUs framed with the negotiated digests.
#[test]
fn login_then_read_end_to_end() {
    use crate::iscsi::login::{Login, Step, LOGIN_MAX_DATA};
    use crate::iscsi::text;

    let t0 = Instant::now();
    let limits = Limits::default();
    let login = Login::new(limits.clone(), 1, [0; 17], t0 + Duration::from_secs(15));
    let mut data = Vec::new();
    for (k, v) in [
        ("InitiatorName", INITIATOR),
        ("TargetName", "iqn.2026-01.example:disk0"),
        ("HeaderDigest", "CRC32C"),
        ("DataDigest", "CRC32C"),
        ("MaxRecvDataSegmentLength", "4096"),
    ] {
        text::encode(&mut data, k, v);
    }
    let req = LoginRequest {
        transit: true,
        csg: 1,
        nsg: 3,
        itt: 1,
        cmd_sn: 5,
        ..LoginRequest::default()
    };
    let mut bytes = Vec::new();
    encode_pdu(
        &mut bytes,
        Header::LoginRequest(req).encode(0, data.len() as u32),
        &data,
        Digests::default(),
    );
    let (pdu, _) = Pdu::parse(&bytes, Digests::default(), LOGIN_MAX_DATA).unwrap();
    let Step::FullFeature(est, response) = login.handle(&pdu, &targets()) else {
        panic!()
    };
    assert_eq!(response.header.tsih, 1);
    let timers = Timers {
        nop_interval: Duration::from_secs(5),
        nop_timeout: Duration::from_secs(5),
    };
    let portals = vec!["127.0.0.1:3260".parse().unwrap()];
    let mut s = Session::new(*est, &limits, timers, portals, t0);
    assert_eq!(
        s.digests(),
        Digests {
            header: true,
            data: true
        }
    );

    let c = ScsiCommand {
        final_bit: true,
        read: true,
        itt: 2,
        expected_len: 8192,
        cmd_sn: 5,
        cdb: read10(0, 16),
        ..ScsiCommand::default()
    };
    let mut bytes = Vec::new();
    encode_pdu(
        &mut bytes,
        Header::ScsiCommand(c).encode(0, 0),
        &[],
        s.digests(),
    );
    let (pdu, used) = Pdu::parse(&bytes, s.digests(), s.max_recv_data()).unwrap();
    assert_eq!(used, 52);
    let mut scsi = MemTarget::new(&[(2048, false)]);
    assert_eq!(s.handle_pdu(&pdu, t0, &mut scsi, &targets()), None);
    let mut offsets = Vec::new();
    while let Some(t) = s.poll_transmit() {
        let Header::DataIn(d) = Header::parse(&t.header.bhs()) else {
            panic!()
        };
        assert_eq!(t.header.as_slice().len(), 52);
        assert!(t.data_digest);
        assert_eq!(
            t.data,
            Payload::Store {
                lun: 0,
                offset: u64::from(d.buffer_offset),
                len: 4096
            }
        );
        offsets.push((d.buffer_offset, d.has_status, d.stat_sn));
    }
    assert_eq!(offsets, vec![(0, false, 1), (4096, true, 1)]);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(5)));
}

#[test]
fn data_out_of_an_aborted_write_is_discarded() {
    let mut h = start(write_params());
    let itt = h.command(write10(0, 16, false), 0, 8192, false, &[]);
    let got = h.drain();
    let Header::R2t(r) = got[0].h else {
        panic!("{got:?}")
    };
    assert_eq!(tmf(&mut h, 1, 0, itt), 0);
    assert_eq!(h.feed(data_out(itt, r.ttt, 0, false), &[0; 4096]), None);
    assert!(
        h.drain().is_empty(),
        "no Reject for data already on its way"
    );
}
