//! One SCSI task inside a session: collecting its Data-Out (immediate,
//! unsolicited, solicited by R2T) and streaming its Data-In (RFC 7143
//! §4.2.5, §11.7, §11.8, §13.10, §13.11, §13.13, §13.14, §13.17).
//!
//! Data must arrive in order (DataPDUInOrder and DataSequenceInOrder are
//! always Yes here), so the received data is one contiguous prefix and one
//! offset says how far it reaches. Bytes past what the SCSI layer asked for
//! (an initiator whose EDTL exceeds the command's transfer length) are
//! accepted and discarded, and reported as residual.

use bytes::Bytes;

use crate::iscsi::backend::{Command, Payload, ScsiStatus};
use crate::iscsi::pdu::{RejectReason, RESERVED_TAG};

/// A command between its SCSI Command PDU and its status.
#[derive(Debug)]
pub(super) struct Task {
    pub itt: u32,
    pub lun: u64,
    pub cdb: Box<[u8]>,
    pub expected_len: u32,
    pub read: bool,
    pub write: bool,
    pub attr: u8,
    /// Bytes the SCSI layer asked to move, for the residual (§11.4.5).
    pub transfer_len: u64,
    /// Data-In PDUs and R2Ts sent so far: DataSN, R2TSN and ExpDataSN.
    pub data_sn: u32,
    pub phase: Phase,
}

#[derive(Debug)]
pub(super) enum Phase {
    /// Just created; the SCSI layer has not answered yet.
    New,
    Receiving(Inbound),
    /// Waiting for one I/O the engine runs.
    Io,
    Sending(Outbound),
}

impl Task {
    pub fn command(&self) -> Command<'_> {
        Command {
            lun: self.lun,
            cdb: &self.cdb,
            expected_len: self.expected_len,
            read: self.read,
            write: self.write,
            attr: self.attr,
            tag: self.itt,
        }
    }
}

/// Where received data goes.
#[derive(Debug)]
pub(super) enum Sink {
    Store { lun: u16, offset: u64 },
    Buffer(Vec<u8>),
}

/// An R2T sent and not yet satisfied.
#[derive(Debug, Clone, Copy)]
pub(super) struct R2tOut {
    pub ttt: u32,
    pub end: u32,
    /// DataSN the next Data-Out of this R2T's sequence must carry.
    pub data_sn: u32,
}

/// Data-Out collection for one write.
#[derive(Debug)]
pub(super) struct Inbound {
    pub sink: Sink,
    /// Bytes kept: the SCSI layer's length, capped by EDTL.
    pub want: u32,
    /// Contiguous bytes received from offset 0.
    pub received: u32,
    /// Unsolicited data (immediate or TTT 0xffffffff) may still come.
    pub unsolicited_open: bool,
    /// Where unsolicited data must end: min(FirstBurstLength, EDTL).
    pub unsolicited_limit: u32,
    /// Offset the next R2T asks for.
    pub next_r2t: u32,
    pub r2ts: Vec<R2tOut>,
    /// DataSN the next unsolicited Data-Out must carry (immediate data has
    /// none, so the first Data-Out is 0 either way).
    pub unsolicited_data_sn: u32,
    /// Store writes handed to the engine and not yet completed.
    pub writes_pending: u32,
    pub write_error: Option<std::io::ErrorKind>,
}

/// A piece of accepted data the caller must store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Piece {
    pub lun: u16,
    pub store_offset: u64,
    /// Range within the PDU's data segment.
    pub range: std::ops::Range<usize>,
}

impl Inbound {
    pub fn new(sink: Sink, want: u32, unsolicited_limit: u32) -> Inbound {
        Inbound {
            sink,
            want,
            received: 0,
            unsolicited_open: true,
            unsolicited_limit,
            next_r2t: 0,
            r2ts: Vec::new(),
            unsolicited_data_sn: 0,
            writes_pending: 0,
            write_error: None,
        }
    }

    /// No more unsolicited data; solicit the rest from here on.
    pub fn close_unsolicited(&mut self) {
        if self.unsolicited_open {
            self.unsolicited_open = false;
            self.next_r2t = self.received;
        }
    }

    /// All data in, all writes done.
    pub fn complete(&self) -> bool {
        !self.unsolicited_open
            && self.received >= self.want
            && self.r2ts.is_empty()
            && self.writes_pending == 0
    }

    /// Checks and counts the DataSN of a Data-Out: each sequence (the
    /// unsolicited one, and one per R2T) numbers its PDUs from 0 up
    /// (RFC 7143 §11.7.5). A gap, a repeat or a reversal is a protocol
    /// error; at ERL 0 the connection ends.
    pub fn check_data_sn(&mut self, ttt: u32, data_sn: u32) -> Result<(), RejectReason> {
        let next = if ttt == RESERVED_TAG {
            &mut self.unsolicited_data_sn
        } else {
            match self.r2ts.iter_mut().find(|r| r.ttt == ttt) {
                Some(r) => &mut r.data_sn,
                None => return Err(RejectReason::InvalidPduField),
            }
        };
        if data_sn != *next {
            return Err(RejectReason::ProtocolError);
        }
        *next = next.wrapping_add(1);
        Ok(())
    }

    /// Accepts `data` at `offset`; returns the part to write to the store.
    ///
    /// `expected_len` is the command's EDTL; `ttt` is RESERVED_TAG for
    /// unsolicited data.
    pub fn accept(
        &mut self,
        offset: u32,
        data: &[u8],
        ttt: u32,
        final_bit: bool,
        expected_len: u32,
    ) -> Result<Option<Piece>, RejectReason> {
        let len = u32::try_from(data.len()).map_err(|_| RejectReason::ProtocolError)?;
        let end = offset.checked_add(len).ok_or(RejectReason::ProtocolError)?;
        if end > expected_len || offset != self.received {
            return Err(RejectReason::ProtocolError);
        }
        if ttt == RESERVED_TAG {
            if !self.unsolicited_open || end > self.unsolicited_limit {
                return Err(RejectReason::ProtocolError);
            }
        } else {
            let at = self.r2ts.iter().position(|r| r.ttt == ttt);
            let r2t = at.and_then(|i| self.r2ts.get(i).copied());
            match (at, r2t) {
                (Some(i), Some(r)) if end <= r.end => {
                    if end == r.end {
                        self.r2ts.remove(i);
                    }
                }
                (Some(_), Some(_)) => return Err(RejectReason::ProtocolError),
                _ => return Err(RejectReason::InvalidPduField),
            }
        }
        self.received = end;
        if ttt == RESERVED_TAG && (final_bit || end >= self.unsolicited_limit) {
            self.close_unsolicited();
        }
        Ok(self.keep(offset, data))
    }

    /// Keeps the part of `data` below `want`.
    fn keep(&mut self, offset: u32, data: &[u8]) -> Option<Piece> {
        let keep_end = self.want.min(offset.saturating_add(data.len() as u32));
        if offset >= keep_end {
            return None;
        }
        let range = 0..(keep_end - offset) as usize;
        match &mut self.sink {
            Sink::Store { lun, offset: base } => Some(Piece {
                lun: *lun,
                store_offset: base.saturating_add(u64::from(offset)),
                range,
            }),
            Sink::Buffer(buf) => {
                buf.extend_from_slice(data.get(range).unwrap_or_default());
                None
            }
        }
    }

    /// The next R2T to send, if the window allows: (offset, length).
    pub fn next_r2t(
        &mut self,
        max_outstanding: u16,
        max_burst: u32,
        ttt: u32,
    ) -> Option<(u32, u32)> {
        let room = self.r2ts.len() < usize::from(max_outstanding.max(1));
        if self.unsolicited_open || !room || self.next_r2t >= self.want {
            return None;
        }
        let offset = self.next_r2t;
        let len = (self.want - offset).min(max_burst.max(1));
        self.next_r2t = offset + len;
        self.r2ts.push(R2tOut {
            ttt,
            end: offset + len,
            data_sn: 0,
        });
        Some((offset, len))
    }
}

/// Residual of a transfer (§11.4.5.1): under- or overflow against EDTL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Residual {
    pub overflow: bool,
    pub underflow: bool,
    pub count: u32,
}

impl Residual {
    pub fn new(expected: u32, actual: u64) -> Residual {
        let expected64 = u64::from(expected);
        if actual < expected64 {
            Residual {
                overflow: false,
                underflow: true,
                count: (expected64 - actual) as u32,
            }
        } else if actual > expected64 {
            Residual {
                overflow: true,
                underflow: false,
                count: u32::try_from(actual - expected64).unwrap_or(u32::MAX),
            }
        } else {
            Residual::default()
        }
    }
}

/// Data-In still to send for one read, and the status after it.
#[derive(Debug)]
pub(super) struct Outbound {
    pub payload: Payload,
    /// Bytes to send: the payload capped by EDTL.
    pub len: u32,
    pub sent: u32,
    /// Bytes sent in the current Data-In sequence (bounded by MaxBurstLength).
    pub burst: u32,
    pub status: ScsiStatus,
    pub residual: Residual,
}

/// One Data-In PDU's worth, as [`Outbound::next`] computes it.
#[derive(Debug)]
pub(super) struct Chunk {
    pub offset: u32,
    pub payload: Payload,
    pub final_bit: bool,
    /// The last PDU of the command.
    pub last: bool,
}

impl Outbound {
    /// The next Data-In segment, at most `mrdsl` bytes, ending a sequence at
    /// `max_burst` bytes (§13.13).
    pub fn next(&mut self, mrdsl: u32, max_burst: u32) -> Chunk {
        let max_burst = max_burst.max(1);
        let len = mrdsl
            .max(1)
            .min(self.len - self.sent)
            .min(max_burst - self.burst);
        let offset = self.sent;
        self.sent += len;
        self.burst += len;
        let last = self.sent >= self.len;
        let final_bit = last || self.burst >= max_burst;
        if final_bit {
            self.burst = 0;
        }
        Chunk {
            offset,
            payload: self.payload.slice(offset, len),
            final_bit,
            last,
        }
    }
}

/// The data segment of a SCSI Response: SenseLength and sense (§11.4.7).
pub(super) fn sense_segment(sense: &[u8]) -> Bytes {
    if sense.is_empty() {
        return Bytes::new();
    }
    let len = sense.len().min(usize::from(u16::MAX) - 2);
    let mut seg = Vec::with_capacity(len + 2);
    seg.extend_from_slice(&(len as u16).to_be_bytes());
    seg.extend_from_slice(sense.get(..len).unwrap_or_default());
    Bytes::from(seg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Sink {
        Sink::Store {
            lun: 0,
            offset: 1 << 20,
        }
    }

    #[test]
    fn residuals() {
        assert_eq!(
            Residual::new(512, 16),
            Residual {
                overflow: false,
                underflow: true,
                count: 496
            }
        );
        assert_eq!(Residual::new(16, 16), Residual::default());
        assert_eq!(
            Residual::new(8, 16),
            Residual {
                overflow: true,
                underflow: false,
                count: 8
            }
        );
    }

    #[test]
    fn unsolicited_then_solicited() {
        // EDTL 20000, FirstBurst 8192, 4096 immediate, then 4096 unsolicited.
        let mut i = Inbound::new(store(), 20000, 8192);
        let p = i
            .accept(0, &[0; 4096], RESERVED_TAG, false, 20000)
            .unwrap()
            .unwrap();
        assert_eq!((p.store_offset, p.range), (1 << 20, 0..4096));
        assert!(i.unsolicited_open);
        assert_eq!(i.next_r2t(1, 65536, 1), None);
        i.accept(4096, &[0; 4096], RESERVED_TAG, true, 20000)
            .unwrap();
        assert!(!i.unsolicited_open);
        assert_eq!(i.next_r2t(1, 8000, 1), Some((8192, 8000)));
        assert_eq!(i.next_r2t(1, 8000, 2), None, "MaxOutstandingR2T=1");
        assert_eq!(
            i.accept(8192, &[0; 10], 9, false, 20000),
            Err(RejectReason::InvalidPduField)
        );
        assert_eq!(
            i.accept(8000, &[0; 10], 1, false, 20000),
            Err(RejectReason::ProtocolError)
        );
        i.accept(8192, &[0; 8000], 1, true, 20000).unwrap();
        assert_eq!(i.next_r2t(1, 8000, 2), Some((16192, 3808)));
        i.accept(16192, &[0; 3808], 2, true, 20000).unwrap();
        assert!(i.complete());
    }

    #[test]
    fn data_beyond_want_is_discarded() {
        let mut i = Inbound::new(Sink::Buffer(Vec::new()), 6, 16);
        assert_eq!(i.accept(0, b"0123456789", RESERVED_TAG, true, 16), Ok(None));
        let Sink::Buffer(b) = &i.sink else { panic!() };
        assert_eq!(b, b"012345");
        assert!(i.complete());
        assert_eq!(
            i.accept(10, b"x", RESERVED_TAG, true, 16),
            Err(RejectReason::ProtocolError)
        );
    }

    #[test]
    fn data_in_chunks() {
        let mut o = Outbound {
            payload: Payload::Store {
                lun: 0,
                offset: 0,
                len: 65536,
            },
            len: 65536,
            sent: 0,
            burst: 0,
            status: ScsiStatus::good(),
            residual: Residual::default(),
        };
        let mut finals = 0;
        for n in 0..16 {
            let c = o.next(4096, 16384);
            assert_eq!((c.offset, c.payload.len()), (n * 4096, 4096));
            finals += u32::from(c.final_bit);
            assert_eq!(c.last, n == 15);
        }
        assert_eq!(finals, 4);
        assert_eq!(sense_segment(&[0x70, 0]).as_ref(), &[0, 2, 0x70, 0]);
    }
}
