//! The full feature phase of one connection (RFC 7143 §4.2, §11), as a
//! sans-IO state machine.
//!
//! # Call order
//!
//! The engine builds a [`Session`] from the login's
//! [`Established`](super::login::Established) and then, on every wakeup:
//!
//! 1. frames PDUs with [`digests`](Session::digests) and
//!    [`max_recv_data`](Session::max_recv_data) and feeds each to
//!    [`handle_pdu`](Session::handle_pdu) with `now`; a framing or digest
//!    error goes to [`handle_error`](Session::handle_error) instead;
//!    `handle_pdu` may return a [`StoreWrite`]: bytes of that PDU's data the
//!    engine must write to a LUN (or copy) before reusing its buffer, then
//!    report with [`io_complete`](Session::io_complete);
//! 2. runs every [`poll_io`](Session::poll_io) request (flush, unmap, ...)
//!    and reports each with `io_complete`;
//! 3. sends every [`poll_transmit`](Session::poll_transmit) item: the header
//!    bytes, then the payload (inline bytes, or a range of a LUN's store for
//!    sendfile/mmap/pread), then zero padding and, if
//!    [`Transmit::data_digest`] is set, the CRC32C of payload and pad;
//! 4. wakes the session at [`poll_timeout`](Session::poll_timeout) and calls
//!    [`handle_timeout`](Session::handle_timeout);
//! 5. stops reading while [`backlog`](Session::backlog) exceeds
//!    [`MAX_BACKLOG`];
//! 6. closes the connection once [`close_reason`](Session::close_reason) is
//!    set and `poll_transmit` has nothing left.
//!
//! The SCSI layer is passed into each call as `&mut dyn ScsiTarget` (see
//! [`super::backend`]); the target list is passed where SendTargets needs it.
//!
//! # Rules kept
//!
//! - CmdSN: a non-immediate command is taken only when its CmdSN equals
//!   ExpCmdSN and lies within [ExpCmdSN, MaxCmdSN]; anything else is dropped
//!   silently (§4.2.2.1, BC-23). Immediate commands do not consume a CmdSN.
//!   MaxCmdSN never shrinks and never falls below ExpCmdSN - 1.
//! - StatSN advances for every status-carrying PDU, not for Data-In without
//!   status, R2T, or a NOP-In with ITT 0xffffffff (§11.19.2).
//! - Data-In: segments of at most the initiator's MaxRecvDataSegmentLength,
//!   sequences (F bit) of at most MaxBurstLength, status in the last Data-In
//!   when there is no sense (§11.7.4), residuals with U/O bits (§11.4.5.1).
//! - Writes: immediate data when ImmediateData=Yes, unsolicited Data-Out up
//!   to FirstBurstLength when InitialR2T=No, then R2Ts of at most
//!   MaxBurstLength with at most MaxOutstandingR2T outstanding.
//! - NOP: a ping (ITT != 0xffffffff) is echoed; a NOP-Out with ITT
//!   0xffffffff gets no answer. An idle initiator is pinged with a valid TTT
//!   and dropped when nothing at all arrives within the timeout (§11.18,
//!   §11.19, BC-22). Any PDU counts as a sign of life.
//! - Discovery sessions take Text, NOP-Out and Logout only (BC-28d).
//!
//! Not done yet: holding commands that arrive ahead of ExpCmdSN (one TCP
//! connection delivers in order, so a gap only follows a PDU we discarded,
//! and at ERL 0 that ends the connection); operational key renegotiation in
//! Text requests; bidirectional commands; SNACK and every ERL > 0 feature;
//! asynchronous messages.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::debug;

use super::backend::{
    status, IoRequest, IoResult, Outcome, Payload, ScsiStatus, ScsiTarget, MAX_RECEIVE,
};
use super::frame::{Digests, HeaderBytes, PduError};
use super::login::Established;
use super::negotiate::{Limits, Params};
use super::pdu::{RejectReason, BHS_LEN, RESERVED_TAG};
use super::serial;
use super::text::TextBuffer;

mod task;

use task::{Inbound, Outbound, Phase, Residual, Sink, Task};

/// Longest CDB accepted (16 bytes in the BHS plus an Extended CDB AHS).
/// SPC-4 variable-length CDBs stop at 260 bytes.
pub const MAX_CDB_LEN: usize = 260;

/// PDUs queued to send beyond which the engine should stop reading from
/// the connection until it has sent some. Each received PDU queues at most a
/// few responses, so without this bound a peer that pings and never reads
/// its socket would grow the queue without limit.
pub const MAX_BACKLOG: usize = 1024;

/// Keepalive settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Idle time before the target pings.
    pub nop_interval: Duration,
    /// Time a ping may go unanswered.
    pub nop_timeout: Duration,
}

/// Names an I/O the engine runs for the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IoId(pub u64);

/// Bytes of the PDU just handed to `handle_pdu` that belong in a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreWrite {
    pub id: IoId,
    pub lun: u16,
    pub offset: u64,
    /// Range within that PDU's data segment.
    pub range: Range<usize>,
}

/// One PDU to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// BHS and, when negotiated, its digest.
    pub header: HeaderBytes,
    pub data: Payload,
    /// Append CRC32C(data + pad) after the padding.
    pub data_digest: bool,
}

impl Transmit {
    /// Zero bytes after the data.
    pub fn pad_len(&self) -> usize {
        super::frame::pad_len(self.data.len() as usize)
    }
}

/// Counters of one session, for the engine's metrics (summed per worker).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// SCSI commands handed to the SCSI layer.
    pub commands: u64,
    /// Commands and other numbered PDUs dropped for their CmdSN.
    pub out_of_window: u64,
    /// Reject PDUs sent.
    pub rejects: u64,
    /// Data-In payload bytes handed out.
    pub data_in_bytes: u64,
    /// Data-Out (and immediate) payload bytes accepted.
    pub data_out_bytes: u64,
}

/// Why the connection must close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Logout answered.
    Logout,
    /// A ping went unanswered.
    NopTimeout,
    /// The initiator broke the protocol beyond what a Reject fixes.
    ProtocolError,
    /// A header or data digest failed (ERL 0 has no recovery).
    DigestError,
}

/// Something queued to send; headers are built when it leaves, so StatSN
/// and the window are current.
#[derive(Debug)]
enum Out {
    DataIn(u32),
    Response {
        itt: u32,
        status: ScsiStatus,
        residual: Residual,
        exp_data_sn: u32,
    },
    R2t {
        itt: u32,
        lun: u64,
        ttt: u32,
        r2t_sn: u32,
        offset: u32,
        len: u32,
    },
    NopIn {
        itt: u32,
        ttt: u32,
        lun: u64,
        data: Bytes,
    },
    TaskMgmt {
        itt: u32,
        response: u8,
    },
    Text {
        itt: u32,
        ttt: u32,
        more: bool,
        data: Bytes,
    },
    Logout {
        itt: u32,
        response: u8,
    },
    Reject {
        reason: RejectReason,
        bhs: [u8; BHS_LEN],
    },
}

/// Text negotiation in progress in either direction (§6.2).
#[derive(Debug, Default)]
struct TextState {
    /// TTT of the exchange, when one is open.
    ttt: Option<u32>,
    itt: u32,
    incoming: TextBuffer,
    /// Response bytes not yet sent.
    outgoing: Bytes,
}

/// One connection in full feature phase.
#[derive(Debug)]
pub struct Session {
    est: Established,
    params: Params,
    queue_depth: u32,
    timers: Timers,
    portals: Vec<SocketAddr>,
    exp_cmd_sn: u32,
    max_cmd_sn: u32,
    stat_sn: u32,
    tasks: HashMap<u32, Task>,
    outq: VecDeque<Out>,
    io_queue: VecDeque<(IoId, IoRequest)>,
    io_owner: HashMap<IoId, u32>,
    next_io: u64,
    next_ttt: u32,
    last_rx: Instant,
    ping: Option<(u32, Instant)>,
    text: TextState,
    close: Option<CloseReason>,
    stats: Stats,
    /// Tags of the most recently aborted tasks, at most `queue_depth`.
    aborted: VecDeque<u32>,
}

mod handlers;
mod transmit;

impl Session {
    /// Enters full feature phase. `portals` are the addresses SendTargets
    /// reports (the engine substitutes the connection's local address for a
    /// wildcard listen address).
    pub fn new(
        est: Established,
        limits: &Limits,
        timers: Timers,
        portals: Vec<SocketAddr>,
        now: Instant,
    ) -> Session {
        let queue_depth = limits.queue_depth.max(1);
        let exp_cmd_sn = est.exp_cmd_sn;
        Session {
            params: est.params.clone(),
            stat_sn: est.stat_sn,
            est,
            queue_depth,
            timers,
            portals,
            exp_cmd_sn,
            max_cmd_sn: exp_cmd_sn.wrapping_add(queue_depth - 1),
            tasks: HashMap::new(),
            outq: VecDeque::new(),
            io_queue: VecDeque::new(),
            io_owner: HashMap::new(),
            next_io: 0,
            next_ttt: 1,
            last_rx: now,
            ping: None,
            text: TextState::default(),
            close: None,
            stats: Stats::default(),
            aborted: VecDeque::new(),
        }
    }

    /// Digests in force on this connection.
    pub fn digests(&self) -> Digests {
        self.params.digests
    }

    /// The longest data segment the initiator may send (what we declared).
    pub fn max_recv_data(&self) -> u32 {
        self.params.target_mrdsl
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// What the login established (names, ISID, TSIH, target).
    pub fn established(&self) -> &Established {
        &self.est
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Items waiting in the send queue (compare with [`MAX_BACKLOG`]).
    pub fn backlog(&self) -> usize {
        self.outq.len()
    }

    /// Commands accepted and not yet answered.
    pub fn tasks_in_flight(&self) -> usize {
        self.tasks.len()
    }

    /// Set once the connection must close (after the queued PDUs are sent).
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close
    }

    /// A PDU could not be framed or its digest failed.
    pub fn handle_error(&mut self, error: PduError) {
        match error {
            PduError::Frame(super::frame::FrameError::DataTooLong { bhs, .. }) => {
                self.reject(RejectReason::ProtocolError, bhs);
                self.close_with(CloseReason::ProtocolError);
            }
            PduError::DataDigest { bhs } => {
                // §7.8: answer with a Reject and discard the PDU; at ERL 0 the
                // lost PDU leaves a hole no one can fill, so the connection goes.
                self.reject(RejectReason::DataDigestError, bhs);
                self.close_with(CloseReason::DigestError);
            }
            // Nothing in the header can be trusted, not even its length.
            PduError::HeaderDigest => self.close_with(CloseReason::DigestError),
            PduError::Truncated => {}
        }
    }

    fn close_with(&mut self, reason: CloseReason) {
        self.close.get_or_insert(reason);
    }

    /// The next I/O the engine must run (other than writes by reference).
    pub fn poll_io(&mut self) -> Option<(IoId, IoRequest)> {
        while let Some((id, req)) = self.io_queue.pop_front() {
            // Requests of aborted tasks are dropped before they start.
            let alive = self
                .io_owner
                .get(&id)
                .is_some_and(|itt| self.tasks.contains_key(itt));
            if alive {
                return Some((id, req));
            }
            self.io_owner.remove(&id);
        }
        None
    }

    /// When to call [`handle_timeout`](Self::handle_timeout).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.close.is_some() {
            return None;
        }
        match self.ping {
            Some((_, deadline)) => Some(deadline),
            None => Some(self.last_rx + self.timers.nop_interval),
        }
    }

    /// Pings an idle initiator, or gives up on a silent one.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.close.is_some() {
            return;
        }
        match self.ping {
            Some((_, deadline)) if now >= deadline => {
                debug!(
                    "iscsi: {} did not answer a NOP-In; closing",
                    self.est.initiator_name
                );
                self.close_with(CloseReason::NopTimeout);
            }
            None if now >= self.last_rx + self.timers.nop_interval => {
                let ttt = self.new_ttt();
                self.outq.push_back(Out::NopIn {
                    itt: RESERVED_TAG,
                    ttt,
                    lun: 0,
                    data: Bytes::new(),
                });
                self.ping = Some((ttt, now + self.timers.nop_timeout));
            }
            _ => {}
        }
    }

    fn new_ttt(&mut self) -> u32 {
        let ttt = self.next_ttt;
        self.next_ttt = self.next_ttt.wrapping_add(1);
        if self.next_ttt == RESERVED_TAG {
            self.next_ttt = 1;
        }
        ttt
    }

    fn new_io(&mut self, itt: u32) -> IoId {
        let id = IoId(self.next_io);
        self.next_io += 1;
        self.io_owner.insert(id, itt);
        id
    }

    /// Takes a command's CmdSN: immediate ones pass, others only in order
    /// and inside the window.
    fn admit(&mut self, immediate: bool, cmd_sn: u32) -> bool {
        if immediate {
            return true;
        }
        if cmd_sn == self.exp_cmd_sn && serial::in_window(cmd_sn, self.exp_cmd_sn, self.max_cmd_sn)
        {
            self.exp_cmd_sn = self.exp_cmd_sn.wrapping_add(1);
            return true;
        }
        self.stats.out_of_window += 1;
        debug!(
            "iscsi: {} CmdSN {cmd_sn:#x} outside [{:#x}, {:#x}] or out of order; ignored",
            self.est.initiator_name, self.exp_cmd_sn, self.max_cmd_sn
        );
        false
    }

    /// Current MaxCmdSN: room for `queue_depth` commands, never shrinking.
    fn window(&mut self) -> (u32, u32) {
        let in_flight = u32::try_from(self.tasks.len()).unwrap_or(u32::MAX);
        let room = self.queue_depth.saturating_sub(in_flight);
        let candidate = self.exp_cmd_sn.wrapping_add(room).wrapping_sub(1);
        if serial::lt(self.max_cmd_sn, candidate) {
            self.max_cmd_sn = candidate;
        }
        (self.exp_cmd_sn, self.max_cmd_sn)
    }

    /// StatSN for a status-carrying PDU, advancing it.
    fn take_stat_sn(&mut self) -> u32 {
        let sn = self.stat_sn;
        self.stat_sn = self.stat_sn.wrapping_add(1);
        sn
    }

    fn reject(&mut self, reason: RejectReason, bhs: [u8; BHS_LEN]) {
        debug!(
            "iscsi: {} rejected PDU: {reason:?}",
            self.est.initiator_name
        );
        self.stats.rejects += 1;
        self.outq.push_back(Out::Reject { reason, bhs });
    }

    /// Reports the end of a [`StoreWrite`] or a [`poll_io`](Self::poll_io)
    /// request.
    pub fn io_complete(&mut self, id: IoId, result: IoResult, scsi: &mut dyn ScsiTarget) {
        let Some(itt) = self.io_owner.remove(&id) else {
            return;
        };
        let Some(task) = self.tasks.get_mut(&itt) else {
            // The task was aborted meanwhile; its I/O result means nothing.
            return;
        };
        match &mut task.phase {
            Phase::Receiving(inbound) => {
                inbound.writes_pending = inbound.writes_pending.saturating_sub(1);
                if let Err(kind) = result {
                    inbound.write_error.get_or_insert(kind);
                }
                self.progress(itt, scsi);
            }
            Phase::Io => {
                let outcome = scsi.io_done(&task.command(), result);
                self.apply(itt, outcome, scsi);
            }
            Phase::New | Phase::Sending(_) => {}
        }
    }

    /// Acts on what the SCSI layer said a command needs.
    fn apply(&mut self, itt: u32, outcome: Outcome, scsi: &mut dyn ScsiTarget) {
        let Some(task) = self.tasks.get_mut(&itt) else {
            return;
        };
        let fresh = matches!(task.phase, Phase::New);
        match outcome {
            Outcome::Done { data, status } => self.finish(itt, data, status),
            Outcome::Io(req) => {
                task.phase = Phase::Io;
                let id = self.new_io(itt);
                self.io_queue.push_back((id, req));
            }
            Outcome::WriteToStore { lun, offset, len } if fresh => {
                self.start_inbound(itt, Sink::Store { lun, offset }, len, scsi)
            }
            Outcome::Receive { len } if fresh && len <= MAX_RECEIVE => {
                self.start_inbound(itt, Sink::Buffer(Vec::new()), len, scsi)
            }
            _ => {
                // A SCSI layer asking for data twice, or too much of it:
                // a target bug, reported as such (SPC-4: 04/44/00).
                let status = ScsiStatus::check_condition(0x04, 0x44, 0x00);
                self.finish(itt, Payload::None, status);
            }
        }
    }

    fn start_inbound(&mut self, itt: u32, sink: Sink, len: u32, scsi: &mut dyn ScsiTarget) {
        let first_burst = self.params.first_burst_length;
        let Some(task) = self.tasks.get_mut(&itt) else {
            return;
        };
        task.transfer_len = u64::from(len);
        let want = len.min(task.expected_len);
        let limit = first_burst.min(task.expected_len);
        task.phase = Phase::Receiving(Inbound::new(sink, want, limit));
        if !task.write {
            // No W bit: the initiator sends nothing; finish with what we have.
            if let Phase::Receiving(i) = &mut task.phase {
                i.want = 0;
                i.close_unsolicited();
            }
        }
        self.progress(itt, scsi);
    }

    /// Sends R2Ts the window allows; hands a finished transfer on.
    fn progress(&mut self, itt: u32, scsi: &mut dyn ScsiTarget) {
        let (max_out, max_burst) = (
            self.params.max_outstanding_r2t,
            self.params.max_burst_length,
        );
        loop {
            let ttt = self.next_ttt;
            let Some(task) = self.tasks.get_mut(&itt) else {
                return;
            };
            let Phase::Receiving(inbound) = &mut task.phase else {
                return;
            };
            if inbound.complete() {
                break;
            }
            let Some((offset, len)) = inbound.next_r2t(max_out, max_burst, ttt) else {
                return;
            };
            let r2t_sn = task.data_sn;
            task.data_sn = task.data_sn.wrapping_add(1);
            let lun = task.lun;
            self.new_ttt();
            self.outq.push_back(Out::R2t {
                itt,
                lun,
                ttt,
                r2t_sn,
                offset,
                len,
            });
        }
        let Some(task) = self.tasks.get_mut(&itt) else {
            return;
        };
        let Phase::Receiving(inbound) = std::mem::replace(&mut task.phase, Phase::Io) else {
            return;
        };
        let cmd = task.command();
        let outcome = match inbound.sink {
            Sink::Buffer(buf) => scsi.data_received(&cmd, &buf),
            Sink::Store { .. } => scsi.io_done(&cmd, inbound.write_error.map_or(Ok(()), Err)),
        };
        self.apply(itt, outcome, scsi);
    }

    /// Queues the data and status of a finished command.
    fn finish(&mut self, itt: u32, data: Payload, status: ScsiStatus) {
        let Some(task) = self.tasks.get_mut(&itt) else {
            return;
        };
        if !data.is_empty() {
            task.transfer_len = data.len();
        }
        let residual = Residual::new(task.expected_len, task.transfer_len);
        let send = if task.read {
            data.len().min(u64::from(task.expected_len)) as u32
        } else {
            0
        };
        if send > 0 {
            task.phase = Phase::Sending(Outbound {
                payload: data,
                len: send,
                sent: 0,
                burst: 0,
                status,
                residual,
            });
            self.outq.push_back(Out::DataIn(itt));
        } else {
            let exp_data_sn = task.data_sn;
            self.tasks.remove(&itt);
            self.outq.push_back(Out::Response {
                itt,
                status,
                residual,
                exp_data_sn,
            });
        }
    }
}

/// Status for commands refused before the SCSI layer sees them.
fn busy() -> ScsiStatus {
    ScsiStatus {
        status: status::TASK_SET_FULL,
        sense: Vec::new(),
    }
}

#[cfg(test)]
mod mock;
#[cfg(test)]
mod tests;
