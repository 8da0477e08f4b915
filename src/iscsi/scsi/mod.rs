//! The SCSI command layer of the iSCSI target: SPC-4 primary commands and
//! SBC-3 block commands for direct-access logical units.
//!
//! - [`cdb`]: CDB decoding into [`cdb::Cdb`] (safe on any bytes).
//! - [`sense`]: status codes and fixed-format sense data.
//! - [`lu`]: one logical unit as a sans-IO executor returning
//!   [`lu::Outcome`]s: inline data, store ranges to read or write, flushes,
//!   deallocations, or CHECK CONDITION.
//! - [`inquiry`], [`mode`]: the INQUIRY and MODE SENSE/SELECT data.
//! - [`opcodes`]: REPORT SUPPORTED OPERATION CODES.
//! - [`target`]: LUN addressing, REPORT LUNS, unmapped LUNs.
//!
//! Nothing here touches files, sockets or the clock: the engine performs the
//! I/O an outcome names and the iSCSI session layer carries the data, status
//! and sense (RFC 7143 §11.4). See `lu` for the call order and for what is
//! not supported yet.

pub mod cdb;
pub mod inquiry;
pub mod lu;
pub mod mode;
pub mod opcodes;
pub mod sense;
pub mod target;

pub use cdb::{Cdb, Direction};
pub use lu::{AfterDataOut, Extent, LogicalUnit, LuConfig, NexusId, Outcome, Parameters, Transfer};
pub use sense::{Sense, SenseKey, Status};
pub use target::Target;
