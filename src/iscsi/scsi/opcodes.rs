//! REPORT SUPPORTED OPERATION CODES (SPC-4 §6.35): the table of commands a
//! logical unit executes, with the CDB usage data of each.
//!
//! The usage bit maps say which CDB bits the device server looks at; they
//! are kept next to [`super::cdb`] by hand, and a test decodes every usage
//! map as a CDB to catch a drift between the two. Bits refused by the parser
//! (RDPROTECT, NACA, ANCHOR) are 0, DPO and FUA are 1 (DPOFUA is set in the
//! mode header).
//!
//! Not done: reporting options 011b (SPC-5), non-zero command timeouts (the
//! timeouts descriptor says "not specified").

use super::cdb::opcode::*;
use super::lu::{truncate, Outcome};
use super::sense::Sense;

/// One supported command: opcode, service action, CDB usage data.
struct Command {
    opcode: u8,
    sa: Option<u8>,
    usage: &'static [u8],
}

const fn cmd(opcode: u8, sa: Option<u8>, usage: &'static [u8]) -> Command {
    Command { opcode, sa, usage }
}

const FF: u8 = 0xff;

/// Every command dls executes, ascending by opcode. UNMAP is left out where
/// the store cannot deallocate.
#[rustfmt::skip]
const COMMANDS: &[Command] = &[
    cmd(TEST_UNIT_READY, None, &[0x00, 0, 0, 0, 0, 0]),
    cmd(REQUEST_SENSE, None, &[0x03, 0x01, 0, 0, FF, 0]),
    cmd(READ_6, None, &[0x08, 0x1f, FF, FF, FF, 0]),
    cmd(WRITE_6, None, &[0x0a, 0x1f, FF, FF, FF, 0]),
    cmd(INQUIRY, None, &[0x12, 0x01, FF, FF, FF, 0]),
    cmd(MODE_SELECT_6, None, &[0x15, 0x11, 0, 0, FF, 0]),
    cmd(MODE_SENSE_6, None, &[0x1a, 0x08, FF, FF, FF, 0]),
    cmd(START_STOP_UNIT, None, &[0x1b, 0x01, 0, 0, 0xf7, 0]),
    cmd(READ_CAPACITY_10, None, &[0x25, 0, FF, FF, FF, FF, 0, 0, 0x01, 0]),
    cmd(READ_10, None, &[0x28, 0x18, FF, FF, FF, FF, 0, FF, FF, 0]),
    cmd(WRITE_10, None, &[0x2a, 0x18, FF, FF, FF, FF, 0, FF, FF, 0]),
    cmd(WRITE_AND_VERIFY_10, None, &[0x2e, 0x12, FF, FF, FF, FF, 0, FF, FF, 0]),
    cmd(VERIFY_10, None, &[0x2f, 0x16, FF, FF, FF, FF, 0, FF, FF, 0]),
    cmd(PRE_FETCH_10, None, &[0x34, 0x02, FF, FF, FF, FF, 0, FF, FF, 0]),
    cmd(SYNCHRONIZE_CACHE_10, None, &[0x35, 0x02, FF, FF, FF, FF, 0, FF, FF, 0]),
    cmd(WRITE_SAME_10, None, &[0x41, 0x08, FF, FF, FF, FF, 0, FF, FF, 0]),
    cmd(UNMAP, None, &[0x42, 0, 0, 0, 0, 0, 0, FF, FF, 0]),
    cmd(MODE_SELECT_10, None, &[0x55, 0x11, 0, 0, 0, 0, 0, FF, FF, 0]),
    cmd(MODE_SENSE_10, None, &[0x5a, 0x18, FF, FF, 0, 0, 0, FF, FF, 0]),
    cmd(READ_16, None, &[0x88, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0]),
    cmd(WRITE_16, None, &[0x8a, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0]),
    cmd(WRITE_AND_VERIFY_16, None, &[0x8e, 0x12, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0]),
    cmd(VERIFY_16, None, &[0x8f, 0x16, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0]),
    cmd(PRE_FETCH_16, None, &[0x90, 0x02, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0]),
    cmd(SYNCHRONIZE_CACHE_16, None, &[0x91, 0x02, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0]),
    cmd(WRITE_SAME_16, None, &[0x93, 0x09, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0]),
    cmd(SERVICE_ACTION_IN_16, Some(SA_READ_CAPACITY_16), &[0x9e, 0x10, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, FF, 0x01, 0]),
    cmd(REPORT_LUNS, None, &[0xa0, 0, FF, 0, 0, 0, FF, FF, FF, FF, 0, 0]),
    cmd(MAINTENANCE_IN, Some(SA_REPORT_SUPPORTED_OPERATION_CODES), &[0xa3, 0x0c, 0x87, FF, FF, FF, FF, FF, FF, FF, 0, 0]),
    cmd(READ_12, None, &[0xa8, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0]),
    cmd(WRITE_12, None, &[0xaa, 0x18, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0]),
    cmd(WRITE_AND_VERIFY_12, None, &[0xae, 0x12, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0]),
    cmd(VERIFY_12, None, &[0xaf, 0x16, FF, FF, FF, FF, FF, FF, FF, FF, 0, 0]),
];

/// The command timeouts descriptor (SPC-4 §6.35.4): length 0Ah, timeouts 0
/// ("not specified").
const TIMEOUTS: [u8; 12] = [0x00, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// The REPORT SUPPORTED OPERATION CODES fields of the CDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Return command timeouts descriptors.
    pub rctd: bool,
    pub reporting_options: u8,
    pub opcode: u8,
    pub sa: u16,
    pub alloc_len: u32,
}

fn supported(unmap: bool) -> impl Iterator<Item = &'static Command> {
    COMMANDS.iter().filter(move |c| unmap || c.opcode != UNMAP)
}

/// Answers REPORT SUPPORTED OPERATION CODES for a unit (`unmap`: whether it
/// offers UNMAP).
pub fn report(req: &Request, unmap: bool) -> Result<Outcome, Sense> {
    let data = match req.reporting_options {
        0b000 => all(req.rctd, unmap),
        0b001 | 0b010 => one(req, unmap)?,
        _ => return Err(Sense::invalid_field_in_cdb(2, Some(2))),
    };
    Ok(Outcome::Data(truncate(data, req.alloc_len as usize)))
}

fn all(rctd: bool, unmap: bool) -> Vec<u8> {
    let mut d = vec![0u8; 4];
    for c in supported(unmap) {
        let sa = u16::from(c.sa.unwrap_or(0));
        let flags = (u8::from(rctd) << 1) | u8::from(c.sa.is_some());
        d.extend_from_slice(&[c.opcode, 0]);
        d.extend_from_slice(&sa.to_be_bytes());
        d.extend_from_slice(&[0, flags]);
        d.extend_from_slice(&(c.usage.len() as u16).to_be_bytes());
        if rctd {
            d.extend_from_slice(&TIMEOUTS);
        }
    }
    let len = u32::try_from(d.len() - 4).unwrap_or(u32::MAX);
    d[..4].copy_from_slice(&len.to_be_bytes());
    d
}

/// Reporting options 001b (by opcode) and 010b (by opcode and service
/// action): asking the wrong way about a command is INVALID FIELD IN CDB.
fn one(req: &Request, unmap: bool) -> Result<Vec<u8>, Sense> {
    let by_sa = req.reporting_options == 0b010;
    let mut known = supported(unmap)
        .filter(|c| c.opcode == req.opcode)
        .peekable();
    let has_sa = known.peek().map(|c| c.sa.is_some());
    let found = match (has_sa, by_sa) {
        (Some(true), false) | (Some(false), true) => {
            return Err(Sense::invalid_field_in_cdb(3, None));
        }
        (Some(true), true) => known.find(|c| c.sa.map(u16::from) == Some(req.sa)),
        (Some(false), false) => known.next(),
        (None, _) => None,
    };
    let Some(c) = found else {
        // SUPPORT 001b: not supported, no usage data.
        return Ok(vec![0, 0x01, 0, 0]);
    };
    let mut d = vec![0, (u8::from(req.rctd) << 7) | 0x03];
    d.extend_from_slice(&(c.usage.len() as u16).to_be_bytes());
    d.extend_from_slice(c.usage);
    if req.rctd {
        d.extend_from_slice(&TIMEOUTS);
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iscsi::scsi::cdb::{cdb_len, Cdb};
    use crate::iscsi::scsi::lu::{LogicalUnit, LuConfig, NexusId};

    fn lu(unmap: bool) -> LogicalUnit {
        let mut lu = LogicalUnit::new(LuConfig {
            target_iqn: "iqn.2026-01.example:disk0".into(),
            lun: 0,
            size_bytes: 1 << 20,
            read_only: false,
            unmap,
        });
        lu.take_unit_attention(NexusId(1));
        lu
    }

    fn rsoc(rctd: bool, options: u8, opcode: u8, sa: u16) -> Vec<u8> {
        let mut c = vec![0xa3, 0x0c, (u8::from(rctd) << 7) | options, opcode];
        c.extend_from_slice(&sa.to_be_bytes());
        c.extend_from_slice(&65535u32.to_be_bytes());
        c.extend_from_slice(&[0, 0]);
        c
    }

    fn data(o: Outcome) -> Vec<u8> {
        match o {
            Outcome::Data(d) => d,
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn table_matches_the_parser() {
        for (i, c) in COMMANDS.iter().enumerate() {
            assert_eq!(c.usage.first(), Some(&c.opcode));
            assert_eq!(Some(c.usage.len()), cdb_len(c.opcode), "{:#x}", c.opcode);
            if let Some(prev) = i.checked_sub(1).and_then(|p| COMMANDS.get(p)) {
                assert!(
                    prev.opcode <= c.opcode,
                    "table not ascending at {:#x}",
                    c.opcode
                );
            }
            // Every bit the table says is used is accepted by the parser, one
            // at a time (the LBA of READ CAPACITY needs PMI as well, and
            // BYTCHK 10b alone is reserved).
            let verify = matches!(c.opcode, VERIFY_10 | VERIFY_12 | VERIFY_16);
            for (byte, &mask) in c.usage.iter().enumerate().skip(1) {
                for bit in 0..8 {
                    if mask & (1 << bit) == 0 || (verify && byte == 1 && bit == 2) {
                        continue;
                    }
                    let mut cdb = vec![0u8; c.usage.len()];
                    cdb[0] = c.opcode;
                    if let Some(sa) = c.sa {
                        cdb[1] = sa;
                    }
                    cdb[byte] |= 1 << bit;
                    let parsed = Cdb::parse(&cdb);
                    let refused_lba = matches!(
                        parsed,
                        Err(s) if s.field.is_some_and(|f| f.byte == 2) && matches!(c.opcode, 0x25 | 0x9e)
                    );
                    assert!(
                        parsed.is_ok() || refused_lba,
                        "{:#x} byte {byte} bit {bit}: {parsed:?}",
                        c.opcode
                    );
                    assert!(!matches!(parsed, Ok(Cdb::Unknown(_))));
                }
            }
        }
    }

    #[test]
    fn every_reported_command_is_executed() {
        let mut lu = lu(true);
        for c in COMMANDS {
            let mut cdb = vec![0u8; c.usage.len()];
            cdb[0] = c.opcode;
            cdb[1] = c.sa.unwrap_or(0);
            let o = lu.execute(NexusId(1), &cdb);
            assert_ne!(
                o,
                Outcome::Check(Sense::invalid_opcode()),
                "{:#x}",
                c.opcode
            );
        }
    }

    #[test]
    fn all_commands() {
        let d = data(lu(true).execute(NexusId(1), &rsoc(false, 0, 0, 0)));
        let len = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
        assert_eq!(len, d.len() - 4);
        assert_eq!(len, COMMANDS.len() * 8);
        // READ CAPACITY(16): SERVACTV, service action 10h, 16 bytes.
        let rc16 = d[4..].chunks(8).find(|c| c[0] == 0x9e).unwrap();
        assert_eq!(rc16, &[0x9e, 0, 0x00, 0x10, 0, 0x01, 0, 16]);
        let d = data(lu(false).execute(NexusId(1), &rsoc(true, 0, 0, 0)));
        assert_eq!(d.len(), 4 + (COMMANDS.len() - 1) * 20);
        assert!(d[4..]
            .chunks(20)
            .all(|c| c[5] & 0x02 != 0 && c[8..10] == [0, 0x0a]));
        assert!(d[4..].chunks(20).all(|c| c[0] != 0x42));
    }

    #[test]
    fn one_command() {
        let mut lu = lu(true);
        let d = data(lu.execute(NexusId(1), &rsoc(false, 1, 0x28, 0)));
        assert_eq!(
            d,
            vec![0, 0x03, 0, 10, 0x28, 0x18, FF, FF, FF, FF, 0, FF, FF, 0]
        );
        let d = data(lu.execute(NexusId(1), &rsoc(true, 2, 0x9e, 0x10)));
        assert_eq!(&d[..6], &[0, 0x83, 0, 16, 0x9e, 0x10]);
        assert_eq!(d.len(), 4 + 16 + 12);
        // Asked the wrong way round.
        let s = Sense::invalid_field_in_cdb(3, None);
        assert_eq!(
            lu.execute(NexusId(1), &rsoc(false, 1, 0x9e, 0x10)),
            Outcome::Check(s)
        );
        assert_eq!(
            lu.execute(NexusId(1), &rsoc(false, 2, 0x28, 0)),
            Outcome::Check(s)
        );
        // Unknown commands and service actions are "not supported".
        assert_eq!(
            data(lu.execute(NexusId(1), &rsoc(false, 1, 0x5e, 0))),
            vec![0, 1, 0, 0]
        );
        assert_eq!(
            data(lu.execute(NexusId(1), &rsoc(false, 2, 0x9e, 0x12))),
            vec![0, 1, 0, 0]
        );
        assert_eq!(
            lu.execute(NexusId(1), &rsoc(false, 3, 0x28, 0)),
            Outcome::Check(Sense::invalid_field_in_cdb(2, Some(2)))
        );
        // Other MAINTENANCE IN service actions are not implemented.
        let mut c = rsoc(false, 0, 0, 0);
        c[1] = 0x0a;
        assert_eq!(
            lu.execute(NexusId(1), &c),
            Outcome::Check(Sense::invalid_opcode())
        );
    }
}
