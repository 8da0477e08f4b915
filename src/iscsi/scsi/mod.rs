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
//!
//! ```
//! use dls::iscsi::scsi::target::encode_lun;
//! use dls::iscsi::scsi::{Direction, LogicalUnit, LuConfig, NexusId, Outcome, Target};
//!
//! let lu = LogicalUnit::new(LuConfig {
//!     target_iqn: "iqn.2026-01.example:disk0".into(),
//!     lun: 0,
//!     size_bytes: 1 << 20,
//!     read_only: false,
//!     unmap: true,
//! });
//! let mut target = Target::new(vec![lu]);
//! let (nexus, lun) = (NexusId(1), encode_lun(0));
//! let read10 = [0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0];
//!
//! // A new I_T nexus first meets the power-on unit attention.
//! let Outcome::Check(sense) = target.execute(nexus, lun, &read10) else { panic!() };
//! let sense_segment = sense.encode_with_length(); // the SCSI Response data segment
//! assert_eq!(sense_segment[2 + 12], 0x29);
//!
//! // Then: send bytes 0..4096 of the store as Data-In, status GOOD.
//! let outcome = target.execute(nexus, lun, &read10).with_edtl(4096);
//! assert_eq!(outcome.transfer().direction, Direction::In);
//! assert_eq!(outcome.transfer().len, 4096); // = EDTL: no residual
//! let Outcome::Read(extent) = outcome else { panic!() };
//! assert_eq!((extent.offset, extent.len), (0, 4096));
//! ```

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
