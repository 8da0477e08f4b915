//! A full-feature-phase session fed a hostile PDU stream, with a stand-in
//! SCSI layer whose answers depend on the CDB's first byte. Never panics;
//! every PDU it sends is well formed and respects the initiator's
//! MaxRecvDataSegmentLength.

#![no_main]

use std::time::{Duration, Instant};

use dls::iscsi::backend::{
    Command, IoRequest, IoResult, Outcome, Payload, ResetEvent, ScsiStatus, ScsiTarget,
};
use dls::iscsi::frame::{self, Frame, Pdu};
use dls::iscsi::login::{Established, SessionType, TargetEntry};
use dls::iscsi::negotiate::{Limits, Params};
use dls::iscsi::session::{Session, Timers};
use libfuzzer_sys::fuzz_target;

struct Stub;

impl ScsiTarget for Stub {
    fn execute(&mut self, cmd: &Command<'_>) -> Outcome {
        let len = u32::from(cmd.cdb.get(1).copied().unwrap_or(0)) * 512;
        match cmd.cdb.first().copied().unwrap_or(0) % 6 {
            0 => Outcome::status(ScsiStatus::good()),
            1 => Outcome::Done {
                data: Payload::Store {
                    lun: 0,
                    offset: 0,
                    len,
                },
                status: ScsiStatus::good(),
            },
            2 => Outcome::WriteToStore {
                lun: 0,
                offset: 0,
                len,
            },
            3 => Outcome::Receive { len },
            4 => Outcome::Io(IoRequest::Flush { lun: 0 }),
            _ => Outcome::status(ScsiStatus::check_condition(5, 0x20, 0)),
        }
    }
    fn data_received(&mut self, _: &Command<'_>, _: &[u8]) -> Outcome {
        Outcome::status(ScsiStatus::good())
    }
    fn io_done(&mut self, _: &Command<'_>, _: IoResult) -> Outcome {
        Outcome::status(ScsiStatus::good())
    }
    fn lun_exists(&self, lun: u64) -> bool {
        lun == 0
    }
    fn reset(&mut self, _: ResetEvent) {}
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, bytes)) = input.split_first() else {
        return;
    };
    let mut params = Params::new();
    params.digests.header = mode & 1 != 0;
    params.initial_r2t = mode & 2 != 0;
    params.immediate_data = mode & 4 != 0;
    params.initiator_mrdsl = 512;
    params.target_mrdsl = 8192;
    params.max_burst_length = 1024;
    params.first_burst_length = 1024;
    let session_type = if mode & 8 != 0 {
        SessionType::Discovery
    } else {
        SessionType::Normal
    };
    let est = Established {
        params,
        session_type,
        target: Some(0),
        initiator_name: "iqn.2026-01.example:init".into(),
        isid: [0; 6],
        tsih: 1,
        cid: 0,
        exp_cmd_sn: 0,
        stat_sn: 0,
    };
    let targets = vec![TargetEntry {
        iqn: "iqn.2026-01.example:disk0".into(),
        chap: None,
        mutual_chap: None,
        initiators: vec![],
    }];
    let t0 = Instant::now();
    let timers = Timers {
        nop_interval: Duration::from_secs(5),
        nop_timeout: Duration::from_secs(5),
    };
    let portals = vec!["127.0.0.1:3260".parse().unwrap()];
    let mut s = Session::new(est, &Limits::default(), timers, portals, t0);
    let mut scsi = Stub;
    let mut rest = bytes;
    let mut now = t0;
    while let Ok(Frame::Complete(layout)) = frame::frame(rest, s.digests(), s.max_recv_data()) {
        now += Duration::from_secs(1);
        match Pdu::parse(rest, s.digests(), s.max_recv_data()) {
            Ok((pdu, _)) => {
                if let Some(w) = s.handle_pdu(&pdu, now, &mut scsi, &targets) {
                    assert!(w.range.end <= pdu.data.len());
                    s.io_complete(w.id, Ok(()), &mut scsi);
                }
            }
            Err(e) => s.handle_error(e),
        }
        rest = rest.get(layout.total()..).unwrap_or_default();
        while let Some((id, _)) = s.poll_io() {
            s.io_complete(id, Ok(()), &mut scsi);
        }
        s.handle_timeout(now);
        while let Some(t) = s.poll_transmit() {
            assert!(t.data.len() <= 512);
        }
    }
});
