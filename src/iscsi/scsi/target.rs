//! The SCSI target device: its logical units, LUN addressing and REPORT LUNS.
//!
//! [`Target::execute`] routes a command by the 8-byte LUN of the iSCSI PDU
//! (RFC 7143 §11.3.4, SAM-5 §4.7) to a [`LogicalUnit`], and answers what no
//! single unit can: REPORT LUNS (SPC-4 §6.27) for the whole inventory, and
//! commands to a LUN with no unit behind it (SPC-4 §6.4.2: INQUIRY answers
//! peripheral qualifier 011b, everything else LOGICAL UNIT NOT SUPPORTED).
//!
//! LUNs 0..=255 use peripheral device addressing and 256..=16383 flat space
//! addressing (SAM-5 §4.7.7); other address methods are treated as unmapped.
//!
//! Not done: the REPORT LUNS well-known logical unit, hierarchical LUNs.

use super::cdb::{opcode, Cdb};
use super::inquiry;
use super::lu::{truncate, LogicalUnit, NexusId, Outcome, Parameters};
use super::sense::{Sense, SenseKey};

/// The highest LUN flat space addressing can name.
pub const MAX_LUN: u16 = 0x3fff;

/// Decodes a single-level LUN (SAM-5 §4.7.7); `None` for anything else.
pub fn decode_lun(raw: [u8; 8]) -> Option<u16> {
    let [b0, b1, rest @ ..] = raw;
    if rest != [0; 6] {
        return None;
    }
    match b0 >> 6 {
        0b00 if b0 == 0 => Some(u16::from(b1)),
        0b01 => Some(u16::from_be_bytes([b0 & 0x3f, b1])),
        _ => None,
    }
}

/// Encodes a LUN the way [`decode_lun`] reads it (and REPORT LUNS lists it).
pub fn encode_lun(lun: u16) -> [u8; 8] {
    let [hi, lo] = (lun & MAX_LUN).to_be_bytes();
    let b0 = if lun < 256 { 0 } else { 0x40 | hi };
    [b0, lo, 0, 0, 0, 0, 0, 0]
}

/// REPORT LUNS parameter data for `luns` (SPC-4 §6.27.2). The LUN LIST
/// LENGTH is that of the whole list even when the allocation length cuts it.
pub fn report_luns(select_report: u8, alloc_len: u32, luns: &[u16]) -> Result<Outcome, Sense> {
    let listed: &[u16] = match select_report {
        // 00h logical units, 02h all: the same here, there are no well-known
        // logical units. 01h: only well-known ones, so none.
        0x00 | 0x02 => luns,
        0x01 => &[],
        _ => return Err(Sense::invalid_field_in_cdb(2, None)),
    };
    // SPC-3 §6.21: an allocation length below 16 is an error. libiscsi's
    // suite expects it, and the header plus one LUN is the least useful answer.
    if alloc_len < 16 {
        return Err(Sense::invalid_field_in_cdb(6, None));
    }
    let list_len = u32::try_from(listed.len() * 8).unwrap_or(u32::MAX);
    let mut d = Vec::with_capacity(8 + listed.len() * 8);
    d.extend_from_slice(&list_len.to_be_bytes());
    d.extend_from_slice(&[0; 4]);
    for &lun in listed {
        d.extend_from_slice(&encode_lun(lun));
    }
    Ok(Outcome::Data(truncate(d, alloc_len as usize)))
}

/// A target's logical units, LUN `i` at index `i`.
#[derive(Debug, Clone, Default)]
pub struct Target {
    lus: Vec<LogicalUnit>,
}

impl Target {
    pub fn new(lus: Vec<LogicalUnit>) -> Target {
        Target { lus }
    }

    pub fn lu(&self, lun: u16) -> Option<&LogicalUnit> {
        self.lus.get(usize::from(lun))
    }

    pub fn lu_mut(&mut self, lun: u16) -> Option<&mut LogicalUnit> {
        self.lus.get_mut(usize::from(lun))
    }

    /// The LUNs in service, ascending.
    pub fn luns(&self) -> Vec<u16> {
        (0..self.lus.len())
            .filter_map(|i| u16::try_from(i).ok())
            .collect()
    }

    /// Executes one command addressed to the raw LUN field of its PDU.
    pub fn execute(&mut self, nexus: NexusId, lun: [u8; 8], cdb: &[u8]) -> Outcome {
        if cdb.first() == Some(&opcode::REPORT_LUNS) {
            return self.report_luns(nexus, lun, cdb);
        }
        match decode_lun(lun).and_then(|l| self.lus.get_mut(usize::from(l))) {
            Some(unit) => unit.execute(nexus, cdb),
            None => unmapped(cdb),
        }
    }

    fn report_luns(&mut self, nexus: NexusId, lun: [u8; 8], cdb: &[u8]) -> Outcome {
        let (select_report, alloc_len) = match Cdb::parse(cdb) {
            Ok(Cdb::ReportLuns {
                select_report,
                alloc_len,
            }) => (select_report, alloc_len),
            Ok(_) => return Outcome::Check(Sense::invalid_opcode()),
            Err(sense) => return Outcome::Check(sense),
        };
        let luns = self.luns();
        if let Some(unit) = decode_lun(lun).and_then(|l| self.lus.get_mut(usize::from(l))) {
            unit.clear_luns_changed(nexus);
        }
        report_luns(select_report, alloc_len, &luns).unwrap_or_else(Outcome::Check)
    }

    /// Completes a command whose parameter list has arrived (see
    /// [`LogicalUnit::handle_parameters`]).
    pub fn handle_parameters(
        &mut self,
        nexus: NexusId,
        lun: [u8; 8],
        params: Parameters,
        data: &[u8],
    ) -> Outcome {
        match decode_lun(lun).and_then(|l| self.lus.get_mut(usize::from(l))) {
            Some(unit) => unit.handle_parameters(nexus, params, data),
            // The unit vanished between command and data (a reload).
            None => Outcome::Check(Sense::lun_not_supported()),
        }
    }

    /// A session ended: every unit forgets its nexus.
    pub fn nexus_lost(&mut self, nexus: NexusId) {
        self.lus.iter_mut().for_each(|lu| lu.nexus_lost(nexus));
    }

    /// TARGET WARM RESET (RFC 7143 §11.5.1): every unit is reset.
    pub fn reset(&mut self) {
        self.lus.iter_mut().for_each(LogicalUnit::reset);
    }

    /// Adds a unit as the next LUN; every nexus learns the inventory changed.
    pub fn push(&mut self, lu: LogicalUnit) {
        self.lus.iter_mut().for_each(LogicalUnit::luns_changed);
        self.lus.push(lu);
    }
}

/// A command to a LUN with no logical unit behind it.
fn unmapped(cdb: &[u8]) -> Outcome {
    match Cdb::parse(cdb) {
        Ok(Cdb::Inquiry {
            evpd: false,
            page_code: 0,
            alloc_len,
        }) => Outcome::Data(truncate(
            inquiry::standard(inquiry::NO_LUN),
            alloc_len.into(),
        )),
        // SPC-4 §6.29: REQUEST SENSE to an unsupported LUN returns the sense
        // data with status GOOD.
        Ok(Cdb::RequestSense {
            desc: false,
            alloc_len,
        }) => Outcome::Data(truncate(
            Sense::lun_not_supported().encode().to_vec(),
            alloc_len.into(),
        )),
        Err(sense)
            if sense.key == SenseKey::IllegalRequest && cdb.first() == Some(&opcode::INQUIRY) =>
        {
            Outcome::Check(sense)
        }
        _ => Outcome::Check(Sense::lun_not_supported()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iscsi::scsi::lu::LuConfig;

    const N: NexusId = NexusId(7);

    fn target(n: u16) -> Target {
        Target::new(
            (0..n)
                .map(|lun| {
                    LogicalUnit::new(LuConfig {
                        target_iqn: "iqn.2026-01.example:disk0".into(),
                        lun,
                        size_bytes: 1 << 20,
                        read_only: false,
                        unmap: false,
                    })
                })
                .collect(),
        )
    }

    fn report_luns_cdb(alloc: u32) -> Vec<u8> {
        let mut c = vec![0xa0, 0, 0, 0, 0, 0];
        c.extend_from_slice(&alloc.to_be_bytes());
        c.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        c
    }

    #[test]
    fn lun_addressing_round_trips() {
        for lun in [0u16, 1, 255, 256, 0x3fff] {
            assert_eq!(decode_lun(encode_lun(lun)), Some(lun));
        }
        assert_eq!(encode_lun(7), [0, 7, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode_lun(0x0123), [0x41, 0x23, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode_lun([0x01, 0, 0, 0, 0, 0, 0, 0]), None); // bus 1
        assert_eq!(decode_lun([0x80, 0, 0, 0, 0, 0, 0, 0]), None); // logical unit addressing
        assert_eq!(decode_lun([0, 0, 0, 1, 0, 0, 0, 0]), None); // second level
    }

    #[test]
    fn bc_19_report_luns_alloc_512() {
        let mut t = target(1);
        let o = t.execute(N, encode_lun(0), &report_luns_cdb(512));
        let want = vec![0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(o, Outcome::Data(want));
        // 16 bytes against EDTL 512: the session reports underflow 496.
        assert_eq!(o.transfer().len, 16);
    }

    #[test]
    fn bc_19_report_luns_alloc_16_and_short() {
        let mut t = target(1);
        let o = t.execute(N, encode_lun(0), &report_luns_cdb(16));
        assert_eq!(o.transfer().len, 16);
        for alloc in [0, 4, 8, 15] {
            let o = t.execute(N, encode_lun(0), &report_luns_cdb(alloc));
            assert_eq!(
                o,
                Outcome::Check(Sense::invalid_field_in_cdb(6, None)),
                "alloc {alloc}"
            );
        }
    }

    #[test]
    fn bc_19_two_luns_alloc_16_keeps_full_length() {
        let mut t = target(2);
        let o = t.execute(N, encode_lun(0), &report_luns_cdb(16));
        assert_eq!(
            o,
            Outcome::Data(vec![0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        );
        let o = t.execute(N, encode_lun(1), &report_luns_cdb(24));
        assert_eq!(o.transfer().len, 24);
    }

    #[test]
    fn report_luns_select_report_and_unmapped_lun() {
        let mut t = target(1);
        let mut c = report_luns_cdb(64);
        c[2] = 0x01;
        assert_eq!(t.execute(N, encode_lun(0), &c), Outcome::Data(vec![0; 8]));
        c[2] = 0x10;
        assert_eq!(
            t.execute(N, encode_lun(0), &c),
            Outcome::Check(Sense::invalid_field_in_cdb(2, None))
        );
        // REPORT LUNS answers on any LUN, mapped or not.
        let o = t.execute(N, encode_lun(9), &report_luns_cdb(64));
        assert_eq!(o.transfer().len, 16);
    }

    #[test]
    fn bc_25_unmapped_lun() {
        let mut t = target(1);
        let lun7 = encode_lun(7);
        let Outcome::Data(d) = t.execute(N, lun7, &[0x12, 0, 0, 0, 0xff, 0]) else {
            panic!()
        };
        assert_eq!(d[0], 0x7f);
        assert_eq!(d.len(), 74);
        for cdb in [
            &[0x12, 0x01, 0x83, 0x00, 0xff, 0x00][..],
            &[0x12, 0x01, 0x00, 0x00, 0xff, 0x00][..],
            &[0x00, 0, 0, 0, 0, 0][..],
            &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0][..],
            &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
            &[0xff, 0, 0, 0, 0, 0][..],
        ] {
            assert_eq!(
                t.execute(N, lun7, cdb),
                Outcome::Check(Sense::lun_not_supported())
            );
        }
        let Outcome::Data(d) = t.execute(N, lun7, &[0x03, 0, 0, 0, 18, 0]) else {
            panic!()
        };
        assert_eq!(&d[12..14], &[0x25, 0x00]);
        // Malformed INQUIRY stays malformed.
        assert_eq!(
            t.execute(N, lun7, &[0x12, 0x02, 0, 0, 0xff, 0]),
            Outcome::Check(Sense::invalid_field_in_cdb(1, Some(1)))
        );
    }

    #[test]
    fn luns_changed_is_reported_and_cleared_by_report_luns() {
        let mut t = target(1);
        assert_eq!(t.execute(N, encode_lun(0), &[0; 6]).transfer().len, 0); // power on UA
        assert_eq!(t.execute(N, encode_lun(0), &[0; 6]), Outcome::Good);
        t.push(target(2).lu(1).cloned().unwrap());
        let o = t.execute(N, encode_lun(0), &report_luns_cdb(64));
        assert_eq!(o.transfer().len, 24);
        // REPORT LUNS cleared it: TEST UNIT READY is GOOD.
        assert_eq!(t.execute(N, encode_lun(0), &[0; 6]), Outcome::Good);
        t.push(target(3).lu(2).cloned().unwrap());
        let Outcome::Check(s) = t.execute(N, encode_lun(0), &[0; 6]) else {
            panic!()
        };
        assert_eq!(s.triple(), (6, 0x3f, 0x0e));
    }

    /// What a freshly logged-in initiator sends, in the order Linux's sd and
    /// libiscsi's tools do: each answer as the session layer would see it.
    #[test]
    fn initiator_probe_sequence() {
        let mut t = target(2);
        let lun0 = encode_lun(0);
        let data = |o: Outcome| match o {
            Outcome::Data(d) => d,
            other => panic!("expected data, got {other:?}"),
        };
        // REPORT LUNS and INQUIRY pass the pending unit attention by.
        assert_eq!(data(t.execute(N, lun0, &report_luns_cdb(256))).len(), 24);
        assert_eq!(data(t.execute(N, lun0, &[0x12, 0, 0, 0, 36, 0])).len(), 36);
        // TEST UNIT READY meets it once, then the unit is ready.
        let Outcome::Check(ua) = t.execute(N, lun0, &[0; 6]) else {
            panic!()
        };
        assert_eq!(ua.triple(), (6, 0x29, 0x00));
        assert_eq!(t.execute(N, lun0, &[0; 6]), Outcome::Good);
        // Capacity, VPD pages, caching page, supported opcodes.
        let rc16 = [0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0];
        assert_eq!(
            &data(t.execute(N, lun0, &rc16))[..12],
            &[0, 0, 0, 0, 0, 0, 0x07, 0xff, 0, 0, 2, 0]
        );
        for page in [0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2] {
            let d = data(t.execute(N, lun0, &[0x12, 1, page, 0, 0xff, 0]));
            assert_eq!(d[1], page);
        }
        let d = data(t.execute(N, lun0, &[0x1a, 0x08, 0x08, 0, 0xff, 0]));
        assert_eq!(d[4 + 2] & 0x04, 0x04, "WCE");
        let rsoc = [0xa3, 0x0c, 0x01, 0x93, 0, 0, 0, 0, 2, 0, 0, 0];
        assert_eq!(data(t.execute(N, lun0, &rsoc))[1], 0x03);
        // The first sector, by reference.
        let read = t.execute(N, lun0, &[0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0]);
        assert_eq!(
            read,
            Outcome::Read(crate::iscsi::scsi::lu::Extent {
                offset: 0,
                len: 4096
            })
        );
        // LUN 1 has its own unit attention.
        assert!(matches!(
            t.execute(N, encode_lun(1), &[0; 6]),
            Outcome::Check(_)
        ));
    }

    #[test]
    fn reset_and_nexus_lost() {
        let mut t = target(1);
        t.execute(N, encode_lun(0), &[0; 6]);
        t.reset();
        let Outcome::Check(s) = t.execute(N, encode_lun(0), &[0; 6]) else {
            panic!()
        };
        assert_eq!(s.triple(), (6, 0x29, 0x00));
        t.nexus_lost(N);
        assert!(matches!(
            t.execute(N, encode_lun(0), &[0; 6]),
            Outcome::Check(_)
        ));
        let o = t.handle_parameters(N, encode_lun(3), Parameters::Unmap, &[]);
        assert_eq!(o, Outcome::Check(Sense::lun_not_supported()));
    }
}
