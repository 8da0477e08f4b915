//! iSCSI target protocol core (RFC 7143), sans-IO.
//!
//! - [`crc32c`]: the header and data digest.
//! - [`pdu`]: the 48-byte Basic Header Segment of every opcode.
//! - [`frame`]: PDU lengths on the stream, digests, padding.

pub mod backend;
pub mod chap;
pub mod config;
pub mod crc32c;
pub mod discovery;
pub mod frame;
pub mod login;
pub mod negotiate;
pub mod pdu;
pub mod serial;
pub mod session;
pub mod text;
