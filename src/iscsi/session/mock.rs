//! A small in-memory SCSI layer for the session tests: just enough CDBs to
//! drive every transport path (reads by reference, writes to a store,
//! parameter lists, engine I/O, sense after data). Not the real SCSI layer.

use bytes::Bytes;

use crate::iscsi::backend::{
    lun_index, Command, IoRequest, IoResult, Outcome, Payload, ResetEvent, ScsiStatus, ScsiTarget,
};

pub const BLOCK: u64 = 512;

#[derive(Debug, Default)]
pub struct MemTarget {
    /// Blocks per LUN, and whether it is read-only.
    pub luns: Vec<(u64, bool)>,
    pub executed: usize,
    pub resets: Vec<ResetEvent>,
    pub unmapped: Vec<(u64, u64)>,
    flushed: bool,
}

impl MemTarget {
    pub fn new(luns: &[(u64, bool)]) -> MemTarget {
        MemTarget {
            luns: luns.to_vec(),
            ..MemTarget::default()
        }
    }

    fn lun(&self, lun: u64) -> Option<(u16, u64, bool)> {
        let i = lun_index(lun)?;
        let (blocks, ro) = *self.luns.get(usize::from(i))?;
        Some((i, blocks, ro))
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn illegal(asc: u8) -> Outcome {
    Outcome::status(ScsiStatus::check_condition(0x05, asc, 0))
}

impl ScsiTarget for MemTarget {
    fn execute(&mut self, cmd: &Command<'_>) -> Outcome {
        self.executed += 1;
        self.flushed = false;
        let cdb = cmd.cdb;
        if cdb[0] == 0xa0 {
            let alloc = be32(cdb, 6) as usize;
            if alloc < 16 {
                return illegal(0x24);
            }
            let mut data = (8 * self.luns.len() as u32).to_be_bytes().to_vec();
            data.extend_from_slice(&[0; 4]);
            for i in 0..self.luns.len() {
                data.extend_from_slice(&crate::iscsi::backend::lun_field(i as u16).to_be_bytes());
            }
            data.truncate(alloc);
            return Outcome::Done {
                data: Payload::Inline(Bytes::from(data)),
                status: ScsiStatus::good(),
            };
        }
        let Some((lun, blocks, read_only)) = self.lun(cmd.lun) else {
            return illegal(0x25);
        };
        match cdb[0] {
            0x00 => Outcome::status(ScsiStatus::good()),
            0x12 => {
                let alloc = usize::from(u16::from_be_bytes([cdb[3], cdb[4]]));
                let data: Vec<u8> = (0..alloc.min(96) as u8).collect();
                Outcome::Done {
                    data: Payload::Inline(Bytes::from(data)),
                    status: ScsiStatus::good(),
                }
            }
            0x28 | 0x2a => {
                let lba = u64::from(be32(cdb, 2));
                let count = u64::from(u16::from_be_bytes([cdb[7], cdb[8]]));
                if lba + count > blocks {
                    return illegal(0x21);
                }
                let (offset, len) = (lba * BLOCK, (count * BLOCK) as u32);
                if cdb[0] == 0x28 {
                    Outcome::Done {
                        data: Payload::Store { lun, offset, len },
                        status: ScsiStatus::good(),
                    }
                } else if read_only {
                    Outcome::status(ScsiStatus::check_condition(0x07, 0x27, 0))
                } else {
                    Outcome::WriteToStore { lun, offset, len }
                }
            }
            0x35 => Outcome::Io(IoRequest::Flush { lun }),
            0x42 => Outcome::Receive {
                len: u32::from(u16::from_be_bytes([cdb[7], cdb[8]])),
            },
            // Test hook: 8 bytes of data and sense together.
            0xf0 => Outcome::Done {
                data: Payload::Inline(Bytes::from_static(b"partial!")),
                status: ScsiStatus::check_condition(0x03, 0x11, 0),
            },
            _ => illegal(0x20),
        }
    }

    fn data_received(&mut self, cmd: &Command<'_>, data: &[u8]) -> Outcome {
        let Some((lun, _, _)) = self.lun(cmd.lun) else {
            return illegal(0x25);
        };
        // UNMAP parameter list: 8-byte header, then 16-byte descriptors.
        let ranges = data
            .get(8..)
            .unwrap_or_default()
            .chunks_exact(16)
            .map(|d| {
                let lba = u64::from_be_bytes(d[..8].try_into().unwrap());
                (lba * BLOCK, u64::from(be32(d, 8)) * BLOCK)
            })
            .collect();
        Outcome::Io(IoRequest::Unmap { lun, ranges })
    }

    fn io_done(&mut self, cmd: &Command<'_>, result: IoResult) -> Outcome {
        if result.is_err() {
            return Outcome::status(ScsiStatus::check_condition(0x03, 0x0c, 0));
        }
        let fua = cmd.cdb[0] == 0x2a && cmd.cdb[1] & 0x08 != 0;
        if fua && !self.flushed {
            self.flushed = true;
            let (lun, _, _) = self.lun(cmd.lun).unwrap_or((0, 0, false));
            return Outcome::Io(IoRequest::Flush { lun });
        }
        Outcome::status(ScsiStatus::good())
    }

    fn lun_exists(&self, lun: u64) -> bool {
        self.lun(lun).is_some()
    }

    fn reset(&mut self, event: ResetEvent) {
        self.resets.push(event);
    }
}
