//! What the session does with each PDU an initiator sends (RFC 7143 §11.3,
//! §11.5, §11.7, §11.10, §11.14, §11.18), and the Rejects for the rest
//! (§11.17).

use bytes::Bytes;
use log::{debug, trace};

use super::task::{Phase, Task};
use super::{busy, CloseReason, Out, Session, StoreWrite, MAX_CDB_LEN};
use crate::iscsi::backend::{Payload, ResetEvent, ScsiTarget};
use crate::iscsi::discovery::{self, Asker};
use crate::iscsi::frame::Pdu;
use crate::iscsi::login::{SessionType, TargetEntry};
use crate::iscsi::pdu::{
    DataOut, Header, LogoutRequest, NopOut, RejectReason, ScsiCommand, TaskMgmtRequest,
    TextRequest, BHS_LEN, RESERVED_TAG,
};
use crate::iscsi::{serial, text};

/// Task management function codes (§11.5.1) and responses (§11.6.1).
mod tmf {
    pub const ABORT_TASK: u8 = 1;
    pub const ABORT_TASK_SET: u8 = 2;
    pub const CLEAR_TASK_SET: u8 = 4;
    pub const LOGICAL_UNIT_RESET: u8 = 5;
    pub const TARGET_WARM_RESET: u8 = 6;
    pub const TASK_REASSIGN: u8 = 8;

    pub const COMPLETE: u8 = 0;
    pub const NO_TASK: u8 = 1;
    pub const NO_LUN: u8 = 2;
    pub const REASSIGN_UNSUPPORTED: u8 = 4;
    pub const NOT_SUPPORTED: u8 = 5;
}

impl Session {
    /// Feeds one received PDU. The returned write refers to `pdu.data`.
    pub fn handle_pdu(
        &mut self,
        pdu: &Pdu<'_>,
        now: std::time::Instant,
        scsi: &mut dyn ScsiTarget,
        targets: &[TargetEntry],
    ) -> Option<StoreWrite> {
        self.last_rx = now;
        self.ping = None;
        if self.close.is_some() {
            return None;
        }
        trace!(
            "iscsi: {} sent {:?}",
            self.est.initiator_name,
            pdu.header.opcode()
        );
        let bhs = *pdu.bhs;
        match pdu.header {
            Header::ScsiCommand(c) => return self.handle_command(&c, pdu, scsi),
            Header::DataOut(d) => return self.handle_data_out(&d, pdu.data, bhs, scsi),
            Header::NopOut(n) => self.handle_nop_out(&n, pdu.data),
            Header::TaskMgmtRequest(t) => self.handle_tmf(&t, bhs, scsi),
            Header::TextRequest(t) => self.handle_text(&t, pdu.data, bhs, targets),
            Header::LogoutRequest(l) => self.handle_logout(&l, bhs),
            // ERL 0: no SNACK (§11.16).
            Header::Snack(_) => self.reject(RejectReason::SnackReject, bhs),
            Header::Unknown(_) => self.reject(RejectReason::CommandNotSupported, bhs),
            // Login in full feature phase, or a target opcode.
            _ => self.reject(RejectReason::ProtocolError, bhs),
        }
        None
    }

    fn handle_command(
        &mut self,
        c: &ScsiCommand,
        pdu: &Pdu<'_>,
        scsi: &mut dyn ScsiTarget,
    ) -> Option<StoreWrite> {
        if !self.admit(c.immediate, c.cmd_sn) {
            return None;
        }
        let bhs = *pdu.bhs;
        if self.est.session_type == SessionType::Discovery {
            // BC-28d: a discovery session carries no SCSI commands.
            self.reject(RejectReason::CommandNotSupported, bhs);
            return None;
        }
        if c.read && c.write {
            self.reject(RejectReason::CommandNotSupported, bhs);
            return None;
        }
        if self.tasks.contains_key(&c.itt) {
            self.reject(RejectReason::TaskInProgress, bhs);
            return None;
        }
        let imm = pdu.data;
        let imm_ok = imm.is_empty()
            || (c.write
                && self.params.immediate_data
                && imm.len() as u64 <= u64::from(self.params.first_burst_length)
                && imm.len() as u64 <= u64::from(c.expected_len));
        if !imm_ok {
            self.reject(RejectReason::ProtocolError, bhs);
            return None;
        }
        let Some(cdb) = full_cdb(&c.cdb, pdu.ahs) else {
            self.reject(RejectReason::InvalidPduField, bhs);
            return None;
        };
        let task = Task {
            itt: c.itt,
            lun: c.lun,
            cdb,
            expected_len: c.expected_len,
            read: c.read,
            write: c.write,
            attr: c.attr,
            transfer_len: 0,
            data_sn: 0,
            phase: Phase::New,
        };
        if self.tasks.len() >= self.queue_depth as usize {
            // Only immediate commands get past a full window.
            self.tasks.insert(c.itt, task);
            self.finish(c.itt, Payload::None, busy());
            return None;
        }
        self.stats.commands += 1;
        self.stats.data_out_bytes += imm.len() as u64;
        let outcome = scsi.execute(&task.command());
        self.tasks.insert(c.itt, task);
        self.apply(c.itt, outcome, scsi);
        let write = self.take_immediate(c, imm);
        if let Some(Phase::Receiving(inbound)) = self.tasks.get_mut(&c.itt).map(|t| &mut t.phase) {
            let unsolicited_done = c.final_bit
                || self.params.initial_r2t
                || inbound.received >= inbound.unsolicited_limit;
            if unsolicited_done {
                inbound.close_unsolicited();
            }
        }
        self.progress(c.itt, scsi);
        write
    }

    /// Immediate data of a command now collecting data; otherwise (the
    /// command finished at once, e.g. a write to a read-only LUN) it is
    /// discarded (BC-20.3).
    fn take_immediate(&mut self, c: &ScsiCommand, imm: &[u8]) -> Option<StoreWrite> {
        if imm.is_empty() {
            return None;
        }
        let expected = c.expected_len;
        let task = self.tasks.get_mut(&c.itt)?;
        let Phase::Receiving(inbound) = &mut task.phase else {
            return None;
        };
        // The length was checked against EDTL and FirstBurstLength, so
        // accept() has nothing to refuse at offset 0.
        let piece = inbound.accept(0, imm, RESERVED_TAG, false, expected).ok()?;
        self.store_piece(c.itt, piece)
    }

    fn store_piece(&mut self, itt: u32, piece: Option<super::task::Piece>) -> Option<StoreWrite> {
        let piece = piece?;
        let id = self.new_io(itt);
        if let Some(Phase::Receiving(inbound)) = self.tasks.get_mut(&itt).map(|t| &mut t.phase) {
            inbound.writes_pending += 1;
        }
        Some(StoreWrite {
            id,
            lun: piece.lun,
            offset: piece.store_offset,
            range: piece.range,
        })
    }

    fn handle_data_out(
        &mut self,
        d: &DataOut,
        data: &[u8],
        bhs: [u8; BHS_LEN],
        scsi: &mut dyn ScsiTarget,
    ) -> Option<StoreWrite> {
        let receiving = self.tasks.get_mut(&d.itt).and_then(|t| {
            let expected = t.expected_len;
            match &mut t.phase {
                Phase::Receiving(inbound) => Some((inbound, expected)),
                _ => None,
            }
        });
        let Some((inbound, expected)) = receiving else {
            if d.ttt != RESERVED_TAG && !self.aborted.contains(&d.itt) {
                self.reject(RejectReason::InvalidPduField, bhs);
            } else {
                // Unsolicited data of a command that already ended (it
                // failed early), or data of an aborted one: discard it.
                debug!(
                    "iscsi: {} unsolicited data for ended task {:#x}",
                    self.est.initiator_name, d.itt
                );
            }
            return None;
        };
        if let Err(reason) = inbound.check_data_sn(d.ttt, d.data_sn) {
            // The data of a broken sequence is not taken (RFC 7143
            // §11.7.5): the PDU is rejected and the command never completes
            // with it, so the initiator's timeout and ABORT TASK end it, as
            // libiscsi's iSCSIDataSnInvalid expects. Closing the connection
            // instead would let an initiator that reconnects replay the
            // command with fresh numbering and succeed silently.
            debug!(
                "iscsi: {} Data-Out with DataSN {} out of sequence",
                self.est.initiator_name, d.data_sn
            );
            self.reject(reason, bhs);
            return None;
        }
        match inbound.accept(d.buffer_offset, data, d.ttt, d.final_bit, expected) {
            Ok(piece) => {
                self.stats.data_out_bytes += data.len() as u64;
                let write = self.store_piece(d.itt, piece);
                self.progress(d.itt, scsi);
                write
            }
            Err(reason) => {
                self.reject(reason, bhs);
                None
            }
        }
    }

    fn handle_nop_out(&mut self, n: &NopOut, data: &[u8]) {
        if n.itt == RESERVED_TAG {
            // An answer to our ping, or a one-way keepalive: nothing is owed
            // and no CmdSN is consumed (§11.18, BC-22b, BC-22d).
            return;
        }
        if !self.admit(n.immediate, n.cmd_sn) {
            return;
        }
        let limit = self.params.initiator_mrdsl as usize;
        let echo = Bytes::copy_from_slice(data.get(..limit.min(data.len())).unwrap_or_default());
        self.outq.push_back(Out::NopIn {
            itt: n.itt,
            ttt: RESERVED_TAG,
            lun: n.lun,
            data: echo,
        });
    }

    fn handle_tmf(&mut self, t: &TaskMgmtRequest, bhs: [u8; BHS_LEN], scsi: &mut dyn ScsiTarget) {
        let cmd_sn = t.cmd_sn;
        if !self.admit(t.immediate, cmd_sn) {
            return;
        }
        if self.est.session_type == SessionType::Discovery {
            self.reject(RejectReason::CommandNotSupported, bhs);
            return;
        }
        let response = match t.function {
            tmf::ABORT_TASK => self.abort_task(t),
            tmf::ABORT_TASK_SET | tmf::CLEAR_TASK_SET if scsi.lun_exists(t.lun) => {
                self.abort_where(|task| task.lun == t.lun);
                tmf::COMPLETE
            }
            tmf::LOGICAL_UNIT_RESET if scsi.lun_exists(t.lun) => {
                self.abort_where(|task| task.lun == t.lun);
                scsi.reset(ResetEvent::Lun(t.lun));
                tmf::COMPLETE
            }
            tmf::ABORT_TASK_SET | tmf::CLEAR_TASK_SET | tmf::LOGICAL_UNIT_RESET => tmf::NO_LUN,
            tmf::TARGET_WARM_RESET => {
                self.abort_where(|_| true);
                scsi.reset(ResetEvent::Target);
                tmf::COMPLETE
            }
            // Allegiance reassignment needs ERL 2.
            tmf::TASK_REASSIGN => tmf::REASSIGN_UNSUPPORTED,
            // CLEAR ACA (no ACA here), TARGET COLD RESET, unknown codes.
            _ => tmf::NOT_SUPPORTED,
        };
        self.outq.push_back(Out::TaskMgmt {
            itt: t.itt,
            response,
        });
    }

    /// ABORT TASK (§11.5.1): a task not found is "complete" when its
    /// RefCmdSN lies in the current window [ExpCmdSN, MaxCmdSN] (it was sent
    /// but has not arrived: it is now considered received), else "does not
    /// exist" -- which is the answer for a task that already completed, whose
    /// CmdSN is below ExpCmdSN (libiscsi's AbortTaskSimpleAsync checks this).
    fn abort_task(&mut self, t: &TaskMgmtRequest) -> u8 {
        if self.tasks.contains_key(&t.referenced_tag) {
            self.forget(&[t.referenced_tag]);
            return tmf::COMPLETE;
        }
        let (exp, max) = self.window();
        if serial::in_window(t.ref_cmd_sn, exp, max) {
            tmf::COMPLETE
        } else {
            tmf::NO_TASK
        }
    }

    fn abort_where(&mut self, doomed: impl Fn(&Task) -> bool) {
        let gone: Vec<u32> = self
            .tasks
            .values()
            .filter(|t| doomed(t))
            .map(|t| t.itt)
            .collect();
        self.forget(&gone);
    }

    /// Drops aborted tasks and their queued Data-In; remembers their tags
    /// so Data-Out still in flight for them is discarded quietly (§4.2.3.4)
    /// instead of rejected.
    fn forget(&mut self, itts: &[u32]) {
        for itt in itts {
            self.tasks.remove(itt);
            if self.aborted.len() >= self.queue_depth as usize {
                self.aborted.pop_front();
            }
            self.aborted.push_back(*itt);
        }
        self.outq
            .retain(|o| !matches!(o, Out::DataIn(itt) if itts.contains(itt)));
    }

    fn handle_text(
        &mut self,
        t: &TextRequest,
        data: &[u8],
        bhs: [u8; BHS_LEN],
        targets: &[TargetEntry],
    ) {
        if !self.admit(t.immediate, t.cmd_sn) {
            return;
        }
        let continues =
            t.ttt != RESERVED_TAG && self.text.ttt == Some(t.ttt) && self.text.itt == t.itt;
        if t.ttt != RESERVED_TAG && !continues {
            self.reject(RejectReason::InvalidPduField, bhs);
            return;
        }
        if continues && !self.text.outgoing.is_empty() {
            self.send_text_chunk(t.itt);
            return;
        }
        if !continues {
            // A new exchange resets whatever was left (§6.2).
            self.text = Default::default();
        }
        if self.text.incoming.push(data).is_err() {
            self.text = Default::default();
            self.reject(RejectReason::ProtocolError, bhs);
            return;
        }
        if t.cont {
            // Acknowledge the part; the rest comes with this TTT (§6.2).
            let ttt = self.new_ttt();
            self.text.ttt = Some(ttt);
            self.text.itt = t.itt;
            self.outq.push_back(Out::Text {
                itt: t.itt,
                ttt,
                more: false,
                data: Bytes::new(),
            });
            return;
        }
        let incoming = std::mem::take(&mut self.text.incoming);
        let Ok(pairs) = text::parse(incoming.bytes()) else {
            self.text = Default::default();
            self.reject(RejectReason::ProtocolError, bhs);
            return;
        };
        let mut answer = Vec::new();
        for (key, value) in pairs {
            if key == "SendTargets" {
                let asker = Asker {
                    session_type: self.est.session_type,
                    initiator: &self.est.initiator_name,
                    target: self.est.target,
                };
                discovery::send_targets(&mut answer, value, asker, targets, &self.portals);
            } else {
                text::encode(&mut answer, key, "NotUnderstood");
            }
        }
        self.text.outgoing = Bytes::from(answer);
        self.text.itt = t.itt;
        self.send_text_chunk(t.itt);
    }

    /// Sends the next piece of a text response, at most the initiator's
    /// MaxRecvDataSegmentLength; C=1 and a TTT when more follows (§11.11).
    fn send_text_chunk(&mut self, itt: u32) {
        let limit = self.params.initiator_mrdsl as usize;
        let outgoing = std::mem::take(&mut self.text.outgoing);
        let (now, rest) = outgoing.split_at(limit.min(outgoing.len()));
        let (now, rest) = (outgoing.slice_ref(now), outgoing.slice_ref(rest));
        let more = !rest.is_empty();
        let ttt = if more { self.new_ttt() } else { RESERVED_TAG };
        self.text.ttt = more.then_some(ttt);
        self.text.outgoing = rest;
        self.outq.push_back(Out::Text {
            itt,
            ttt,
            more,
            data: now,
        });
    }

    fn handle_logout(&mut self, l: &LogoutRequest, bhs: [u8; BHS_LEN]) {
        if !self.admit(l.immediate, l.cmd_sn) {
            return;
        }
        // §11.15.1: 0 closed, 1 CID not found, 2 recovery not supported.
        let response = match l.reason {
            0 => 0,
            1 if l.cid == self.est.cid => 0,
            1 => 1,
            2 => 2,
            _ => {
                self.reject(RejectReason::ProtocolError, bhs);
                return;
            }
        };
        self.outq.push_back(Out::Logout {
            itt: l.itt,
            response,
        });
        if response == 0 {
            self.close_with(CloseReason::Logout);
        }
    }
}

/// The CDB: the 16 bytes of the BHS, extended by an Extended CDB AHS
/// (§11.3.5: AHSType 1, AHSLength counts the reserved byte and the CDB
/// bytes beyond 16). Other AHS types are skipped.
fn full_cdb(base: &[u8; 16], mut ahs: &[u8]) -> Option<Box<[u8]>> {
    let mut cdb = base.to_vec();
    while let [len_hi, len_lo, kind, _, rest @ ..] = ahs {
        let len = usize::from(u16::from_be_bytes([*len_hi, *len_lo]));
        // The segment's body is `len` bytes after the reserved byte counted in len.
        let body_len = len.checked_sub(1)?;
        let body = rest.get(..body_len)?;
        if *kind == 1 {
            cdb.extend_from_slice(body);
        }
        let padded = (4 + body_len).div_ceil(4) * 4 - 4;
        ahs = rest.get(padded..)?;
    }
    (cdb.len() <= MAX_CDB_LEN).then(|| cdb.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extended_cdb_ahs() {
        let base = [0x7fu8; 16];
        assert_eq!(full_cdb(&base, &[]).unwrap().len(), 16);
        // 16 more CDB bytes: AHSLength 17, then padding to 20.
        let mut ahs = vec![0, 17, 1, 0];
        ahs.extend_from_slice(&[0xaa; 16]);
        let cdb = full_cdb(&base, &ahs).unwrap();
        assert_eq!(cdb.len(), 32);
        assert_eq!(cdb[31], 0xaa);
        assert!(full_cdb(&base, &[0, 200, 1, 0, 1]).is_none());
        assert!(full_cdb(&base, &[0, 0, 1, 0]).is_none());
    }
}
