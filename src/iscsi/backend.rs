//! The contract between the iSCSI session and the SCSI layer that gives
//! commands their meaning (SPC/SBC), and the I/O the engine runs for both.
//!
//! The session owns transport: CmdSN order, Data-In splitting, R2Ts,
//! residuals, task management. A [`ScsiTarget`] owns semantics: it looks at a
//! CDB and says what the command needs, as an [`Outcome`]:
//!
//! - [`Outcome::Done`]: finished; maybe data for the initiator (inline bytes
//!   or a range of a LUN's backing store, which the engine sends with
//!   sendfile, mmap or pread), then SCSI status and sense;
//! - [`Outcome::WriteToStore`]: the command carries data that belongs in a
//!   LUN's backing store at an offset (WRITE); the session collects it from
//!   immediate data, unsolicited Data-Out and R2T bursts, has the engine write
//!   each piece, and calls [`ScsiTarget::io_done`] when all are written;
//! - [`Outcome::Receive`]: the command carries a parameter list the SCSI
//!   layer must read itself (UNMAP, MODE SELECT, WRITE SAME's block); the
//!   session collects it and calls [`ScsiTarget::data_received`];
//! - [`Outcome::Io`]: the engine must do some I/O first (flush, unmap, write
//!   same); the session hands it over and calls [`ScsiTarget::io_done`] with
//!   the result.
//!
//! `io_done` and `data_received` return another `Outcome`, so commands chain:
//! a FUA WRITE answers `WriteToStore`, then `Io(Flush)` from `io_done`, then
//! `Done` from the second `io_done`. A failed write reaches `io_done` as an
//! error and must become a MEDIUM ERROR (or similar), never GOOD.
//!
//! The SCSI layer never sees iSCSI PDUs, sequence numbers or tags, and the
//! session never looks inside a CDB: the only bytes it reads there are none.
//! One `ScsiTarget` is passed by `&mut` into each session call, so the engine
//! decides whether it is per session or shared per target.

use bytes::Bytes;

/// SCSI status codes the session itself needs (SAM-5 §5.3).
pub mod status {
    pub const GOOD: u8 = 0x00;
    pub const CHECK_CONDITION: u8 = 0x02;
    pub const BUSY: u8 = 0x08;
    pub const TASK_SET_FULL: u8 = 0x28;
}

/// One SCSI command as the SCSI layer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command<'a> {
    /// The LUN field as sent (SAM-5 §4.7); see [`lun_index`].
    pub lun: u64,
    /// The CDB, extended by an Extended CDB AHS when one was sent.
    pub cdb: &'a [u8],
    /// Expected Data Transfer Length: what the initiator's buffer holds.
    pub expected_len: u32,
    /// The initiator expects data (R bit) / sends data (W bit).
    pub read: bool,
    pub write: bool,
    /// Task attribute: 0 untagged, 1 simple, 2 ordered, 3 head of queue, 4 ACA.
    pub attr: u8,
    /// The Initiator Task Tag: unique among the session's tasks in flight,
    /// so a SCSI layer can keep per-command state between its calls.
    pub tag: u32,
}

/// Bytes that travel to the initiator, by reference where possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    None,
    /// Small answers built in memory (INQUIRY, MODE SENSE, REPORT LUNS).
    Inline(Bytes),
    /// `len` bytes at `offset` of the backing store of LUN `lun`.
    Store {
        lun: u16,
        offset: u64,
        len: u32,
    },
}

impl Payload {
    pub fn len(&self) -> u64 {
        match self {
            Payload::None => 0,
            Payload::Inline(b) => b.len() as u64,
            Payload::Store { len, .. } => u64::from(*len),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The part `[from, from + len)` of this payload.
    pub fn slice(&self, from: u32, len: u32) -> Payload {
        match self {
            Payload::None => Payload::None,
            Payload::Inline(b) => {
                let start = (from as usize).min(b.len());
                let end = start.saturating_add(len as usize).min(b.len());
                Payload::Inline(b.slice(start..end))
            }
            Payload::Store { lun, offset, .. } => Payload::Store {
                lun: *lun,
                offset: offset.saturating_add(u64::from(from)),
                len,
            },
        }
    }
}

/// SCSI status and sense data (fixed or descriptor format, as built by the
/// SCSI layer).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScsiStatus {
    pub status: u8,
    pub sense: Vec<u8>,
}

impl ScsiStatus {
    pub fn good() -> ScsiStatus {
        ScsiStatus::default()
    }

    /// CHECK CONDITION with fixed-format sense (SPC-4 §4.5.3).
    pub fn check_condition(key: u8, asc: u8, ascq: u8) -> ScsiStatus {
        let mut sense = vec![0u8; 18];
        sense[0] = 0x70;
        sense[2] = key & 0x0f;
        sense[7] = 10;
        sense[12] = asc;
        sense[13] = ascq;
        ScsiStatus {
            status: status::CHECK_CONDITION,
            sense,
        }
    }
}

/// I/O the engine performs on a LUN's backing store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoRequest {
    /// Make earlier writes durable (fdatasync).
    Flush { lun: u16 },
    /// Deallocate byte ranges (hole punching where the store allows, else
    /// writing zeroes), as (offset, length) pairs.
    Unmap { lun: u16, ranges: Vec<(u64, u64)> },
    /// Fill `[offset, offset + len)` by repeating `pattern`.
    WriteSame {
        lun: u16,
        offset: u64,
        len: u64,
        pattern: Bytes,
    },
    /// Compare `[offset, offset + len)` with `expected` (VERIFY with
    /// BYTCHK; with `repeat`, `expected` is one block compared with every
    /// block). A difference completes as `Err(ErrorKind::InvalidData)`.
    Compare {
        lun: u16,
        offset: u64,
        len: u64,
        expected: Bytes,
        repeat: bool,
    },
    /// Write bytes the session had to copy (rare; normal writes go by
    /// reference, see [`super::session::StoreWrite`]).
    Write { lun: u16, offset: u64, data: Bytes },
}

/// How an engine I/O ended.
pub type IoResult = Result<(), std::io::ErrorKind>;

/// What a command needs next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send `data` (at most the Expected Data Transfer Length goes out; the
    /// rest is reported as overflow), then `status`.
    Done { data: Payload, status: ScsiStatus },
    /// Receive `len` bytes from the initiator into the store of `lun` at
    /// `offset`; [`ScsiTarget::io_done`] follows once all are written.
    /// When the command's Expected Data Transfer Length is smaller than
    /// `len`, only that many bytes arrive (and are reported as overflow);
    /// `io_done` sees `cmd.expected_len` and may answer accordingly.
    WriteToStore { lun: u16, offset: u64, len: u32 },
    /// Receive `len` bytes into memory; [`ScsiTarget::data_received`]
    /// follows. Bounded by [`MAX_RECEIVE`].
    Receive { len: u32 },
    /// Run this I/O; [`ScsiTarget::io_done`] follows with its result.
    Io(IoRequest),
}

impl Outcome {
    /// Status only, no data.
    pub fn status(status: ScsiStatus) -> Outcome {
        Outcome::Done {
            data: Payload::None,
            status,
        }
    }
}

/// Largest parameter list collected in memory for [`Outcome::Receive`].
/// Parameter lists are small (an UNMAP list of 4096 descriptors is 64 KiB);
/// the bound keeps a peer from making the session buffer a whole write.
pub const MAX_RECEIVE: u32 = 1 << 20;

/// Task management events the SCSI layer must know about (unit attentions,
/// reservations). Aborted commands need nothing: the session forgets them and
/// ignores their I/O completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetEvent {
    /// LOGICAL UNIT RESET of this LUN (raw LUN field).
    Lun(u64),
    /// TARGET WARM RESET.
    Target,
}

/// The SCSI layer, as the session drives it.
pub trait ScsiTarget {
    /// A new command, in CmdSN order.
    fn execute(&mut self, cmd: &Command<'_>) -> Outcome;

    /// The data of an [`Outcome::Receive`] arrived, all of it.
    fn data_received(&mut self, cmd: &Command<'_>, data: &[u8]) -> Outcome;

    /// The writes of an [`Outcome::WriteToStore`], or the I/O of an
    /// [`Outcome::Io`], finished with `result`.
    fn io_done(&mut self, cmd: &Command<'_>, result: IoResult) -> Outcome;

    /// Whether the LUN field names an existing logical unit (for task
    /// management responses).
    fn lun_exists(&self, lun: u64) -> bool;

    /// A reset happened (set unit attentions, drop reservations).
    fn reset(&mut self, event: ResetEvent);
}

/// The LUN number of a LUN field in peripheral (00b) or flat (01b)
/// addressing (SAM-5 §4.7.3, first level only); None for other methods.
pub fn lun_index(lun: u64) -> Option<u16> {
    let [b0, b1, rest @ ..] = lun.to_be_bytes();
    if rest.iter().any(|&b| b != 0) {
        return None;
    }
    match b0 >> 6 {
        0b00 if b0 == 0 => Some(u16::from(b1)),
        0b01 => Some(u16::from(b0 & 0x3f) << 8 | u16::from(b1)),
        _ => None,
    }
}

/// The LUN field for LUN number `index`: peripheral addressing below 256,
/// flat above (what REPORT LUNS should list).
pub fn lun_field(index: u16) -> u64 {
    let [hi, lo] = index.to_be_bytes();
    let b0 = if index < 256 { 0 } else { 0x40 | (hi & 0x3f) };
    u64::from_be_bytes([b0, lo, 0, 0, 0, 0, 0, 0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lun_addressing() {
        assert_eq!(lun_index(0), Some(0));
        assert_eq!(lun_index(0x0001_0000_0000_0000), Some(1));
        assert_eq!(lun_index(0x4101_0000_0000_0000), Some(0x101));
        assert_eq!(lun_index(0x8001_0000_0000_0000), None);
        assert_eq!(lun_index(0x0001_0000_0000_0001), None);
        for i in [0u16, 1, 255, 256, 16383] {
            assert_eq!(lun_index(lun_field(i)), Some(i));
        }
    }

    #[test]
    fn payload_slices() {
        let p = Payload::Inline(Bytes::from_static(b"0123456789"));
        assert_eq!(p.slice(8, 4), Payload::Inline(Bytes::from_static(b"89")));
        assert_eq!(p.slice(20, 4).len(), 0);
        let s = Payload::Store {
            lun: 1,
            offset: 4096,
            len: 65536,
        };
        assert_eq!(
            s.slice(512, 1024),
            Payload::Store {
                lun: 1,
                offset: 4608,
                len: 1024
            }
        );
    }

    #[test]
    fn fixed_sense() {
        let s = ScsiStatus::check_condition(0x07, 0x27, 0x00);
        assert_eq!(s.status, status::CHECK_CONDITION);
        assert_eq!((s.sense[2], s.sense[12], s.sense[13]), (7, 0x27, 0));
    }
}
