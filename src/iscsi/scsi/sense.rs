//! Status codes and fixed-format sense data (SPC-4 §4.5.3, §4.5.6; SAM-5 §5.3).
//!
//! A [`Sense`] is what the target owes the initiator when a command ends in
//! CHECK CONDITION: a sense key, an additional sense code (ASC) and its
//! qualifier (ASCQ), optionally the INFORMATION field and a field pointer
//! (SPC-4 §4.5.2.4.2) naming the CDB or parameter-list byte that was wrong.
//! [`Sense::encode`] writes the 18-byte fixed format (response code 70h); the
//! iSCSI layer puts it behind the two-byte SenseLength of RFC 7143 §11.4.7.2.
//!
//! Not done: descriptor-format sense (D_SENSE stays 0 in the control mode
//! page, and REQUEST SENSE with DESC=1 is refused), deferred errors (71h).

use std::fmt;

/// SCSI status byte (SAM-5 §5.3.1), the part of the response every command gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Good,
    CheckCondition,
    ConditionMet,
    Busy,
    ReservationConflict,
    TaskSetFull,
    AcaActive,
    TaskAborted,
}

impl Status {
    pub fn to_u8(self) -> u8 {
        match self {
            Status::Good => 0x00,
            Status::CheckCondition => 0x02,
            Status::ConditionMet => 0x04,
            Status::Busy => 0x08,
            Status::ReservationConflict => 0x18,
            Status::TaskSetFull => 0x28,
            Status::AcaActive => 0x30,
            Status::TaskAborted => 0x40,
        }
    }
}

/// Sense keys (SPC-4 §4.5.6, table 45).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenseKey {
    NoSense,
    RecoveredError,
    NotReady,
    MediumError,
    HardwareError,
    IllegalRequest,
    UnitAttention,
    DataProtect,
    BlankCheck,
    AbortedCommand,
    Miscompare,
    /// A key this module never produces, kept so decoding is total.
    Other(u8),
}

impl SenseKey {
    pub fn to_u8(self) -> u8 {
        match self {
            SenseKey::NoSense => 0x0,
            SenseKey::RecoveredError => 0x1,
            SenseKey::NotReady => 0x2,
            SenseKey::MediumError => 0x3,
            SenseKey::HardwareError => 0x4,
            SenseKey::IllegalRequest => 0x5,
            SenseKey::UnitAttention => 0x6,
            SenseKey::DataProtect => 0x7,
            SenseKey::BlankCheck => 0x8,
            SenseKey::AbortedCommand => 0xb,
            SenseKey::Miscompare => 0xe,
            SenseKey::Other(k) => k & 0x0f,
        }
    }

    pub fn from_u8(v: u8) -> SenseKey {
        match v & 0x0f {
            0x0 => SenseKey::NoSense,
            0x1 => SenseKey::RecoveredError,
            0x2 => SenseKey::NotReady,
            0x3 => SenseKey::MediumError,
            0x4 => SenseKey::HardwareError,
            0x5 => SenseKey::IllegalRequest,
            0x6 => SenseKey::UnitAttention,
            0x7 => SenseKey::DataProtect,
            0x8 => SenseKey::BlankCheck,
            0xb => SenseKey::AbortedCommand,
            0xe => SenseKey::Miscompare,
            k => SenseKey::Other(k),
        }
    }
}

/// Additional sense code and qualifier pairs used here (SPC-4 Annex D).
pub mod asc {
    /// (ASC, ASCQ).
    pub type Code = (u8, u8);

    pub const NO_ADDITIONAL_SENSE: Code = (0x00, 0x00);
    pub const WRITE_ERROR: Code = (0x0c, 0x00);
    pub const UNRECOVERED_READ_ERROR: Code = (0x11, 0x00);
    pub const PARAMETER_LIST_LENGTH_ERROR: Code = (0x1a, 0x00);
    pub const MISCOMPARE_DURING_VERIFY: Code = (0x1d, 0x00);
    pub const INVALID_COMMAND_OPERATION_CODE: Code = (0x20, 0x00);
    pub const LBA_OUT_OF_RANGE: Code = (0x21, 0x00);
    pub const INVALID_FIELD_IN_CDB: Code = (0x24, 0x00);
    pub const LOGICAL_UNIT_NOT_SUPPORTED: Code = (0x25, 0x00);
    pub const INVALID_FIELD_IN_PARAMETER_LIST: Code = (0x26, 0x00);
    pub const WRITE_PROTECTED: Code = (0x27, 0x00);
    pub const POWER_ON_RESET: Code = (0x29, 0x00);
    pub const MODE_PARAMETERS_CHANGED: Code = (0x2a, 0x01);
    pub const CAPACITY_DATA_HAS_CHANGED: Code = (0x2a, 0x09);
    pub const SAVING_PARAMETERS_NOT_SUPPORTED: Code = (0x39, 0x00);
    pub const REPORTED_LUNS_DATA_HAS_CHANGED: Code = (0x3f, 0x0e);
    pub const LOGICAL_UNIT_NOT_READY_INIT_REQUIRED: Code = (0x04, 0x02);
}

/// Length of fixed-format sense data as [`Sense::encode`] writes it.
pub const FIXED_SENSE_LEN: usize = 18;

/// Where in the CDB or parameter list the offending field is (SPC-4 §4.5.2.4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldPointer {
    /// True for a CDB byte, false for a parameter-list byte (the C/D bit).
    pub in_cdb: bool,
    /// Byte offset of the field.
    pub byte: u16,
    /// The bit within that byte, when the field is narrower than a byte.
    pub bit: Option<u8>,
}

/// Sense data for one CHECK CONDITION, a value the target owes the initiator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    pub key: SenseKey,
    pub asc: u8,
    pub ascq: u8,
    /// The INFORMATION field (VALID bit set when present): for MISCOMPARE the
    /// offset of the first differing byte (SBC-3 §5.24).
    pub information: Option<u32>,
    pub field: Option<FieldPointer>,
}

impl Sense {
    pub const fn new(key: SenseKey, code: asc::Code) -> Sense {
        Sense {
            key,
            asc: code.0,
            ascq: code.1,
            information: None,
            field: None,
        }
    }

    /// "No sense": what REQUEST SENSE returns when nothing is pending.
    pub const fn no_sense() -> Sense {
        Sense::new(SenseKey::NoSense, asc::NO_ADDITIONAL_SENSE)
    }

    pub const fn invalid_opcode() -> Sense {
        Sense::new(
            SenseKey::IllegalRequest,
            asc::INVALID_COMMAND_OPERATION_CODE,
        )
    }

    /// INVALID FIELD IN CDB, pointing at `byte` (and `bit`, if narrower).
    pub const fn invalid_field_in_cdb(byte: u16, bit: Option<u8>) -> Sense {
        let mut s = Sense::new(SenseKey::IllegalRequest, asc::INVALID_FIELD_IN_CDB);
        s.field = Some(FieldPointer {
            in_cdb: true,
            byte,
            bit,
        });
        s
    }

    /// INVALID FIELD IN PARAMETER LIST, pointing at `byte` of the list.
    pub const fn invalid_field_in_parameter_list(byte: u16) -> Sense {
        let mut s = Sense::new(
            SenseKey::IllegalRequest,
            asc::INVALID_FIELD_IN_PARAMETER_LIST,
        );
        s.field = Some(FieldPointer {
            in_cdb: false,
            byte,
            bit: None,
        });
        s
    }

    pub const fn lba_out_of_range() -> Sense {
        Sense::new(SenseKey::IllegalRequest, asc::LBA_OUT_OF_RANGE)
    }

    pub const fn lun_not_supported() -> Sense {
        Sense::new(SenseKey::IllegalRequest, asc::LOGICAL_UNIT_NOT_SUPPORTED)
    }

    pub const fn parameter_list_length_error() -> Sense {
        Sense::new(SenseKey::IllegalRequest, asc::PARAMETER_LIST_LENGTH_ERROR)
    }

    pub const fn saving_parameters_not_supported() -> Sense {
        Sense::new(
            SenseKey::IllegalRequest,
            asc::SAVING_PARAMETERS_NOT_SUPPORTED,
        )
    }

    pub const fn write_protected() -> Sense {
        Sense::new(SenseKey::DataProtect, asc::WRITE_PROTECTED)
    }

    /// For the engine: a write (or flush) that failed must never read as GOOD.
    pub const fn write_error() -> Sense {
        Sense::new(SenseKey::MediumError, asc::WRITE_ERROR)
    }

    /// For the engine: a read of the backing store that failed.
    pub const fn unrecovered_read_error() -> Sense {
        Sense::new(SenseKey::MediumError, asc::UNRECOVERED_READ_ERROR)
    }

    /// For the engine: VERIFY with BYTCHK found a difference at byte
    /// `offset` of the Data-Out buffer (SBC-3 §5.24).
    pub const fn miscompare(offset: u32) -> Sense {
        let mut s = Sense::new(SenseKey::Miscompare, asc::MISCOMPARE_DURING_VERIFY);
        s.information = Some(offset);
        s
    }

    /// The sense key, ASC and ASCQ as one triple, handy in logs and tests.
    pub fn triple(&self) -> (u8, u8, u8) {
        (self.key.to_u8(), self.asc, self.ascq)
    }

    /// Fixed-format sense data, response code 70h (SPC-4 §4.5.3, table 39).
    pub fn encode(&self) -> [u8; FIXED_SENSE_LEN] {
        let mut b = [0u8; FIXED_SENSE_LEN];
        b[0] = 0x70;
        if let Some(info) = self.information {
            b[0] |= 0x80;
            b[3..7].copy_from_slice(&info.to_be_bytes());
        }
        b[2] = self.key.to_u8();
        // ADDITIONAL SENSE LENGTH counts the bytes after byte 7.
        b[7] = (FIXED_SENSE_LEN - 8) as u8;
        b[12] = self.asc;
        b[13] = self.ascq;
        if let Some(f) = self.field {
            // SKSV, C/D, BPV and BIT POINTER, then the FIELD POINTER.
            b[15] = 0x80;
            if f.in_cdb {
                b[15] |= 0x40;
            }
            if let Some(bit) = f.bit {
                b[15] |= 0x08 | (bit & 0x07);
            }
            b[16..18].copy_from_slice(&f.byte.to_be_bytes());
        }
        b
    }
}

impl Sense {
    /// The data segment of an iSCSI SCSI Response carrying this sense
    /// (RFC 7143 §11.4.7.2): the two-byte SenseLength, then the sense data.
    pub fn encode_with_length(&self) -> [u8; 2 + FIXED_SENSE_LEN] {
        let mut b = [0u8; 2 + FIXED_SENSE_LEN];
        b[1] = FIXED_SENSE_LEN as u8;
        b[2..].copy_from_slice(&self.encode());
        b
    }
}

impl fmt::Display for Sense {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (k, a, q) = self.triple();
        write!(f, "sense {k:02x}/{a:02x}/{q:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lba_out_of_range_bytes() {
        let b = Sense::lba_out_of_range().encode();
        assert_eq!(
            b,
            [0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x21, 0x00, 0, 0, 0, 0]
        );
    }

    #[test]
    fn invalid_field_pointer_bytes() {
        let b = Sense::invalid_field_in_cdb(1, Some(4)).encode();
        assert_eq!(&b[12..18], &[0x24, 0x00, 0, 0xcc, 0x00, 0x01]);
        let b = Sense::invalid_field_in_cdb(8, None).encode();
        assert_eq!(&b[15..18], &[0xc0, 0x00, 0x08]);
        let b = Sense::invalid_field_in_parameter_list(24).encode();
        assert_eq!(&b[12..18], &[0x26, 0x00, 0, 0x80, 0x00, 0x18]);
    }

    #[test]
    fn iscsi_sense_segment_has_length_prefix() {
        let b = Sense::write_protected().encode_with_length();
        assert_eq!(&b[..5], &[0x00, 18, 0x70, 0x00, 0x07]);
        assert_eq!(&b[14..16], &[0x27, 0x00]);
    }

    #[test]
    fn miscompare_sets_valid_and_information() {
        let b = Sense::miscompare(0x1234).encode();
        assert_eq!(&b[..8], &[0xf0, 0, 0x0e, 0, 0, 0x12, 0x34, 10]);
        assert_eq!(&b[12..14], &[0x1d, 0x00]);
    }

    #[test]
    fn every_triple_used() {
        assert_eq!(Sense::invalid_opcode().triple(), (5, 0x20, 0));
        assert_eq!(Sense::lun_not_supported().triple(), (5, 0x25, 0));
        assert_eq!(Sense::parameter_list_length_error().triple(), (5, 0x1a, 0));
        assert_eq!(Sense::write_protected().triple(), (7, 0x27, 0));
        assert_eq!(Sense::write_error().triple(), (3, 0x0c, 0));
        assert_eq!(Sense::unrecovered_read_error().triple(), (3, 0x11, 0));
        assert_eq!(
            Sense::saving_parameters_not_supported().triple(),
            (5, 0x39, 0)
        );
        assert_eq!(Sense::no_sense().triple(), (0, 0, 0));
        let ua = Sense::new(SenseKey::UnitAttention, asc::CAPACITY_DATA_HAS_CHANGED);
        assert_eq!(ua.triple(), (6, 0x2a, 0x09));
        assert_eq!(ua.to_string(), "sense 06/2a/09");
    }

    #[test]
    fn codes_round_trip() {
        for k in 0..16u8 {
            assert_eq!(SenseKey::from_u8(k).to_u8(), k);
        }
        assert_eq!(Status::CheckCondition.to_u8(), 2);
        assert_eq!(Status::Good.to_u8(), 0);
    }
}
