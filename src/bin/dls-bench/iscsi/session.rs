//! One bench session in full feature phase: keeps up to Q commands in
//! flight inside the target's CmdSN window (RFC 7143 §4.2.2.1), matches
//! every Data-In, R2T, SCSI Response and Reject to its task by ITT, and
//! answers the target's NOP-In pings.
//!
//! Writes honour the negotiated keys: immediate data up to the target's
//! MaxRecvDataSegmentLength and FirstBurstLength, unsolicited Data-Out when
//! InitialR2T=No, then Data-Out for each R2T (§10.7). Reads may be checked
//! byte for byte against a local copy of the LUN (`--data`).
//!
//! Not done: digests, ERL > 0 (a lost PDU fails the session), AHS, more
//! than one outstanding R2T per task.

use std::io::{self, Read, Write};
use std::time::Instant;

use mio::net::TcpStream;

use dls::iscsi::frame::{self, padded, Digests, Frame};
use dls::iscsi::pdu::{self, DataOut, Header, LogoutRequest, NopOut, ScsiCommand, RESERVED_TAG};
use dls::iscsi::serial;

use super::login::{encode_lun, Negotiated, Numbers};
use super::Stats;

/// What every session of a run does.
pub struct Plan {
    pub lun: u64,
    pub block_size: u32,
    /// LUN blocks per command.
    pub blocks_per_io: u64,
    /// Aligned command positions on the LUN.
    pub positions: u64,
    pub random: bool,
    pub write_percent: u32,
    pub queue_depth: usize,
    pub sessions: u64,
    /// What the LUN holds: writes send these bytes, reads are compared.
    pub data: Option<Vec<u8>>,
    /// Payload of writes when there is no `data`.
    pub fill: Vec<u8>,
}

impl Plan {
    fn payload(&self, lun_offset: u64, len: usize) -> &[u8] {
        match &self.data {
            Some(d) => &d[lun_offset as usize..][..len],
            None => &self.fill[..len],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// No new commands; waiting for the ones in flight.
    Draining,
    LoggingOut,
    Done,
}

struct Task {
    itt: u32,
    started: Instant,
    write: bool,
    /// Byte offset of the command on the LUN.
    offset: u64,
    received: u32,
}

pub struct Session {
    pub stream: TcpStream,
    pub phase: Phase,
    pub failed: Option<String>,
    neg: Negotiated,
    n: Numbers,
    max_recv_data: u32,
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    tx: Vec<u8>,
    tx_pos: usize,
    tasks: Vec<Option<Task>>,
    free: Vec<usize>,
    generation: u32,
    cursor: u64,
    rng: u64,
}

/// Room for two whole PDUs of the largest size we declared, so one read
/// can take a PDU and the start of the next.
fn rx_capacity(max_recv_data: u32) -> usize {
    2 * (pdu::BHS_LEN + padded(max_recv_data as usize)) + 64 * 1024
}

impl Session {
    pub fn new(
        stream: TcpStream,
        neg: Negotiated,
        n: Numbers,
        max_recv_data: u32,
        index: u64,
        plan: &Plan,
    ) -> Session {
        // Sequential sessions start spread over the LUN, one stripe each.
        let stripe = plan.positions / plan.sessions.max(1);
        Session {
            stream,
            phase: Phase::Running,
            failed: None,
            neg,
            n,
            max_recv_data,
            rx: vec![0; rx_capacity(max_recv_data)],
            rx_start: 0,
            rx_end: 0,
            tx: Vec::with_capacity(256 * 1024),
            tx_pos: 0,
            tasks: (0..plan.queue_depth).map(|_| None).collect(),
            free: (0..plan.queue_depth).rev().collect(),
            generation: 0,
            cursor: index * stripe,
            rng: 0x9E37_79B9_7F4A_7C15 ^ (index + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
        }
    }

    pub fn outstanding(&self) -> usize {
        self.tasks.len() - self.free.len()
    }

    /// Issues commands while a slot is free, the CmdSN window is open and
    /// `budget` (commands left in the whole run) allows.
    pub fn issue(&mut self, plan: &Plan, budget: &mut u64, now: Instant) {
        while self.phase == Phase::Running
            && *budget > 0
            && !serial::lt(self.n.max_cmd_sn, self.n.cmd_sn)
        {
            let Some(slot) = self.free.pop() else { return };
            *budget -= 1;
            self.generation = self.generation.wrapping_add(1);
            let itt = (self.generation << 16) | slot as u32;
            let position = self.next_position(plan);
            let write = plan.write_percent > 0
                && (self.next_random() % 100) < u64::from(plan.write_percent);
            let offset = position * u64::from(plan.block_size);
            self.send_command(plan, itt, write, position * plan.blocks_per_io);
            if write {
                self.send_unsolicited(plan, itt, offset);
            }
            self.tasks[slot] = Some(Task {
                itt,
                started: now,
                write,
                offset,
                received: 0,
            });
        }
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: fast, and every session gets its own sequence.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn next_position(&mut self, plan: &Plan) -> u64 {
        if plan.random {
            self.next_random() % plan.positions
        } else {
            let p = self.cursor % plan.positions;
            self.cursor = p + 1;
            p
        }
    }

    fn send_command(&mut self, plan: &Plan, itt: u32, write: bool, lba: u64) {
        let len = plan.block_size;
        let immediate = if write { self.immediate_len(len) } else { 0 };
        let mut cdb = [0u8; 16];
        cdb[0] = if write { 0x8a } else { 0x88 };
        cdb[2..10].copy_from_slice(&lba.to_be_bytes());
        cdb[10..14].copy_from_slice(&(plan.blocks_per_io as u32).to_be_bytes());
        let cmd = ScsiCommand {
            final_bit: !write || self.unsolicited_len(len) == immediate,
            read: !write,
            write,
            attr: 1,
            lun: encode_lun(plan.lun),
            itt,
            expected_len: len,
            cmd_sn: self.n.cmd_sn,
            exp_stat_sn: self.n.exp_stat_sn,
            cdb,
            ..Default::default()
        };
        self.n.cmd_sn = self.n.cmd_sn.wrapping_add(1);
        let header = Header::ScsiCommand(cmd);
        if write && immediate > 0 {
            let offset = (lba / plan.blocks_per_io) * u64::from(len);
            let data = plan.payload(offset, immediate as usize);
            push_pdu(&mut self.tx, header, data);
        } else {
            push_pdu(&mut self.tx, header, &[]);
        }
    }

    /// Immediate data carried by a write command (§13.11, §13.14).
    fn immediate_len(&self, len: u32) -> u32 {
        if !self.neg.immediate_data {
            return 0;
        }
        len.min(self.neg.first_burst)
            .min(self.neg.target_max_recv_data)
    }

    /// Unsolicited data in all: immediate plus, with InitialR2T=No, Data-Out
    /// up to FirstBurstLength (§13.10).
    fn unsolicited_len(&self, len: u32) -> u32 {
        if self.neg.initial_r2t {
            self.immediate_len(len)
        } else {
            len.min(self.neg.first_burst)
        }
    }

    fn send_unsolicited(&mut self, plan: &Plan, itt: u32, offset: u64) {
        let from = self.immediate_len(plan.block_size);
        let to = self.unsolicited_len(plan.block_size);
        self.send_data_out(plan, itt, RESERVED_TAG, offset, from, to);
    }

    /// Data-Out PDUs for bytes [from, to) of a write, each within the
    /// target's MaxRecvDataSegmentLength, F on the last (§11.7).
    fn send_data_out(&mut self, plan: &Plan, itt: u32, ttt: u32, offset: u64, from: u32, to: u32) {
        let mut at = from;
        let mut data_sn = 0;
        while at < to {
            let len = (to - at).min(self.neg.target_max_recv_data);
            let out = DataOut {
                final_bit: at + len == to,
                lun: encode_lun(plan.lun),
                itt,
                ttt,
                exp_stat_sn: self.n.exp_stat_sn,
                data_sn,
                buffer_offset: at,
            };
            let data = plan.payload(offset + u64::from(at), len as usize);
            push_pdu(&mut self.tx, Header::DataOut(out), data);
            at += len;
            data_sn += 1;
        }
    }

    /// Reads what the socket has, handles every whole PDU, and queues the
    /// answers. Returns when the socket would block.
    pub fn receive(&mut self, plan: &Plan, stats: &mut Stats, now: Instant) -> io::Result<()> {
        loop {
            if self.rx_end == self.rx.len() {
                self.rx.copy_within(self.rx_start..self.rx_end, 0);
                self.rx_end -= self.rx_start;
                self.rx_start = 0;
            }
            match self.stream.read(&mut self.rx[self.rx_end..]) {
                // The target closes after its Logout Response (§11.15).
                Ok(0) if self.phase == Phase::Done => return Ok(()),
                Ok(0) => return Err(io::Error::other("target closed the connection")),
                Ok(n) => self.rx_end += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            self.handle_buffered(plan, stats, now)?;
        }
    }

    fn handle_buffered(&mut self, plan: &Plan, stats: &mut Stats, now: Instant) -> io::Result<()> {
        // Taken out of `self` so the handlers can borrow the data segment
        // and change the session at once; moved back below.
        let rx = std::mem::take(&mut self.rx);
        let mut result = Ok(());
        while result.is_ok() {
            let buf = &rx[self.rx_start..self.rx_end];
            let layout = match frame::frame(buf, Digests::default(), self.max_recv_data) {
                Ok(Frame::Complete(layout)) => layout,
                Ok(Frame::Incomplete { .. }) => break,
                Err(e) => {
                    result = Err(io::Error::other(format!("unframeable PDU: {e:?}")));
                    break;
                }
            };
            let bhs = buf
                .first_chunk::<{ pdu::BHS_LEN }>()
                .expect("framed PDUs hold a BHS");
            let data = &buf[layout.data_start()..][..layout.data_len];
            result = self.handle(Header::parse(bhs), data, plan, stats, now);
            self.rx_start += layout.total();
        }
        if self.rx_start == self.rx_end {
            self.rx_start = 0;
            self.rx_end = 0;
        }
        self.rx = rx;
        result
    }

    fn handle(
        &mut self,
        header: Header,
        data: &[u8],
        plan: &Plan,
        stats: &mut Stats,
        now: Instant,
    ) -> io::Result<()> {
        match header {
            Header::DataIn(d) => {
                self.window(d.max_cmd_sn);
                let task = self.task(d.itt)?;
                if let Some(expect) = &plan.data {
                    let at = (task.offset + u64::from(d.buffer_offset)) as usize;
                    if expect.get(at..at + data.len()) != Some(data) {
                        stats.fail(format!("data mismatch at LUN byte {at}"));
                    }
                }
                task.received = task.received.saturating_add(data.len() as u32);
                if d.has_status {
                    self.n.exp_stat_sn = d.stat_sn.wrapping_add(1);
                    self.complete(d.itt, d.status, 0, plan, stats, now);
                }
            }
            Header::ScsiResponse(r) => {
                self.window(r.max_cmd_sn);
                self.n.exp_stat_sn = r.stat_sn.wrapping_add(1);
                self.complete(r.itt, r.status, r.response, plan, stats, now);
            }
            Header::R2t(r) => {
                self.window(r.max_cmd_sn);
                let task = self.task(r.itt)?;
                let offset = task.offset;
                let end = r
                    .buffer_offset
                    .saturating_add(r.desired_len)
                    .min(plan.block_size);
                self.send_data_out(plan, r.itt, r.ttt, offset, r.buffer_offset, end);
            }
            Header::NopIn(nop) => {
                self.window(nop.max_cmd_sn);
                if nop.ttt != RESERVED_TAG {
                    // A ping from the target: answer with its TTT (§11.18).
                    let out = NopOut {
                        immediate: true,
                        lun: nop.lun,
                        itt: RESERVED_TAG,
                        ttt: nop.ttt,
                        cmd_sn: self.n.cmd_sn,
                        exp_stat_sn: self.n.exp_stat_sn,
                    };
                    push_pdu(&mut self.tx, Header::NopOut(out), &[]);
                }
            }
            Header::Reject(r) => {
                self.window(r.max_cmd_sn);
                let Some(rejected) = data.first_chunk::<{ pdu::BHS_LEN }>() else {
                    return Err(io::Error::other("Reject without the rejected header"));
                };
                stats.fail(format!("Reject {:?}", r.reason));
                self.release(pdu::itt(rejected));
            }
            Header::LogoutResponse(_) if self.phase == Phase::LoggingOut => {
                self.phase = Phase::Done;
            }
            Header::AsyncMessage(_) => {}
            other => {
                return Err(io::Error::other(format!(
                    "unexpected PDU {:?}",
                    other.opcode()
                )))
            }
        }
        Ok(())
    }

    /// Takes a larger MaxCmdSN (§4.2.2.1: the window only opens this way).
    fn window(&mut self, max_cmd_sn: u32) {
        if serial::lt(self.n.max_cmd_sn, max_cmd_sn) {
            self.n.max_cmd_sn = max_cmd_sn;
        }
    }

    fn task(&mut self, itt: u32) -> io::Result<&mut Task> {
        let slot = (itt & 0xffff) as usize;
        match self.tasks.get_mut(slot) {
            Some(Some(task)) if task.itt == itt => Ok(task),
            _ => Err(io::Error::other(format!("PDU for unknown ITT {itt:#x}"))),
        }
    }

    fn release(&mut self, itt: u32) -> Option<Task> {
        let slot = (itt & 0xffff) as usize;
        match self.tasks.get(slot) {
            Some(Some(task)) if task.itt == itt => {
                self.free.push(slot);
                self.tasks[slot].take()
            }
            _ => None,
        }
    }

    fn complete(
        &mut self,
        itt: u32,
        status: u8,
        response: u8,
        plan: &Plan,
        stats: &mut Stats,
        now: Instant,
    ) {
        let Some(task) = self.release(itt) else {
            stats.fail(format!("status for unknown ITT {itt:#x}"));
            return;
        };
        if response != 0 || status != 0 {
            stats.fail(format!(
                "SCSI status {status:#x}, iSCSI response {response}"
            ));
            return;
        }
        if !task.write && task.received != plan.block_size {
            stats.fail(format!(
                "read returned {} of {} bytes",
                task.received, plan.block_size
            ));
            return;
        }
        stats.record(
            task.write,
            plan.block_size,
            now.duration_since(task.started),
        );
    }

    /// Stops issuing; once nothing is in flight, logs out (§11.14).
    pub fn drain(&mut self) {
        if self.phase == Phase::Running {
            self.phase = Phase::Draining;
        }
        if self.phase == Phase::Draining && self.outstanding() == 0 {
            let req = LogoutRequest {
                immediate: true,
                reason: 0,
                itt: 0xffff_fffe,
                cid: 0,
                cmd_sn: self.n.cmd_sn,
                exp_stat_sn: self.n.exp_stat_sn,
            };
            push_pdu(&mut self.tx, Header::LogoutRequest(req), &[]);
            self.phase = Phase::LoggingOut;
        }
    }

    /// Writes queued PDUs until done or the socket would block.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.tx_pos < self.tx.len() {
            match self.stream.write(&self.tx[self.tx_pos..]) {
                Ok(0) => return Err(io::Error::other("write returned 0")),
                Ok(n) => self.tx_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        self.tx.clear();
        self.tx_pos = 0;
        Ok(())
    }
}

/// Appends one PDU (no AHS, no digests) with its padding.
fn push_pdu(tx: &mut Vec<u8>, header: Header, data: &[u8]) {
    tx.extend_from_slice(&header.encode(0, data.len() as u32));
    tx.extend_from_slice(data);
    tx.resize(tx.len() + frame::pad_len(data.len()), 0);
}
