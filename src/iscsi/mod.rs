//! iSCSI target protocol core (RFC 7143), sans-IO: no sockets, no files, no
//! clock. Time comes in as `Instant`, randomness as bytes, and payload leaves
//! by reference so the engine chooses sendfile, mmap or pread.
//!
//! Layers, each using only those above it:
//! - [`crc32c`]: the header and data digest (RFC 7143 §13.1, RFC 3720 B.4).
//! - [`pdu`]: the 48-byte Basic Header Segment of every opcode (§11).
//! - [`frame`]: PDU lengths on the stream, digest checks, padding (§11.2).
//! - [`text`]: key=value text and its continuation (§6.1, §6.2).
//! - [`serial`]: serial number arithmetic for CmdSN and friends (RFC 1982).
//! - [`negotiate`]: operational keys, defaults and result functions (§13).
//! - [`chap`]: CHAP-MD5, one-way and mutual (§12.1.3).
//! - [`login`]: the login phase, consumed into [`login::Established`].
//! - [`backend`]: the [`backend::ScsiTarget`] trait the SCSI layer
//!   implements, and the I/O requests the engine runs.
//! - [`session`]: the full feature phase of one connection.
//! - [`discovery`]: SendTargets answers (§13.3, Appendix C).
//! - [`config`]: the `[iscsi]` section of the configuration file.
//!
//! The engine's call order: [`login::Login`] until
//! [`login::Step::FullFeature`], then [`session::Session`] (its module doc
//! lists the calls).
//!
//! Not supported yet:
//! - error recovery levels 1 and 2 (SNACK, retransmission, task
//!   reassignment); sessions with more than one connection; session
//!   reinstatement (a login with a non-zero TSIH is refused);
//! - bidirectional commands; AHS other than the extended CDB;
//! - commands arriving ahead of ExpCmdSN are dropped, not held;
//! - login responses longer than one PDU; operational key renegotiation in
//!   full feature phase; CHAP with algorithms other than MD5; CHAP on
//!   discovery sessions (they are open to every initiator, and SendTargets
//!   lists only the targets each initiator may log in to);
//! - asynchronous messages (e.g. to announce a LUN size change);
//! - a Logout is answered at once even with commands in flight.

pub mod adapter;
pub mod backend;
pub mod chap;
pub mod config;
pub mod crc32c;
pub mod discovery;
pub mod frame;
pub mod login;
pub mod negotiate;
pub mod pdu;
pub mod scsi;
pub mod serial;
pub mod session;
pub mod text;
