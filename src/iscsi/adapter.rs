//! The bridge between the session layer's [`ScsiTarget`] contract and the
//! SPC/SBC logic of [`scsi`](super::scsi): one [`TargetAdapter`] per session
//! (its I_T nexus), wrapping that session's view of one target's logical
//! units.
//!
//! The SCSI layer answers each CDB with a [`lu::Outcome`]; this file turns it
//! into what the session moves (data by reference to the store, Data-Out to
//! collect, I/O for the engine) and remembers, per task tag, what a command
//! still owes once its I/O completes (a FUA write flushes after writing, a
//! VERIFY compares after receiving).
//!
//! Sans-IO: the engine runs every [`IoRequest`]; nothing here touches files.

use std::collections::HashMap;

use bytes::Bytes;

use super::backend::{
    Command, IoRequest, IoResult, Outcome, Payload, ResetEvent, ScsiStatus, ScsiTarget,
};
use super::scsi::lu::{self, AfterDataOut, Extent, NexusId, Parameters};
use super::scsi::target::decode_lun;
use super::scsi::{Sense, Target};

/// What a command does when its current step completes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Next {
    /// GOOD, or MEDIUM ERROR (write) if the I/O failed.
    Finish,
    /// The write landed; make it durable, then finish.
    FlushThenFinish,
    /// Data-Out arrived for a VERIFY compare (done by the engine as I/O).
    Compare { extent: Extent, repeat: bool },
    /// A parameter list arrived.
    Parameters(Parameters),
}

/// One session's SCSI target.
#[derive(Debug)]
pub struct TargetAdapter {
    target: Target,
    nexus: NexusId,
    pending: HashMap<u32, Next>,
}

impl TargetAdapter {
    pub fn new(target: Target, nexus: NexusId) -> TargetAdapter {
        TargetAdapter {
            target,
            nexus,
            pending: HashMap::new(),
        }
    }

    /// Tells logical unit `lun` its backing store now holds `size_bytes`;
    /// a change of capacity raises UNIT ATTENTION 2A/09 for this nexus.
    pub fn resize(&mut self, lun: u16, size_bytes: u64) {
        if let Some(unit) = self.target.lu_mut(lun) {
            if unit.config().size_bytes != size_bytes {
                unit.set_size(size_bytes);
            }
        }
    }

    fn lun(cmd: &Command<'_>) -> [u8; 8] {
        cmd.lun.to_be_bytes()
    }

    /// Turns the SCSI layer's answer into the session's.
    fn map(&mut self, cmd: &Command<'_>, outcome: lu::Outcome) -> Outcome {
        let lun = decode_lun(Self::lun(cmd)).unwrap_or(0);
        let good = ScsiStatus::good();
        match outcome {
            lu::Outcome::Good => Outcome::status(good),
            lu::Outcome::Data(bytes) => Outcome::Done {
                data: Payload::Inline(Bytes::from(bytes)),
                status: good,
            },
            lu::Outcome::Read(extent) => match u32::try_from(extent.len) {
                Ok(len) => Outcome::Done {
                    data: Payload::Store {
                        lun,
                        offset: extent.offset,
                        len,
                    },
                    status: good,
                },
                // More than one iSCSI transfer can describe (EDTL is 32 bits).
                Err(_) => check(Sense::invalid_field_in_cdb(0, None)),
            },
            lu::Outcome::DataOut { len, then } => {
                let Ok(len) = u32::try_from(len) else {
                    return check(Sense::invalid_field_in_cdb(0, None));
                };
                match then {
                    AfterDataOut::Write { offset, fua } => {
                        let next = if fua {
                            Next::FlushThenFinish
                        } else {
                            Next::Finish
                        };
                        self.pending.insert(cmd.tag, next);
                        Outcome::WriteToStore { lun, offset, len }
                    }
                    AfterDataOut::Compare { extent, repeat } => {
                        self.pending
                            .insert(cmd.tag, Next::Compare { extent, repeat });
                        Outcome::Receive { len }
                    }
                    AfterDataOut::Parameters(p) => {
                        self.pending.insert(cmd.tag, Next::Parameters(p));
                        Outcome::Receive { len }
                    }
                }
            }
            lu::Outcome::Flush => {
                self.pending.insert(cmd.tag, Next::Finish);
                Outcome::Io(IoRequest::Flush { lun })
            }
            lu::Outcome::Deallocate(extents) => {
                self.pending.insert(cmd.tag, Next::Finish);
                Outcome::Io(IoRequest::Unmap {
                    lun,
                    ranges: extents.iter().map(|e| (e.offset, e.len)).collect(),
                })
            }
            lu::Outcome::WriteSame { pattern, extent } => {
                self.pending.insert(cmd.tag, Next::Finish);
                Outcome::Io(IoRequest::WriteSame {
                    lun,
                    offset: extent.offset,
                    len: extent.len,
                    pattern: Bytes::from(pattern),
                })
            }
            lu::Outcome::Check(sense) => check(sense),
        }
    }
}

fn check(sense: Sense) -> Outcome {
    let (key, asc, ascq) = sense.triple();
    let mut status = ScsiStatus::check_condition(key, asc, ascq);
    status.sense = sense.encode().to_vec();
    Outcome::status(status)
}

impl ScsiTarget for TargetAdapter {
    fn execute(&mut self, cmd: &Command<'_>) -> Outcome {
        // A reused tag starts afresh (the old task is gone).
        self.pending.remove(&cmd.tag);
        let outcome = self
            .target
            .execute(self.nexus, Self::lun(cmd), cmd.cdb)
            .with_edtl(u64::from(cmd.expected_len));
        self.map(cmd, outcome)
    }

    fn data_received(&mut self, cmd: &Command<'_>, data: &[u8]) -> Outcome {
        match self.pending.remove(&cmd.tag) {
            Some(Next::Parameters(p)) => {
                let outcome = self
                    .target
                    .handle_parameters(self.nexus, Self::lun(cmd), p, data);
                self.map(cmd, outcome)
            }
            Some(Next::Compare { extent, repeat }) => {
                let lun = decode_lun(Self::lun(cmd)).unwrap_or(0);
                self.pending.insert(cmd.tag, Next::Finish);
                Outcome::Io(IoRequest::Compare {
                    lun,
                    offset: extent.offset,
                    len: extent.len,
                    expected: Bytes::copy_from_slice(data),
                    repeat,
                })
            }
            _ => check(Sense::invalid_field_in_cdb(0, None)),
        }
    }

    fn io_done(&mut self, cmd: &Command<'_>, result: IoResult) -> Outcome {
        let next = self.pending.remove(&cmd.tag);
        match (result, next) {
            (Ok(()), Some(Next::FlushThenFinish)) => {
                let lun = decode_lun(Self::lun(cmd)).unwrap_or(0);
                self.pending.insert(cmd.tag, Next::Finish);
                Outcome::Io(IoRequest::Flush { lun })
            }
            (Ok(()), _) => Outcome::status(ScsiStatus::good()),
            (Err(std::io::ErrorKind::InvalidData), _) => check(Sense::miscompare(0)),
            (Err(_), _) => check(Sense::write_error()),
        }
    }

    fn lun_exists(&self, lun: u64) -> bool {
        decode_lun(lun.to_be_bytes()).is_some_and(|l| self.target.lu(l).is_some())
    }

    fn reset(&mut self, event: ResetEvent) {
        match event {
            ResetEvent::Target => self.target.reset(),
            ResetEvent::Lun(raw) => {
                if let Some(unit) =
                    decode_lun(raw.to_be_bytes()).and_then(|l| self.target.lu_mut(l))
                {
                    unit.reset();
                }
            }
        }
        self.pending.clear();
    }
}
