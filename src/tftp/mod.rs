//! TFTP, the read service that hands firmware its first bytes.
//!
//! - [`wire`]: packet parse and encode (RFC 1350, RFC 2347).
//! - [`negotiate`]: options of a read request (RFC 2347, 2348, 2349, 7440).
//! - [`transfer`]: one transfer as a sans-IO state machine.
//! - [`path`]: turning a requested name into a path below the root.
//!
//! None of these touch sockets, files or the clock; the engine does.
//! Write requests are refused: dls serves, it does not collect.

pub mod negotiate;
pub mod path;
pub mod transfer;
pub mod wire;
