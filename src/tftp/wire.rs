//! TFTP packets on the wire: RFC 1350 with the option extension of RFC 2347.
//!
//! [`Packet::parse`] is safe on any bytes a peer sends: it checks lengths
//! once, borrows from the input and never panics. Unknown opcodes and error
//! codes are values ([`Packet::Unknown`], [`ErrorCode::Unknown`]), not parse
//! failures, so the caller can answer them. The `encode_*` functions append to
//! a caller-owned buffer so the hot path can reuse one allocation.

use std::fmt;

/// Opcodes of RFC 1350 section 5 and RFC 2347.
pub const OP_RRQ: u16 = 1;
pub const OP_WRQ: u16 = 2;
pub const OP_DATA: u16 = 3;
pub const OP_ACK: u16 = 4;
pub const OP_ERROR: u16 = 5;
pub const OP_OACK: u16 = 6;

/// Bytes before the payload of a DATA packet: opcode and block number.
pub const DATA_HEADER_LEN: usize = 4;

/// A parsed TFTP packet borrowing from the datagram it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    Rrq(Request<'a>),
    Wrq(Request<'a>),
    Data {
        block: u16,
        data: &'a [u8],
    },
    Ack {
        block: u16,
    },
    Error {
        code: ErrorCode,
        message: &'a [u8],
    },
    Oack {
        options: Vec<(&'a [u8], &'a [u8])>,
    },
    /// An opcode this server does not know; answered with ERROR 4.
    Unknown(u16),
}

/// RRQ/WRQ body: file name, mode and RFC 2347 options, all raw bytes.
///
/// Names stay bytes: a file name is not necessarily UTF-8 and must be looked
/// up exactly as sent (no decoding of `%2e` or similar).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    pub filename: &'a [u8],
    pub mode: &'a [u8],
    pub options: Vec<(&'a [u8], &'a [u8])>,
}

/// Why a datagram is not a TFTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than its opcode requires.
    Truncated,
    /// A string field (file name, mode, error text) lacks its NUL.
    Unterminated,
    /// DATA, ACK or ERROR with bytes past its end.
    TrailingBytes,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ParseError::Truncated => "truncated packet",
            ParseError::Unterminated => "string without NUL terminator",
            ParseError::TrailingBytes => "trailing bytes after packet",
        })
    }
}

/// ERROR codes, RFC 1350 appendix and RFC 2347 (code 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NotDefined,
    FileNotFound,
    AccessViolation,
    DiskFull,
    IllegalOperation,
    UnknownTransferId,
    FileExists,
    NoSuchUser,
    OptionRefused,
    Unknown(u16),
}

impl ErrorCode {
    pub fn from_u16(v: u16) -> ErrorCode {
        match v {
            0 => ErrorCode::NotDefined,
            1 => ErrorCode::FileNotFound,
            2 => ErrorCode::AccessViolation,
            3 => ErrorCode::DiskFull,
            4 => ErrorCode::IllegalOperation,
            5 => ErrorCode::UnknownTransferId,
            6 => ErrorCode::FileExists,
            7 => ErrorCode::NoSuchUser,
            8 => ErrorCode::OptionRefused,
            other => ErrorCode::Unknown(other),
        }
    }

    pub fn to_u16(self) -> u16 {
        match self {
            ErrorCode::NotDefined => 0,
            ErrorCode::FileNotFound => 1,
            ErrorCode::AccessViolation => 2,
            ErrorCode::DiskFull => 3,
            ErrorCode::IllegalOperation => 4,
            ErrorCode::UnknownTransferId => 5,
            ErrorCode::FileExists => 6,
            ErrorCode::NoSuchUser => 7,
            ErrorCode::OptionRefused => 8,
            ErrorCode::Unknown(v) => v,
        }
    }
}

impl<'a> Packet<'a> {
    /// Parses one datagram.
    pub fn parse(buf: &'a [u8]) -> Result<Packet<'a>, ParseError> {
        if buf.len() < 2 {
            return Err(ParseError::Truncated);
        }
        let opcode = u16::from_be_bytes([buf[0], buf[1]]);
        let body = &buf[2..];
        match opcode {
            OP_RRQ => Ok(Packet::Rrq(parse_request(body)?)),
            OP_WRQ => Ok(Packet::Wrq(parse_request(body)?)),
            OP_DATA => {
                let block = parse_u16(body)?;
                Ok(Packet::Data {
                    block,
                    data: &body[2..],
                })
            }
            OP_ACK => {
                let block = parse_u16(body)?;
                // Some stacks pad short frames; RFC 1350 gives ACK no room for
                // more, but padding is harmless and refusing it breaks boots.
                Ok(Packet::Ack { block })
            }
            OP_ERROR => {
                let code = ErrorCode::from_u16(parse_u16(body)?);
                // A missing NUL after the message is common enough (some
                // firmware omits it) that the text simply runs to the end.
                let rest = &body[2..];
                let message = match rest.iter().position(|&b| b == 0) {
                    Some(nul) => &rest[..nul],
                    None => rest,
                };
                Ok(Packet::Error { code, message })
            }
            OP_OACK => Ok(Packet::Oack {
                options: parse_options(body),
            }),
            other => Ok(Packet::Unknown(other)),
        }
    }
}

fn parse_u16(body: &[u8]) -> Result<u16, ParseError> {
    match body {
        [a, b, ..] => Ok(u16::from_be_bytes([*a, *b])),
        _ => Err(ParseError::Truncated),
    }
}

/// Splits off one NUL-terminated string.
fn take_cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..nul], &buf[nul + 1..]))
}

fn parse_request(body: &[u8]) -> Result<Request<'_>, ParseError> {
    let (filename, rest) = take_cstr(body).ok_or(ParseError::Unterminated)?;
    let (mode, rest) = take_cstr(rest).ok_or(ParseError::Unterminated)?;
    Ok(Request {
        filename,
        mode,
        options: parse_options(rest),
    })
}

/// Reads name/value pairs until the bytes run out.
///
/// Being liberal here is deliberate: several PXE ROMs pad the RRQ with extra
/// NULs or leave a dangling name, and refusing the request would stop a boot
/// over bytes that carry no meaning. An empty name or an incomplete pair ends
/// the list.
fn parse_options(mut rest: &[u8]) -> Vec<(&[u8], &[u8])> {
    let mut options = Vec::new();
    while let Some((name, after_name)) = take_cstr(rest) {
        if name.is_empty() {
            break;
        }
        let Some((value, after_value)) = take_cstr(after_name) else {
            break;
        };
        options.push((name, value));
        rest = after_value;
    }
    options
}

/// Appends a DATA header (the payload follows from the image).
pub fn encode_data_header(block: u16) -> [u8; DATA_HEADER_LEN] {
    let b = block.to_be_bytes();
    let op = OP_DATA.to_be_bytes();
    [op[0], op[1], b[0], b[1]]
}

pub fn encode_ack(out: &mut Vec<u8>, block: u16) {
    out.extend_from_slice(&OP_ACK.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
}

pub fn encode_error(out: &mut Vec<u8>, code: ErrorCode, message: &str) {
    out.extend_from_slice(&OP_ERROR.to_be_bytes());
    out.extend_from_slice(&code.to_u16().to_be_bytes());
    // A NUL inside the message would end it early on the peer; drop them.
    out.extend(message.bytes().filter(|&b| b != 0));
    out.push(0);
}

pub fn encode_oack(out: &mut Vec<u8>, options: &[(&str, String)]) {
    out.extend_from_slice(&OP_OACK.to_be_bytes());
    for (name, value) in options {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
}

/// Encodes a request; servers never send one, clients (tests, dls-bench) do.
pub fn encode_request(
    out: &mut Vec<u8>,
    opcode: u16,
    filename: &[u8],
    mode: &str,
    options: &[(&str, &str)],
) {
    out.extend_from_slice(&opcode.to_be_bytes());
    out.extend_from_slice(filename);
    out.push(0);
    out.extend_from_slice(mode.as_bytes());
    out.push(0);
    for (name, value) in options {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrq_with_options_round_trips() {
        let mut buf = Vec::new();
        encode_request(
            &mut buf,
            OP_RRQ,
            b"pxelinux.0",
            "octet",
            &[("blksize", "1432"), ("tsize", "0")],
        );
        assert_eq!(&buf[..2], &[0, 1]);
        let Packet::Rrq(req) = Packet::parse(&buf).unwrap() else {
            panic!()
        };
        assert_eq!(req.filename, b"pxelinux.0");
        assert_eq!(req.mode, b"octet");
        assert_eq!(
            req.options,
            vec![(&b"blksize"[..], &b"1432"[..]), (&b"tsize"[..], &b"0"[..])]
        );
    }

    #[test]
    fn ipxe_rrq_bytes() {
        // What iPXE sends: octet blksize=1432 tsize=0.
        let bytes = b"\x00\x01boot.ipxe\x00octet\x00blksize\x001432\x00tsize\x000\x00";
        let Packet::Rrq(req) = Packet::parse(bytes).unwrap() else {
            panic!()
        };
        assert_eq!(req.filename, b"boot.ipxe");
        assert_eq!(req.options.len(), 2);
    }

    #[test]
    fn padded_and_dangling_options_are_tolerated() {
        let bytes = b"\x00\x01f\x00octet\x00blksize\x00512\x00\x00\x00";
        let Packet::Rrq(req) = Packet::parse(bytes).unwrap() else {
            panic!()
        };
        assert_eq!(req.options.len(), 1);
        let bytes = b"\x00\x01f\x00octet\x00blksize\x00512\x00tsize";
        let Packet::Rrq(req) = Packet::parse(bytes).unwrap() else {
            panic!()
        };
        assert_eq!(req.options.len(), 1);
    }

    #[test]
    fn malformed_requests() {
        assert_eq!(Packet::parse(b""), Err(ParseError::Truncated));
        assert_eq!(Packet::parse(b"\x00"), Err(ParseError::Truncated));
        assert_eq!(
            Packet::parse(b"\x00\x01file"),
            Err(ParseError::Unterminated)
        );
        assert_eq!(
            Packet::parse(b"\x00\x01file\x00octet"),
            Err(ParseError::Unterminated)
        );
        assert_eq!(Packet::parse(b"\x00\x04\x00"), Err(ParseError::Truncated));
        assert_eq!(Packet::parse(b"\x00\x03"), Err(ParseError::Truncated));
    }

    #[test]
    fn non_utf8_filename_stays_bytes() {
        let bytes = b"\x00\x01ipxe.efi\xff\x00octet\x00";
        let Packet::Rrq(req) = Packet::parse(bytes).unwrap() else {
            panic!()
        };
        assert_eq!(req.filename, b"ipxe.efi\xff");
    }

    #[test]
    fn data_ack_error_oack() {
        assert_eq!(
            Packet::parse(b"\x00\x03\x12\x34abc").unwrap(),
            Packet::Data {
                block: 0x1234,
                data: b"abc"
            }
        );
        assert_eq!(
            Packet::parse(b"\x00\x04\xff\xff").unwrap(),
            Packet::Ack { block: 0xffff }
        );
        let mut buf = Vec::new();
        encode_error(
            &mut buf,
            ErrorCode::OptionRefused,
            "User aborted the transfer",
        );
        assert_eq!(
            Packet::parse(&buf).unwrap(),
            Packet::Error {
                code: ErrorCode::OptionRefused,
                message: b"User aborted the transfer"
            }
        );
        assert_eq!(
            Packet::parse(b"\x00\x05\x00\x08no nul").unwrap(),
            Packet::Error {
                code: ErrorCode::OptionRefused,
                message: b"no nul"
            }
        );
        let mut buf = Vec::new();
        encode_oack(&mut buf, &[("blksize", "1468".into())]);
        assert_eq!(buf, b"\x00\x06blksize\x001468\x00");
        assert_eq!(Packet::parse(b"\x00\x09").unwrap(), Packet::Unknown(9));
        assert_eq!(ErrorCode::from_u16(42), ErrorCode::Unknown(42));
        assert_eq!(encode_data_header(0x0102), [0, 3, 1, 2]);
    }
}
