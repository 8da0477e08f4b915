//! What leaves the session: each queued item becomes one PDU when the
//! engine asks for it, so StatSN, ExpCmdSN and MaxCmdSN are current at the
//! moment of sending (RFC 7143 §4.2.2.1, §11.7.4, §11.19.2). Reads leave
//! one Data-In at a time, round-robin across commands.

use bytes::Bytes;

use super::task::{self, Phase};
use super::{Out, Session, Transmit};
use crate::iscsi::backend::Payload;
use crate::iscsi::frame::HeaderBytes;
use crate::iscsi::pdu::{
    DataIn, Header, LogoutResponse, NopIn, R2t, Reject, ScsiResponse, TaskMgmtResponse,
    TextResponse, RESERVED_TAG,
};

impl Session {
    /// The next PDU to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        while let Some(out) = self.outq.pop_front() {
            if let Some(t) = self.build(out) {
                return Some(t);
            }
        }
        None
    }

    fn transmit(&self, header: Header, data: Payload) -> Transmit {
        let bhs = header.encode(0, data.len() as u32);
        Transmit {
            header: HeaderBytes::new(bhs, self.params.digests),
            data_digest: self.params.digests.data && !data.is_empty(),
            data,
        }
    }

    fn build(&mut self, out: Out) -> Option<Transmit> {
        let (exp_cmd_sn, max_cmd_sn) = self.window();
        let header = match out {
            Out::DataIn(itt) => return self.next_data_in(itt),
            Out::Response {
                itt,
                status,
                residual,
                exp_data_sn,
            } => {
                let header = Header::ScsiResponse(ScsiResponse {
                    overflow: residual.overflow,
                    underflow: residual.underflow,
                    residual: residual.count,
                    response: 0,
                    status: status.status,
                    itt,
                    stat_sn: self.take_stat_sn(),
                    exp_cmd_sn,
                    max_cmd_sn,
                    exp_data_sn,
                    ..ScsiResponse::default()
                });
                let sense = task::sense_segment(&status.sense);
                return Some(self.transmit(header, inline(sense)));
            }
            Out::R2t {
                itt,
                lun,
                ttt,
                r2t_sn,
                offset,
                len,
            } => {
                // An R2T of an aborted task is not sent.
                self.tasks.get(&itt)?;
                Header::R2t(R2t {
                    lun,
                    itt,
                    ttt,
                    stat_sn: self.stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                    r2t_sn,
                    buffer_offset: offset,
                    desired_len: len,
                })
            }
            Out::NopIn {
                itt,
                ttt,
                lun,
                data,
            } => {
                // StatSN advances only for a reply to a ping (§11.19.2).
                let stat_sn = if itt == RESERVED_TAG {
                    self.stat_sn
                } else {
                    self.take_stat_sn()
                };
                let header = Header::NopIn(NopIn {
                    lun,
                    itt,
                    ttt,
                    stat_sn,
                    exp_cmd_sn,
                    max_cmd_sn,
                });
                return Some(self.transmit(header, inline(data)));
            }
            Out::TaskMgmt { itt, response } => Header::TaskMgmtResponse(TaskMgmtResponse {
                response,
                itt,
                stat_sn: self.take_stat_sn(),
                exp_cmd_sn,
                max_cmd_sn,
            }),
            Out::Text {
                itt,
                ttt,
                more,
                data,
            } => {
                let header = Header::TextResponse(TextResponse {
                    final_bit: !more,
                    cont: more,
                    lun: 0,
                    itt,
                    ttt,
                    stat_sn: self.take_stat_sn(),
                    exp_cmd_sn,
                    max_cmd_sn,
                });
                return Some(self.transmit(header, inline(data)));
            }
            Out::Logout { itt, response } => Header::LogoutResponse(LogoutResponse {
                response,
                itt,
                stat_sn: self.take_stat_sn(),
                exp_cmd_sn,
                max_cmd_sn,
                time2wait: 0,
                time2retain: 0,
            }),
            Out::Reject { reason, bhs } => {
                let header = Header::Reject(Reject {
                    reason,
                    stat_sn: self.take_stat_sn(),
                    exp_cmd_sn,
                    max_cmd_sn,
                    data_sn: 0,
                });
                return Some(self.transmit(header, inline(Bytes::copy_from_slice(&bhs))));
            }
        };
        Some(self.transmit(header, Payload::None))
    }

    /// One Data-In PDU of a read; requeues the read if more remain.
    fn next_data_in(&mut self, itt: u32) -> Option<Transmit> {
        let (exp_cmd_sn, max_cmd_sn) = self.window();
        let mrdsl = self.params.initiator_mrdsl;
        let max_burst = self.params.max_burst_length;
        let task = self.tasks.get_mut(&itt)?;
        let Phase::Sending(out) = &mut task.phase else {
            return None;
        };
        let chunk = out.next(mrdsl, max_burst);
        self.stats.data_in_bytes += chunk.payload.len();
        let collapse = chunk.last && out.status.sense.is_empty();
        let (status, residual) = (out.status.clone(), out.residual);
        let data_sn = task.data_sn;
        task.data_sn = task.data_sn.wrapping_add(1);
        let lun = task.lun;
        let mut header = DataIn {
            final_bit: chunk.final_bit,
            lun,
            itt,
            ttt: RESERVED_TAG,
            exp_cmd_sn,
            max_cmd_sn,
            data_sn,
            buffer_offset: chunk.offset,
            ..DataIn::default()
        };
        if collapse {
            self.tasks.remove(&itt);
            header.has_status = true;
            header.status = status.status;
            header.overflow = residual.overflow;
            header.underflow = residual.underflow;
            header.residual = residual.count;
            header.stat_sn = self.take_stat_sn();
        } else if chunk.last {
            // Sense data needs a SCSI Response after the data (§11.7.4).
            self.tasks.remove(&itt);
            header.stat_sn = self.stat_sn;
            self.outq.push_front(Out::Response {
                itt,
                status,
                residual,
                exp_data_sn: data_sn.wrapping_add(1),
            });
        } else {
            header.stat_sn = self.stat_sn;
            // Round-robin: other commands' PDUs go before our next one.
            self.outq.push_back(Out::DataIn(itt));
        }
        Some(self.transmit(Header::DataIn(header), chunk.payload))
    }
}

fn inline(data: Bytes) -> Payload {
    if data.is_empty() {
        Payload::None
    } else {
        Payload::Inline(data)
    }
}
