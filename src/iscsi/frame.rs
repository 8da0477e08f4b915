//! Framing: how many bytes one PDU occupies on the TCP stream, digest
//! checking, and the digest and padding the sender appends (RFC 7143 §11.2).
//!
//! A PDU is BHS (48) + AHS + header digest + data + pad to 4 + data digest.
//! [`frame`] looks at the first 48 bytes of a buffer and says how long the
//! whole PDU is, so the engine can read exactly one PDU and no more. A
//! DataSegmentLength above what this side declared is an error value
//! ([`FrameError::DataTooLong`]), decided before any of it is read, so a peer
//! cannot make the engine buffer more than it agreed to.
//!
//! [`Pdu::parse`] then checks the digests and splits the PDU into header,
//! AHS and data, all borrowed. It never panics: every slice is cut at
//! offsets that [`frame`] checked against the buffer length.

use super::crc32c;
use super::pdu::{self, Header, BHS_LEN};

/// Length of one CRC32C digest.
pub const DIGEST_LEN: usize = 4;

/// Which digests are in force on a connection (RFC 7143 §13.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Digests {
    pub header: bool,
    pub data: bool,
}

/// Where the parts of one PDU lie in its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub ahs_len: usize,
    pub data_len: usize,
    pub header_digest: bool,
    pub data_digest: bool,
}

impl Layout {
    /// Offset of the data segment.
    pub fn data_start(&self) -> usize {
        BHS_LEN + self.ahs_len + digest_len(self.header_digest)
    }

    /// Bytes of the whole PDU on the wire.
    pub fn total(&self) -> usize {
        let data = if self.data_len == 0 {
            // No padding and no data digest when there is no data (§11.2.3).
            0
        } else {
            padded(self.data_len) + digest_len(self.data_digest)
        };
        self.data_start() + data
    }
}

fn digest_len(on: bool) -> usize {
    if on {
        DIGEST_LEN
    } else {
        0
    }
}

/// `len` rounded up to a multiple of 4.
pub fn padded(len: usize) -> usize {
    len.div_ceil(4) * 4
}

/// Zero bytes that follow a data segment of `len` bytes.
pub fn pad_len(len: usize) -> usize {
    padded(len) - len
}

/// What [`frame`] found in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Fewer bytes than the next PDU needs; read until `total` are buffered.
    Incomplete { total: usize },
    /// The buffer starts with a whole PDU of this layout.
    Complete(Layout),
}

/// Why the bytes cannot be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The DataSegmentLength exceeds what this side declared as its
    /// MaxRecvDataSegmentLength (a protocol error, RFC 7143 §13.12).
    DataTooLong {
        len: u32,
        max: u32,
        bhs: [u8; BHS_LEN],
    },
}

/// Says how long the PDU at the start of `buf` is.
pub fn frame(buf: &[u8], digests: Digests, max_data: u32) -> Result<Frame, FrameError> {
    let Some(bhs) = buf.first_chunk::<BHS_LEN>() else {
        return Ok(Frame::Incomplete { total: BHS_LEN });
    };
    let len = pdu::data_len(bhs);
    if len > max_data {
        return Err(FrameError::DataTooLong {
            len,
            max: max_data,
            bhs: *bhs,
        });
    }
    let layout = Layout {
        ahs_len: pdu::ahs_len(bhs),
        data_len: len as usize,
        header_digest: digests.header,
        data_digest: digests.data,
    };
    if buf.len() < layout.total() {
        Ok(Frame::Incomplete {
            total: layout.total(),
        })
    } else {
        Ok(Frame::Complete(layout))
    }
}

/// One received PDU, borrowed from the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu<'a> {
    pub header: Header,
    /// The raw BHS, for Reject data and logs.
    pub bhs: &'a [u8; BHS_LEN],
    pub ahs: &'a [u8],
    pub data: &'a [u8],
}

/// Why a framed PDU is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PduError {
    /// See [`FrameError`].
    Frame(FrameError),
    /// Fewer bytes than the PDU needs.
    Truncated,
    /// The header digest does not match: nothing in the header can be
    /// trusted, not even its lengths; at ERL 0 the connection must go
    /// (RFC 7143 §7.8).
    HeaderDigest,
    /// The data digest does not match; the header is sound and is returned
    /// for the Reject the target owes (RFC 7143 §7.8, reason 0x02).
    DataDigest { bhs: [u8; BHS_LEN] },
}

impl<'a> Pdu<'a> {
    /// Parses the PDU at the start of `buf`; returns it and its length.
    pub fn parse(
        buf: &'a [u8],
        digests: Digests,
        max_data: u32,
    ) -> Result<(Pdu<'a>, usize), PduError> {
        let layout = match frame(buf, digests, max_data) {
            Ok(Frame::Complete(layout)) => layout,
            Ok(Frame::Incomplete { .. }) => return Err(PduError::Truncated),
            Err(e) => return Err(PduError::Frame(e)),
        };
        let Some(bhs) = buf.first_chunk::<BHS_LEN>() else {
            return Err(PduError::Truncated);
        };
        let total = layout.total();
        let bytes = buf.get(..total).ok_or(PduError::Truncated)?;
        let header_end = BHS_LEN + layout.ahs_len;
        let ahs = bytes.get(BHS_LEN..header_end).ok_or(PduError::Truncated)?;
        if layout.header_digest {
            let covered = bytes.get(..header_end).ok_or(PduError::Truncated)?;
            if !digest_matches(covered, bytes.get(header_end..header_end + DIGEST_LEN)) {
                return Err(PduError::HeaderDigest);
            }
        }
        let start = layout.data_start();
        let data = bytes
            .get(start..start + layout.data_len)
            .ok_or(PduError::Truncated)?;
        if layout.data_digest && layout.data_len > 0 {
            let end = start + padded(layout.data_len);
            let covered = bytes.get(start..end).ok_or(PduError::Truncated)?;
            if !digest_matches(covered, bytes.get(end..end + DIGEST_LEN)) {
                return Err(PduError::DataDigest { bhs: *bhs });
            }
        }
        let pdu = Pdu {
            header: Header::parse(bhs),
            bhs,
            ahs,
            data,
        };
        Ok((pdu, total))
    }
}

fn digest_matches(covered: &[u8], digest: Option<&[u8]>) -> bool {
    match digest.and_then(|d| d.first_chunk::<DIGEST_LEN>()) {
        Some(d) => crc32c::from_wire(*d) == crc32c::checksum(covered),
        None => false,
    }
}

/// A header ready to send: the BHS followed by its digest when negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderBytes {
    buf: [u8; BHS_LEN + DIGEST_LEN],
    len: usize,
}

impl HeaderBytes {
    /// Wraps an encoded BHS (no AHS: the target never sends one).
    pub fn new(bhs: [u8; BHS_LEN], digests: Digests) -> HeaderBytes {
        let mut buf = [0u8; BHS_LEN + DIGEST_LEN];
        buf[..BHS_LEN].copy_from_slice(&bhs);
        let mut len = BHS_LEN;
        if digests.header {
            buf[BHS_LEN..].copy_from_slice(&crc32c::to_wire(crc32c::checksum(&bhs)));
            len += DIGEST_LEN;
        }
        HeaderBytes { buf, len }
    }

    pub fn as_slice(&self) -> &[u8] {
        // len is BHS_LEN or BHS_LEN + DIGEST_LEN, both within buf.
        &self.buf[..self.len]
    }

    /// The BHS alone.
    pub fn bhs(&self) -> [u8; BHS_LEN] {
        let mut b = [0u8; BHS_LEN];
        b.copy_from_slice(&self.buf[..BHS_LEN]);
        b
    }
}

/// The data digest of a segment given as consecutive pieces, padding
/// included (RFC 7143 §11.2.3: the digest covers data and pad).
pub fn data_digest<'b>(pieces: impl IntoIterator<Item = &'b [u8]>) -> [u8; DIGEST_LEN] {
    let mut crc = 0;
    let mut len = 0;
    for piece in pieces {
        crc = crc32c::extend(crc, piece);
        len += piece.len();
    }
    crc = crc32c::extend(crc, &[0u8; 3][..pad_len(len)]);
    crc32c::to_wire(crc)
}

/// Encodes a whole PDU with inline data into `out` (tests, login and small
/// responses; bulk data goes by reference, see the session module).
pub fn encode_pdu(out: &mut Vec<u8>, bhs: [u8; BHS_LEN], data: &[u8], digests: Digests) {
    out.extend_from_slice(HeaderBytes::new(bhs, digests).as_slice());
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(data);
    out.extend_from_slice(&[0u8; 3][..pad_len(data.len())]);
    if digests.data {
        out.extend_from_slice(&data_digest([data]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iscsi::pdu::NopOut;

    const BOTH: Digests = Digests {
        header: true,
        data: true,
    };

    fn nop(data: &[u8], digests: Digests) -> Vec<u8> {
        let h = Header::NopOut(NopOut {
            immediate: true,
            itt: 0x10,
            ttt: pdu::RESERVED_TAG,
            ..NopOut::default()
        });
        let mut out = Vec::new();
        encode_pdu(&mut out, h.encode(0, data.len() as u32), data, digests);
        out
    }

    #[test]
    fn lengths_with_and_without_digests() {
        let bytes = nop(b"0123456789abcdef", Digests::default());
        assert_eq!(bytes.len(), 64);
        assert_eq!(
            frame(&bytes[..10], Digests::default(), 8192),
            Ok(Frame::Incomplete { total: 48 })
        );
        assert_eq!(
            frame(&bytes[..50], Digests::default(), 8192),
            Ok(Frame::Incomplete { total: 64 })
        );
        let both = nop(b"abcde", BOTH);
        // 48 + 4 + 5 + 3 pad + 4.
        assert_eq!(both.len(), 64);
        let (pdu, used) = Pdu::parse(&both, BOTH, 8192).unwrap();
        assert_eq!(used, 64);
        assert_eq!(pdu.data, b"abcde");
    }

    #[test]
    fn no_data_means_no_data_digest() {
        let bytes = nop(b"", BOTH);
        assert_eq!(bytes.len(), 52);
        assert!(Pdu::parse(&bytes, BOTH, 8192).is_ok());
    }

    #[test]
    fn bc_21_2_digest_covers_data_and_pad() {
        let data = [0x5au8; 37];
        let bytes = nop(&data, BOTH);
        assert_eq!(bytes.len(), 48 + 4 + 40 + 4);
        let mut padded_data = data.to_vec();
        padded_data.extend_from_slice(&[0, 0, 0]);
        let want = crc32c::to_wire(crc32c::checksum(&padded_data));
        assert_eq!(&bytes[92..96], &want);
        assert_eq!(data_digest([&data[..10], &data[10..]]), want);
        let even = [0x5au8; 36];
        assert_eq!(
            data_digest([&even[..]]),
            crc32c::to_wire(crc32c::checksum(&even))
        );
    }

    #[test]
    fn corrupt_digests_are_values() {
        let mut bytes = nop(b"abcd", BOTH);
        bytes[50] ^= 1;
        assert_eq!(Pdu::parse(&bytes, BOTH, 8192), Err(PduError::HeaderDigest));
        let mut bytes = nop(b"abcd", BOTH);
        bytes[53] ^= 1;
        assert!(matches!(
            Pdu::parse(&bytes, BOTH, 8192),
            Err(PduError::DataDigest { .. })
        ));
    }

    #[test]
    fn oversized_data_segment_is_refused_before_reading() {
        let mut bytes = nop(b"", Digests::default());
        bytes[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            frame(&bytes, Digests::default(), 8192),
            Err(FrameError::DataTooLong {
                len: 0x00ff_ffff,
                max: 8192,
                ..
            })
        ));
    }

    #[test]
    fn ahs_is_framed_and_covered_by_header_digest() {
        let mut bhs = Header::NopOut(NopOut::default()).encode(8, 0);
        bhs[4] = 2;
        let mut bytes = bhs.to_vec();
        bytes.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let crc = crc32c::checksum(&bytes);
        bytes.extend_from_slice(&crc32c::to_wire(crc));
        let digests = Digests {
            header: true,
            data: false,
        };
        let (pdu, used) = Pdu::parse(&bytes, digests, 0).unwrap();
        assert_eq!(used, 60);
        assert_eq!(pdu.ahs, &[1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn truncated_input_never_panics() {
        let bytes = nop(b"0123456789", BOTH);
        for cut in 0..bytes.len() {
            assert!(Pdu::parse(&bytes[..cut], BOTH, 8192).is_err());
        }
    }
}
