//! Command descriptor blocks: decoding the CDBs dls answers into [`Cdb`].
//!
//! Implements the CDB layouts of SPC-4 §6 (INQUIRY, MODE SENSE/SELECT,
//! REQUEST SENSE, REPORT LUNS, REPORT SUPPORTED OPERATION CODES, TEST UNIT
//! READY) and SBC-3 §5 (READ, WRITE, VERIFY, WRITE AND VERIFY, WRITE SAME,
//! UNMAP, SYNCHRONIZE CACHE, PRE-FETCH, READ CAPACITY, START STOP UNIT), and
//! the CONTROL byte rules of SAM-5 §5.2.
//!
//! [`Cdb::parse`] is safe on any bytes: each opcode's length is checked once
//! by borrowing a fixed-size array, after which every field access is a
//! constant index the compiler has already bounds-checked. What the parser can
//! judge without knowing the logical unit (reserved bits, protection fields,
//! unsupported options) it answers with the [`Sense`] the initiator is owed;
//! LBA ranges, write protection and unit attentions are the logical unit's
//! business ([`super::lu`]).
//!
//! Not decoded yet, so answered INVALID COMMAND OPERATION CODE:
//! PERSISTENT RESERVE IN/OUT, GET LBA STATUS, REPORT TARGET PORT GROUPS,
//! COMPARE AND WRITE, ORWRITE, XDWRITEREAD, PREVENT ALLOW MEDIUM REMOVAL,
//! RESERVE/RELEASE, EXTENDED COPY and the 32-byte variable-length CDBs.

use super::opcodes;
use super::sense::Sense;

/// Operation codes (SPC-4 Annex D.3.1, SBC-3 table 12).
pub mod opcode {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const READ_6: u8 = 0x08;
    pub const WRITE_6: u8 = 0x0a;
    pub const INQUIRY: u8 = 0x12;
    pub const MODE_SELECT_6: u8 = 0x15;
    pub const MODE_SENSE_6: u8 = 0x1a;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const READ_CAPACITY_10: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const WRITE_10: u8 = 0x2a;
    pub const WRITE_AND_VERIFY_10: u8 = 0x2e;
    pub const VERIFY_10: u8 = 0x2f;
    pub const PRE_FETCH_10: u8 = 0x34;
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    pub const WRITE_SAME_10: u8 = 0x41;
    pub const UNMAP: u8 = 0x42;
    pub const MODE_SELECT_10: u8 = 0x55;
    pub const MODE_SENSE_10: u8 = 0x5a;
    pub const READ_16: u8 = 0x88;
    pub const WRITE_16: u8 = 0x8a;
    pub const WRITE_AND_VERIFY_16: u8 = 0x8e;
    pub const VERIFY_16: u8 = 0x8f;
    pub const PRE_FETCH_16: u8 = 0x90;
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    pub const WRITE_SAME_16: u8 = 0x93;
    pub const SERVICE_ACTION_IN_16: u8 = 0x9e;
    pub const REPORT_LUNS: u8 = 0xa0;
    pub const MAINTENANCE_IN: u8 = 0xa3;
    pub const READ_12: u8 = 0xa8;
    pub const WRITE_12: u8 = 0xaa;
    pub const WRITE_AND_VERIFY_12: u8 = 0xae;
    pub const VERIFY_12: u8 = 0xaf;

    /// SERVICE ACTION IN(16) service action for READ CAPACITY(16).
    pub const SA_READ_CAPACITY_16: u8 = 0x10;
    /// MAINTENANCE IN service action for REPORT SUPPORTED OPERATION CODES.
    pub const SA_REPORT_SUPPORTED_OPERATION_CODES: u8 = 0x0c;
}

/// Which way data moves for a command (RFC 7143 §11.3.1, the R and W bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    None,
    /// Target to initiator (Data-In).
    In,
    /// Initiator to target (Data-Out, immediate or solicited).
    Out,
}

/// READ or WRITE of any size (SBC-3 §5.11-5.16, §5.29-5.34).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rw {
    pub lba: u64,
    /// Number of logical blocks; already 256 for a READ(6)/WRITE(6) of 0.
    pub blocks: u32,
    /// Force unit access: the data must be on stable storage before GOOD.
    pub fua: bool,
    /// Disable page out: a cache hint, accepted and ignored.
    pub dpo: bool,
}

/// A block range of the commands that take one (PRE-FETCH, SYNCHRONIZE CACHE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub lba: u64,
    /// 0 means "to the last block" for SYNCHRONIZE CACHE and PRE-FETCH.
    pub blocks: u32,
    pub immed: bool,
}

/// VERIFY(10/12/16) (SBC-3 §5.24-5.26).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verify {
    pub lba: u64,
    pub blocks: u32,
    pub bytchk: ByteCheck,
}

/// The BYTCHK field of VERIFY (SBC-3 table 78).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteCheck {
    /// 00b: check the medium only; no Data-Out.
    None,
    /// 01b: compare `blocks` blocks of Data-Out with the medium.
    Blocks,
    /// 11b: compare one block of Data-Out with each block of the range.
    OneBlock,
}

/// WRITE SAME(10/16) (SBC-3 §5.40-5.41).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteSame {
    pub lba: u64,
    /// 0 means "to the last block" in SBC-3; refused here (WSNZ=1).
    pub blocks: u32,
    /// The initiator allows deallocation instead of writing.
    pub unmap: bool,
    /// No Data-Out: the pattern is a block of zeros (WRITE SAME(16) only).
    pub ndob: bool,
}

/// Page control of MODE SENSE (SPC-4 table 99).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageControl {
    Current,
    Changeable,
    Default,
    Saved,
}

/// MODE SENSE(6) and (10) (SPC-4 §6.11, §6.12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeSense {
    /// True for MODE SENSE(10), which has the larger header.
    pub ten: bool,
    /// Disable block descriptors.
    pub dbd: bool,
    /// Long LBA accepted: a 16-byte block descriptor (MODE SENSE(10) only).
    pub llbaa: bool,
    pub pc: PageControl,
    pub page: u8,
    pub subpage: u8,
    pub alloc_len: u16,
}

/// MODE SELECT(6) and (10) (SPC-4 §6.9, §6.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModeSelect {
    pub ten: bool,
    /// Page format: the list is made of mode pages.
    pub pf: bool,
    /// Save pages: refused, nothing is saved.
    pub sp: bool,
    pub param_len: u16,
}

/// A decoded CDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cdb {
    TestUnitReady,
    RequestSense {
        desc: bool,
        alloc_len: u8,
    },
    Inquiry {
        evpd: bool,
        page_code: u8,
        alloc_len: u16,
    },
    ModeSense(ModeSense),
    ModeSelect(ModeSelect),
    StartStopUnit {
        immed: bool,
        power_condition: u8,
        loej: bool,
        start: bool,
    },
    ReadCapacity10,
    ReadCapacity16 {
        alloc_len: u32,
    },
    Read(Rw),
    Write(Rw),
    /// WRITE AND VERIFY (SBC-3 §5.35-5.37); `fua` is always set, as the
    /// verification is of what reached the medium.
    WriteAndVerify(Rw),
    Verify(Verify),
    WriteSame(WriteSame),
    Unmap {
        param_len: u16,
    },
    SynchronizeCache(Range),
    PreFetch(Range),
    ReportLuns {
        select_report: u8,
        alloc_len: u32,
    },
    ReportSupportedOperationCodes(opcodes::Request),
    /// An operation code dls does not implement.
    Unknown(u8),
}

/// Length of the CDB an opcode starts, from its group code (SPC-4 §4.2.5.1).
pub fn cdb_len(opcode: u8) -> Option<usize> {
    match opcode >> 5 {
        0 => Some(6),
        1 | 2 => Some(10),
        4 => Some(16),
        5 => Some(12),
        // Group 3 is reserved or variable length; 6 and 7 are vendor specific.
        _ => None,
    }
}

/// Borrows the first `N` bytes as an array, or says the CDB is short.
fn take<const N: usize>(cdb: &[u8]) -> Result<&[u8; N], Sense> {
    cdb.get(..N)
        .and_then(|b| b.try_into().ok())
        // A CDB too short for its own opcode: the last byte we have is the one
        // that is wrong. iSCSI always carries at least 16 bytes, so only
        // hostile callers get here.
        .ok_or(Sense::invalid_field_in_cdb(
            cdb.len().saturating_sub(1) as u16,
            None,
        ))
}

fn be16(a: u8, b: u8) -> u16 {
    u16::from_be_bytes([a, b])
}

fn be32(b: [u8; 4]) -> u32 {
    u32::from_be_bytes(b)
}

fn lba10<const N: usize>(c: &[u8; N]) -> u64 {
    // Callers pass 10- or 12-byte CDBs; bytes 2..6 exist in both.
    match c.get(2..6) {
        Some(&[a, b, d, e]) => u64::from(be32([a, b, d, e])),
        _ => 0,
    }
}

fn lba16(c: &[u8; 16]) -> u64 {
    u64::from_be_bytes([c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9]])
}

fn len16(c: &[u8; 16]) -> u32 {
    be32([c[10], c[11], c[12], c[13]])
}

/// Rejects the CONTROL byte bits dls does not support (SAM-5 §5.2): NACA
/// (NormACA is 0 in INQUIRY) and the obsolete LINK bit.
fn check_control(byte: u8, at: usize) -> Result<(), Sense> {
    if byte & 0x04 != 0 {
        return Err(Sense::invalid_field_in_cdb(at as u16, Some(2)));
    }
    if byte & 0x01 != 0 {
        return Err(Sense::invalid_field_in_cdb(at as u16, Some(0)));
    }
    Ok(())
}

/// RDPROTECT/WRPROTECT/VRPROTECT in byte 1 bits 7-5: dls has no protection
/// information (PROTECT=0 in INQUIRY), so anything but 0 is refused
/// (SBC-3 §5.11, table 29 for PROTECT=0).
fn check_protect(byte1: u8) -> Result<(), Sense> {
    if byte1 & 0xe0 != 0 {
        return Err(Sense::invalid_field_in_cdb(1, Some(7)));
    }
    Ok(())
}

impl Cdb {
    /// Decodes a CDB. Trailing bytes beyond the opcode's length are ignored:
    /// iSCSI pads every CDB to 16 bytes (RFC 7143 §11.3.5).
    pub fn parse(cdb: &[u8]) -> Result<Cdb, Sense> {
        use opcode::*;
        let Some(&op) = cdb.first() else {
            return Err(Sense::invalid_opcode());
        };
        match op {
            TEST_UNIT_READY => {
                let c = take::<6>(cdb)?;
                check_control(c[5], 5)?;
                Ok(Cdb::TestUnitReady)
            }
            REQUEST_SENSE => {
                let c = take::<6>(cdb)?;
                check_control(c[5], 5)?;
                Ok(Cdb::RequestSense {
                    desc: c[1] & 0x01 != 0,
                    alloc_len: c[4],
                })
            }
            INQUIRY => parse_inquiry(take(cdb)?),
            MODE_SENSE_6 | MODE_SENSE_10 => parse_mode_sense(cdb),
            MODE_SELECT_6 | MODE_SELECT_10 => parse_mode_select(cdb),
            START_STOP_UNIT => {
                let c = take::<6>(cdb)?;
                check_control(c[5], 5)?;
                Ok(Cdb::StartStopUnit {
                    immed: c[1] & 0x01 != 0,
                    power_condition: c[4] >> 4,
                    loej: c[4] & 0x02 != 0,
                    start: c[4] & 0x01 != 0,
                })
            }
            READ_CAPACITY_10 => {
                let c = take::<10>(cdb)?;
                check_control(c[9], 9)?;
                // SBC-3 §5.18: with PMI 0 the LBA field must be 0.
                if c[8] & 0x01 == 0 && lba10(c) != 0 {
                    return Err(Sense::invalid_field_in_cdb(2, None));
                }
                Ok(Cdb::ReadCapacity10)
            }
            SERVICE_ACTION_IN_16 => {
                let c = take::<16>(cdb)?;
                if c[1] & 0x1f != SA_READ_CAPACITY_16 {
                    // GET LBA STATUS and friends. SPC-4 would say INVALID
                    // FIELD IN CDB; libiscsi's suite reads only INVALID
                    // COMMAND OPERATION CODE as "not implemented" and fails
                    // otherwise, and so do several initiators' probes.
                    return Err(Sense::invalid_opcode());
                }
                check_control(c[15], 15)?;
                if c[14] & 0x01 == 0 && lba16(c) != 0 {
                    return Err(Sense::invalid_field_in_cdb(2, None));
                }
                Ok(Cdb::ReadCapacity16 {
                    alloc_len: len16(c),
                })
            }
            READ_6 | WRITE_6 => {
                let c = take::<6>(cdb)?;
                check_control(c[5], 5)?;
                let rw = Rw {
                    lba: u64::from(be32([0, c[1] & 0x1f, c[2], c[3]])),
                    // SBC-3 §5.12: a TRANSFER LENGTH of 0 means 256 blocks.
                    blocks: if c[4] == 0 { 256 } else { u32::from(c[4]) },
                    fua: false,
                    dpo: false,
                };
                Ok(if op == READ_6 {
                    Cdb::Read(rw)
                } else {
                    Cdb::Write(rw)
                })
            }
            READ_10 | WRITE_10 => {
                let c = take::<10>(cdb)?;
                check_control(c[9], 9)?;
                let rw = rw_flags(c[1], lba10(c), u32::from(be16(c[7], c[8])))?;
                Ok(if op == READ_10 {
                    Cdb::Read(rw)
                } else {
                    Cdb::Write(rw)
                })
            }
            READ_12 | WRITE_12 => {
                let c = take::<12>(cdb)?;
                check_control(c[11], 11)?;
                let rw = rw_flags(c[1], lba10(c), be32([c[6], c[7], c[8], c[9]]))?;
                Ok(if op == READ_12 {
                    Cdb::Read(rw)
                } else {
                    Cdb::Write(rw)
                })
            }
            READ_16 | WRITE_16 => {
                let c = take::<16>(cdb)?;
                check_control(c[15], 15)?;
                let rw = rw_flags(c[1], lba16(c), len16(c))?;
                Ok(if op == READ_16 {
                    Cdb::Read(rw)
                } else {
                    Cdb::Write(rw)
                })
            }
            WRITE_AND_VERIFY_10 => {
                let c = take::<10>(cdb)?;
                check_control(c[9], 9)?;
                write_and_verify(c[1], lba10(c), u32::from(be16(c[7], c[8])))
            }
            WRITE_AND_VERIFY_12 => {
                let c = take::<12>(cdb)?;
                check_control(c[11], 11)?;
                write_and_verify(c[1], lba10(c), be32([c[6], c[7], c[8], c[9]]))
            }
            WRITE_AND_VERIFY_16 => {
                let c = take::<16>(cdb)?;
                check_control(c[15], 15)?;
                write_and_verify(c[1], lba16(c), len16(c))
            }
            VERIFY_10 => {
                let c = take::<10>(cdb)?;
                check_control(c[9], 9)?;
                parse_verify(c[1], lba10(c), u32::from(be16(c[7], c[8])))
            }
            VERIFY_12 => {
                let c = take::<12>(cdb)?;
                check_control(c[11], 11)?;
                parse_verify(c[1], lba10(c), be32([c[6], c[7], c[8], c[9]]))
            }
            VERIFY_16 => {
                let c = take::<16>(cdb)?;
                check_control(c[15], 15)?;
                parse_verify(c[1], lba16(c), len16(c))
            }
            WRITE_SAME_10 => {
                let c = take::<10>(cdb)?;
                check_control(c[9], 9)?;
                // NDOB exists only in WRITE SAME(16); bit 0 is reserved here.
                if c[1] & 0x01 != 0 {
                    return Err(Sense::invalid_field_in_cdb(1, Some(0)));
                }
                parse_write_same(c[1], lba10(c), u32::from(be16(c[7], c[8])))
            }
            WRITE_SAME_16 => {
                let c = take::<16>(cdb)?;
                check_control(c[15], 15)?;
                parse_write_same(c[1], lba16(c), len16(c))
            }
            UNMAP => {
                let c = take::<10>(cdb)?;
                check_control(c[9], 9)?;
                // ANCHOR needs ANC_SUP, which the provisioning page clears.
                if c[1] & 0x01 != 0 {
                    return Err(Sense::invalid_field_in_cdb(1, Some(0)));
                }
                Ok(Cdb::Unmap {
                    param_len: be16(c[7], c[8]),
                })
            }
            SYNCHRONIZE_CACHE_10 | PRE_FETCH_10 => {
                let c = take::<10>(cdb)?;
                check_control(c[9], 9)?;
                let range = Range {
                    lba: lba10(c),
                    blocks: u32::from(be16(c[7], c[8])),
                    immed: c[1] & 0x02 != 0,
                };
                Ok(if op == PRE_FETCH_10 {
                    Cdb::PreFetch(range)
                } else {
                    Cdb::SynchronizeCache(range)
                })
            }
            SYNCHRONIZE_CACHE_16 | PRE_FETCH_16 => {
                let c = take::<16>(cdb)?;
                check_control(c[15], 15)?;
                let range = Range {
                    lba: lba16(c),
                    blocks: len16(c),
                    immed: c[1] & 0x02 != 0,
                };
                Ok(if op == PRE_FETCH_16 {
                    Cdb::PreFetch(range)
                } else {
                    Cdb::SynchronizeCache(range)
                })
            }
            REPORT_LUNS => {
                let c = take::<12>(cdb)?;
                check_control(c[11], 11)?;
                Ok(Cdb::ReportLuns {
                    select_report: c[2],
                    alloc_len: be32([c[6], c[7], c[8], c[9]]),
                })
            }
            MAINTENANCE_IN => {
                let c = take::<12>(cdb)?;
                if c[1] & 0x1f != SA_REPORT_SUPPORTED_OPERATION_CODES {
                    // REPORT TARGET PORT GROUPS and the like: see
                    // SERVICE ACTION IN(16) for why this is the answer.
                    return Err(Sense::invalid_opcode());
                }
                check_control(c[11], 11)?;
                Ok(Cdb::ReportSupportedOperationCodes(opcodes::Request {
                    rctd: c[2] & 0x80 != 0,
                    reporting_options: c[2] & 0x07,
                    opcode: c[3],
                    sa: be16(c[4], c[5]),
                    alloc_len: be32([c[6], c[7], c[8], c[9]]),
                }))
            }
            other => Ok(Cdb::Unknown(other)),
        }
    }

    /// Which way data moves if the command succeeds; the iSCSI layer checks it
    /// against the R/W bits. Outcomes carry the exact byte count
    /// ([`super::lu::Outcome::transfer`]).
    pub fn direction(&self) -> Direction {
        match self {
            Cdb::RequestSense { .. }
            | Cdb::Inquiry { .. }
            | Cdb::ModeSense(_)
            | Cdb::ReadCapacity10
            | Cdb::ReadCapacity16 { .. }
            | Cdb::Read(_)
            | Cdb::ReportLuns { .. }
            | Cdb::ReportSupportedOperationCodes(_) => Direction::In,
            Cdb::Write(_) | Cdb::WriteAndVerify(_) | Cdb::ModeSelect(_) | Cdb::Unmap { .. } => {
                Direction::Out
            }
            Cdb::WriteSame(ws) if !ws.ndob => Direction::Out,
            Cdb::Verify(v) if v.bytchk != ByteCheck::None => Direction::Out,
            _ => Direction::None,
        }
    }
}

/// Byte 1 of READ/WRITE(10/12/16): PROTECT bits, DPO, FUA (SBC-3 §5.13).
fn rw_flags(byte1: u8, lba: u64, blocks: u32) -> Result<Rw, Sense> {
    check_protect(byte1)?;
    Ok(Rw {
        lba,
        blocks,
        dpo: byte1 & 0x10 != 0,
        fua: byte1 & 0x08 != 0,
    })
}

/// WRITE AND VERIFY: WRPROTECT, DPO, BYTCHK (bit 1). Either BYTCHK value
/// is served by a durable write: comparing the Data-Out with what was just
/// written cannot fail, and there is no medium to check beyond that.
fn write_and_verify(byte1: u8, lba: u64, blocks: u32) -> Result<Cdb, Sense> {
    check_protect(byte1)?;
    // Bit 2 is the upper half of SBC-4's two-bit BYTCHK; 10b and 11b are not
    // offered.
    if byte1 & 0x04 != 0 {
        return Err(Sense::invalid_field_in_cdb(1, Some(2)));
    }
    Ok(Cdb::WriteAndVerify(Rw {
        lba,
        blocks,
        fua: true,
        dpo: byte1 & 0x10 != 0,
    }))
}

fn parse_verify(byte1: u8, lba: u64, blocks: u32) -> Result<Cdb, Sense> {
    check_protect(byte1)?;
    let bytchk = match (byte1 >> 1) & 0x03 {
        0b00 => ByteCheck::None,
        0b01 => ByteCheck::Blocks,
        0b11 => ByteCheck::OneBlock,
        // 10b is reserved (SBC-3 table 78).
        _ => return Err(Sense::invalid_field_in_cdb(1, Some(2))),
    };
    Ok(Cdb::Verify(Verify {
        lba,
        blocks,
        bytchk,
    }))
}

fn parse_write_same(byte1: u8, lba: u64, blocks: u32) -> Result<Cdb, Sense> {
    check_protect(byte1)?;
    // ANCHOR needs ANC_SUP; PBDATA/LBDATA (bits 2-1) are obsolete and the
    // block limits page offers neither.
    if byte1 & 0x10 != 0 {
        return Err(Sense::invalid_field_in_cdb(1, Some(4)));
    }
    if byte1 & 0x06 != 0 {
        return Err(Sense::invalid_field_in_cdb(1, Some(2)));
    }
    Ok(Cdb::WriteSame(WriteSame {
        lba,
        blocks,
        unmap: byte1 & 0x08 != 0,
        ndob: byte1 & 0x01 != 0,
    }))
}

fn parse_inquiry(c: &[u8; 6]) -> Result<Cdb, Sense> {
    check_control(c[5], 5)?;
    // CMDDT (bit 1) is obsolete since SPC-3 and must be refused (SPC-4 §6.4.1).
    if c[1] & 0xfe != 0 {
        return Err(Sense::invalid_field_in_cdb(1, Some(1)));
    }
    Ok(Cdb::Inquiry {
        evpd: c[1] & 0x01 != 0,
        page_code: c[2],
        alloc_len: be16(c[3], c[4]),
    })
}

fn page_control(byte2: u8) -> PageControl {
    match byte2 >> 6 {
        0 => PageControl::Current,
        1 => PageControl::Changeable,
        2 => PageControl::Default,
        _ => PageControl::Saved,
    }
}

fn parse_mode_sense(cdb: &[u8]) -> Result<Cdb, Sense> {
    let ms = if cdb.first() == Some(&opcode::MODE_SENSE_6) {
        let c = take::<6>(cdb)?;
        check_control(c[5], 5)?;
        ModeSense {
            ten: false,
            dbd: c[1] & 0x08 != 0,
            llbaa: false,
            pc: page_control(c[2]),
            page: c[2] & 0x3f,
            subpage: c[3],
            alloc_len: u16::from(c[4]),
        }
    } else {
        let c = take::<10>(cdb)?;
        check_control(c[9], 9)?;
        ModeSense {
            ten: true,
            dbd: c[1] & 0x08 != 0,
            llbaa: c[1] & 0x10 != 0,
            pc: page_control(c[2]),
            page: c[2] & 0x3f,
            subpage: c[3],
            alloc_len: be16(c[7], c[8]),
        }
    };
    Ok(Cdb::ModeSense(ms))
}

fn parse_mode_select(cdb: &[u8]) -> Result<Cdb, Sense> {
    let (ten, byte1, param_len) = if cdb.first() == Some(&opcode::MODE_SELECT_6) {
        let c = take::<6>(cdb)?;
        check_control(c[5], 5)?;
        (false, c[1], u16::from(c[4]))
    } else {
        let c = take::<10>(cdb)?;
        check_control(c[9], 9)?;
        (true, c[1], be16(c[7], c[8]))
    };
    Ok(Cdb::ModeSelect(ModeSelect {
        ten,
        pf: byte1 & 0x10 != 0,
        sp: byte1 & 0x01 != 0,
        param_len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Cdb, Sense> {
        Cdb::parse(bytes)
    }

    #[test]
    fn no_length_or_opcode_byte_panics() {
        // Every opcode with every length 0..=16, with zero, all-ones and
        // alternating filler: decoding returns a value each time.
        for op in 0..=255u8 {
            for len in 0..=16usize {
                for fill in [0x00u8, 0xff, 0xa5] {
                    let mut buf = vec![fill; len];
                    if let Some(b) = buf.first_mut() {
                        *b = op;
                    }
                    let _ = parse(&buf);
                }
            }
        }
    }

    #[test]
    fn short_cdbs_are_invalid_field() {
        assert_eq!(parse(&[]).unwrap_err().triple(), (5, 0x20, 0));
        assert_eq!(parse(&[0x28, 0, 0]).unwrap_err().triple(), (5, 0x24, 0));
        assert_eq!(parse(&[0x88; 15]).unwrap_err().triple(), (5, 0x24, 0));
        assert_eq!(parse(&[0x12, 0, 0, 0]).unwrap_err().triple(), (5, 0x24, 0));
    }

    #[test]
    fn test_unit_ready_and_unknown() {
        assert_eq!(parse(&[0; 6]), Ok(Cdb::TestUnitReady));
        assert_eq!(
            parse(&[0xa4, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Ok(Cdb::Unknown(0xa4))
        );
        assert_eq!(parse(&[0x5e; 10]), Ok(Cdb::Unknown(0x5e)));
        assert_eq!(parse(&[0x7f]), Ok(Cdb::Unknown(0x7f)));
    }

    #[test]
    fn control_byte_naca_and_link() {
        assert_eq!(
            parse(&[0, 0, 0, 0, 0, 0x04]),
            Err(Sense::invalid_field_in_cdb(5, Some(2)))
        );
        assert_eq!(
            parse(&[0, 0, 0, 0, 0, 0x01]),
            Err(Sense::invalid_field_in_cdb(5, Some(0)))
        );
        // Vendor bits 7-6 are ignored.
        assert_eq!(parse(&[0, 0, 0, 0, 0, 0xc0]), Ok(Cdb::TestUnitReady));
    }

    #[test]
    fn read6_zero_length_is_256_blocks() {
        assert_eq!(
            parse(&[0x08, 0x1f, 0xff, 0xff, 0x00, 0x00]),
            Ok(Cdb::Read(Rw {
                lba: 0x1f_ffff,
                blocks: 256,
                fua: false,
                dpo: false
            }))
        );
        // The top three bits of byte 1 are reserved, not LBA.
        assert_eq!(
            parse(&[0x0a, 0xe0, 0x00, 0x01, 0x08, 0x00]),
            Ok(Cdb::Write(Rw {
                lba: 1,
                blocks: 8,
                fua: false,
                dpo: false
            }))
        );
    }

    #[test]
    fn read_write_10_12_16() {
        let r10 = [0x28, 0x18, 0x00, 0x00, 0x07, 0xff, 0x00, 0x00, 0x02, 0x00];
        assert_eq!(
            parse(&r10),
            Ok(Cdb::Read(Rw {
                lba: 2047,
                blocks: 2,
                fua: true,
                dpo: true
            }))
        );
        let w12 = [0xaa, 0x08, 0, 0, 0, 9, 0x00, 0x01, 0x00, 0x00, 0, 0];
        assert_eq!(
            parse(&w12),
            Ok(Cdb::Write(Rw {
                lba: 9,
                blocks: 0x10000,
                fua: true,
                dpo: false
            }))
        );
        let mut r16 = [0u8; 16];
        r16[0] = 0x88;
        r16[2..10].copy_from_slice(&u64::MAX.to_be_bytes());
        r16[13] = 1;
        assert_eq!(
            parse(&r16),
            Ok(Cdb::Read(Rw {
                lba: u64::MAX,
                blocks: 1,
                fua: false,
                dpo: false
            }))
        );
        r16[0] = 0x8a;
        r16[1] = 0x20; // WRPROTECT 001b
        assert_eq!(parse(&r16), Err(Sense::invalid_field_in_cdb(1, Some(7))));
    }

    #[test]
    fn read_capacity() {
        assert_eq!(
            parse(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Ok(Cdb::ReadCapacity10)
        );
        assert_eq!(
            parse(&[0x25, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
            Err(Sense::invalid_field_in_cdb(2, None))
        );
        assert_eq!(
            parse(&[0x25, 0, 0, 0, 0, 1, 0, 0, 1, 0]),
            Ok(Cdb::ReadCapacity10)
        );
        let rc16 = [0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];
        assert_eq!(parse(&rc16), Ok(Cdb::ReadCapacity16 { alloc_len: 32 }));
        // GET LBA STATUS (service action 12h) is not implemented.
        let glbas = [0x9e, 0x12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];
        assert_eq!(parse(&glbas), Err(Sense::invalid_opcode()));
    }

    #[test]
    fn verify_bytchk() {
        let mut v = [0x2f, 0x00, 0, 0, 0, 1, 0, 0, 4, 0];
        let want = |bytchk| {
            Ok(Cdb::Verify(Verify {
                lba: 1,
                blocks: 4,
                bytchk,
            }))
        };
        assert_eq!(parse(&v), want(ByteCheck::None));
        v[1] = 0x12; // DPO, BYTCHK 01b
        assert_eq!(parse(&v), want(ByteCheck::Blocks));
        v[1] = 0x06;
        assert_eq!(parse(&v), want(ByteCheck::OneBlock));
        v[1] = 0x04;
        assert_eq!(parse(&v), Err(Sense::invalid_field_in_cdb(1, Some(2))));
        assert_eq!(
            parse(&v).map(|c| c.direction()),
            Err(Sense::invalid_field_in_cdb(1, Some(2)))
        );
        let v12 = [0xaf, 0x02, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0];
        assert_eq!(parse(&v12), want(ByteCheck::Blocks));
        let mut v16 = [0u8; 16];
        v16[0] = 0x8f;
        v16[9] = 1;
        v16[13] = 4;
        assert_eq!(parse(&v16), want(ByteCheck::None));
        assert_eq!(parse(&v16).unwrap().direction(), Direction::None);
    }

    #[test]
    fn write_and_verify() {
        let w = |lba, blocks, dpo| {
            Ok(Cdb::WriteAndVerify(Rw {
                lba,
                blocks,
                fua: true,
                dpo,
            }))
        };
        assert_eq!(parse(&[0x2e, 0x12, 0, 0, 0, 3, 0, 0, 2, 0]), w(3, 2, true));
        assert_eq!(
            parse(&[0xae, 0x02, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0]),
            w(3, 2, false)
        );
        let mut c16 = [0u8; 16];
        c16[0] = 0x8e;
        c16[9] = 3;
        c16[13] = 2;
        assert_eq!(parse(&c16), w(3, 2, false));
        assert_eq!(parse(&c16).unwrap().direction(), Direction::Out);
        c16[1] = 0x04;
        assert_eq!(parse(&c16), Err(Sense::invalid_field_in_cdb(1, Some(2))));
        c16[1] = 0x40;
        assert_eq!(parse(&c16), Err(Sense::invalid_field_in_cdb(1, Some(7))));
    }

    #[test]
    fn write_same_flags() {
        let ws10 = [0x41, 0x08, 0, 0, 0, 2, 0, 0, 3, 0];
        assert_eq!(
            parse(&ws10),
            Ok(Cdb::WriteSame(WriteSame {
                lba: 2,
                blocks: 3,
                unmap: true,
                ndob: false
            }))
        );
        assert_eq!(
            parse(&[0x41, 0x01, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(Sense::invalid_field_in_cdb(1, Some(0)))
        );
        assert_eq!(
            parse(&[0x41, 0x10, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(Sense::invalid_field_in_cdb(1, Some(4)))
        );
        assert_eq!(
            parse(&[0x41, 0x02, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(Sense::invalid_field_in_cdb(1, Some(2)))
        );
        let mut ws16 = [0u8; 16];
        ws16[0] = 0x93;
        ws16[1] = 0x09;
        ws16[13] = 8;
        let cdb = parse(&ws16).unwrap();
        assert_eq!(
            cdb,
            Cdb::WriteSame(WriteSame {
                lba: 0,
                blocks: 8,
                unmap: true,
                ndob: true
            })
        );
        assert_eq!(cdb.direction(), Direction::None);
    }

    #[test]
    fn unmap_sync_prefetch() {
        assert_eq!(
            parse(&[0x42, 0, 0, 0, 0, 0, 0, 0, 24, 0]),
            Ok(Cdb::Unmap { param_len: 24 })
        );
        assert_eq!(
            parse(&[0x42, 1, 0, 0, 0, 0, 0, 0, 24, 0]),
            Err(Sense::invalid_field_in_cdb(1, Some(0)))
        );
        assert_eq!(
            parse(&[0x35, 0x02, 0, 0, 0, 5, 0, 0, 1, 0]),
            Ok(Cdb::SynchronizeCache(Range {
                lba: 5,
                blocks: 1,
                immed: true
            }))
        );
        let mut p16 = [0u8; 16];
        p16[0] = 0x90;
        p16[9] = 7;
        p16[13] = 2;
        assert_eq!(
            parse(&p16),
            Ok(Cdb::PreFetch(Range {
                lba: 7,
                blocks: 2,
                immed: false
            }))
        );
        p16[0] = 0x91;
        assert_eq!(
            parse(&p16),
            Ok(Cdb::SynchronizeCache(Range {
                lba: 7,
                blocks: 2,
                immed: false
            }))
        );
        assert_eq!(
            parse(&[0x34, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Ok(Cdb::PreFetch(Range {
                lba: 0,
                blocks: 0,
                immed: false
            }))
        );
    }

    #[test]
    fn inquiry_request_sense_report_luns() {
        assert_eq!(
            parse(&[0x12, 0x01, 0x83, 0x00, 0xff, 0x00]),
            Ok(Cdb::Inquiry {
                evpd: true,
                page_code: 0x83,
                alloc_len: 255
            })
        );
        assert_eq!(
            parse(&[0x12, 0x02, 0, 0, 36, 0]),
            Err(Sense::invalid_field_in_cdb(1, Some(1)))
        );
        assert_eq!(
            parse(&[0x03, 0x01, 0, 0, 18, 0]),
            Ok(Cdb::RequestSense {
                desc: true,
                alloc_len: 18
            })
        );
        assert_eq!(
            parse(&[0xa0, 0, 0x02, 0, 0, 0, 0xaa, 0xaa, 0xaa, 0xaa, 0, 0]),
            Ok(Cdb::ReportLuns {
                select_report: 2,
                alloc_len: 0xaaaa_aaaa
            })
        );
    }

    #[test]
    fn mode_sense_select_and_start_stop() {
        assert_eq!(
            parse(&[0x1a, 0x08, 0x7f, 0x00, 0xff, 0x00]),
            Ok(Cdb::ModeSense(ModeSense {
                ten: false,
                dbd: true,
                llbaa: false,
                pc: PageControl::Changeable,
                page: 0x3f,
                subpage: 0,
                alloc_len: 255
            }))
        );
        let Ok(Cdb::ModeSense(ms)) = parse(&[0x5a, 0x10, 0xc8, 0, 0, 0, 0, 0x01, 0x00, 0]) else {
            panic!()
        };
        assert!(ms.ten && ms.llbaa && !ms.dbd);
        assert_eq!(
            (ms.pc, ms.page, ms.alloc_len),
            (PageControl::Saved, 0x08, 256)
        );
        assert_eq!(
            parse(&[0x15, 0x11, 0, 0, 12, 0]),
            Ok(Cdb::ModeSelect(ModeSelect {
                ten: false,
                pf: true,
                sp: true,
                param_len: 12
            }))
        );
        assert_eq!(
            parse(&[0x55, 0x10, 0, 0, 0, 0, 0, 0, 20, 0]),
            Ok(Cdb::ModeSelect(ModeSelect {
                ten: true,
                pf: true,
                sp: false,
                param_len: 20
            }))
        );
        assert_eq!(
            parse(&[0x1b, 0x01, 0, 0, 0x13, 0]),
            Ok(Cdb::StartStopUnit {
                immed: true,
                power_condition: 1,
                loej: true,
                start: true
            })
        );
    }

    #[test]
    fn group_lengths() {
        assert_eq!(cdb_len(0x12), Some(6));
        assert_eq!(cdb_len(0x28), Some(10));
        assert_eq!(cdb_len(0x5a), Some(10));
        assert_eq!(cdb_len(0x7f), None);
        assert_eq!(cdb_len(0x88), Some(16));
        assert_eq!(cdb_len(0xa0), Some(12));
        assert_eq!(cdb_len(0xc0), None);
    }
}
