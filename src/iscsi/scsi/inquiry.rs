//! INQUIRY: standard data (SPC-4 §6.4.2) and the VPD pages a disk needs.
//!
//! Pages: 00h supported pages (SPC-4 §7.8.13), 80h unit serial number
//! (§7.8.14), 83h device identification (§7.8.6), B0h block limits
//! (SBC-3 §6.6.4), B1h block device characteristics (§6.6.2), B2h logical
//! block provisioning (§6.6.5). Any other page, or a page code with EVPD=0,
//! is INVALID FIELD IN CDB (SPC-4 §6.4.1).
//!
//! Identity is derived, not stored: the serial number and the NAA come from a
//! fixed hash (FNV-1a) of the target IQN and the LUN, so they survive restarts
//! and are the same on every dls serving the same configuration, which is what
//! multipath and udev need.
//!
//! Not done: TPGS/ALUA (no target port group designator), the extended
//! INQUIRY data page (86h), management network addresses (85h).

use super::lu::{
    LogicalUnit, Outcome, MAX_TRANSFER_BLOCKS, MAX_UNMAP_BLOCKS, MAX_UNMAP_DESCRIPTORS,
    MAX_WRITE_SAME_BLOCKS,
};
use super::sense::Sense;

/// T10 vendor identification, 8 bytes, space padded.
pub const VENDOR: &[u8; 8] = b"DLS     ";
/// Product identification, 16 bytes, space padded.
pub const PRODUCT: &[u8; 16] = b"dls disk        ";

/// Peripheral device type of a direct access block device.
const TYPE_DISK: u8 = 0x00;
/// Peripheral qualifier 011b, type 1Fh: no logical unit here (SPC-4 §6.4.2).
pub const NO_LUN: u8 = 0x7f;

/// Version descriptors (SPC-4 table 149): SAM-5, SPC-4, SBC-3, iSCSI.
const VERSION_DESCRIPTORS: [u16; 4] = [0x00a0, 0x0460, 0x04c0, 0x0960];

/// The VPD pages served, ascending as page 00h must list them.
const PAGES: [u8; 6] = [0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2];

/// Unit serial number and NAA locally assigned identifier for a target IQN
/// and LUN.
pub fn identity(iqn: &str, lun: u16) -> (String, u64) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in iqn.as_bytes().iter().chain(&[0]).chain(&lun.to_be_bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // NAA 3h (locally assigned, SPC-4 §7.8.6.6.4): the top nibble is the NAA.
    let naa = (3u64 << 60) | (h & 0x0fff_ffff_ffff_ffff);
    (format!("{h:016x}"), naa)
}

/// Standard INQUIRY data; `qualified_type` is byte 0 (a disk, or [`NO_LUN`]).
pub fn standard(qualified_type: u8) -> Vec<u8> {
    let mut d = vec![0u8; 74];
    d[0] = qualified_type;
    d[2] = 0x06; // SPC-4
    d[3] = 0x12; // HiSup, response data format 2
    d[4] = (d.len() - 5) as u8;
    d[7] = 0x02; // CmdQue
    d[8..16].copy_from_slice(VENDOR);
    d[16..32].copy_from_slice(PRODUCT);
    d[32..36].copy_from_slice(&revision());
    for (i, v) in VERSION_DESCRIPTORS.iter().enumerate() {
        let at = 58 + 2 * i;
        d[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }
    d
}

/// PRODUCT REVISION LEVEL: "major.minor" of this crate, space padded.
fn revision() -> [u8; 4] {
    let mut r = *b"    ";
    let v = concat!(
        env!("CARGO_PKG_VERSION_MAJOR"),
        ".",
        env!("CARGO_PKG_VERSION_MINOR")
    );
    for (dst, src) in r.iter_mut().zip(v.bytes()) {
        *dst = src;
    }
    r
}

/// Answers INQUIRY for a mapped logical unit.
pub fn respond(
    lu: &LogicalUnit,
    evpd: bool,
    page_code: u8,
    alloc_len: u16,
) -> Result<Outcome, Sense> {
    let data = if !evpd {
        if page_code != 0 {
            return Err(Sense::invalid_field_in_cdb(2, None));
        }
        standard(TYPE_DISK)
    } else {
        vpd(lu, page_code).ok_or(Sense::invalid_field_in_cdb(2, None))?
    };
    Ok(Outcome::Data(super::lu::truncate(data, alloc_len.into())))
}

fn vpd(lu: &LogicalUnit, page: u8) -> Option<Vec<u8>> {
    let body = match page {
        0x00 => PAGES.to_vec(),
        0x80 => lu.serial().as_bytes().to_vec(),
        0x83 => device_identification(lu),
        0xb0 => block_limits(lu),
        0xb1 => block_characteristics(),
        0xb2 => provisioning(lu),
        _ => return None,
    };
    let mut d = Vec::with_capacity(4 + body.len());
    d.extend_from_slice(&[TYPE_DISK, page]);
    // Every body here is far below 64 KiB.
    d.extend_from_slice(&u16::try_from(body.len()).unwrap_or(u16::MAX).to_be_bytes());
    d.extend_from_slice(&body);
    Some(d)
}

/// Appends one designation descriptor (SPC-4 §7.8.6.1).
fn designator(out: &mut Vec<u8>, code_set: u8, piv_assoc_type: u8, id: &[u8]) {
    out.push(code_set);
    out.push(piv_assoc_type);
    out.push(0);
    out.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(id.get(..255).unwrap_or(id));
}

/// SCSI name strings are NUL terminated and padded to a multiple of 4.
fn scsi_name(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.truncate(251);
    v.push(0);
    while !v.len().is_multiple_of(4) {
        v.push(0);
    }
    v
}

fn device_identification(lu: &LogicalUnit) -> Vec<u8> {
    // Code sets: 1 binary, 2 ASCII, 3 UTF-8. Byte 1: PIV (bit 7),
    // ASSOCIATION (5-4: 0 logical unit, 1 target port, 2 target device),
    // DESIGNATOR TYPE (3-0). Protocol identifier 5 is iSCSI.
    const ISCSI: u8 = 0x50;
    let mut d = Vec::new();
    designator(&mut d, 0x01, 0x03, &lu.naa().to_be_bytes());
    let mut t10 = VENDOR.to_vec();
    t10.extend_from_slice(lu.serial().as_bytes());
    designator(&mut d, 0x02, 0x01, &t10);
    // Relative target port 1: dls has one target port per target.
    designator(&mut d, ISCSI | 0x01, 0x94, &[0, 0, 0, 1]);
    let iqn = &lu.config().target_iqn;
    designator(
        &mut d,
        ISCSI | 0x03,
        0x98,
        &scsi_name(&format!("{iqn},t,0x0001")),
    );
    designator(&mut d, ISCSI | 0x03, 0xa8, &scsi_name(iqn));
    d
}

fn block_limits(lu: &LogicalUnit) -> Vec<u8> {
    let mut d = vec![0u8; 0x3c];
    // Offsets below are of the page, the body starts at byte 4.
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(dst) = d.get_mut(at - 4..at - 4 + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    };
    put(4, &[0x01]); // WSNZ: WRITE SAME of 0 blocks is refused
    put(6, &8u16.to_be_bytes()); // OPTIMAL TRANSFER LENGTH GRANULARITY: 4 KiB
    put(8, &MAX_TRANSFER_BLOCKS.to_be_bytes());
    put(12, &(1u32 << 11).to_be_bytes()); // OPTIMAL TRANSFER LENGTH: 1 MiB
    if lu.config().unmap {
        put(20, &MAX_UNMAP_BLOCKS.to_be_bytes());
        put(24, &MAX_UNMAP_DESCRIPTORS.to_be_bytes());
    }
    put(36, &u64::from(MAX_WRITE_SAME_BLOCKS).to_be_bytes());
    d
}

fn block_characteristics() -> Vec<u8> {
    // MEDIUM ROTATION RATE 0: not reported; the store may be a disk or flash
    // and dls cannot tell. NOMINAL FORM FACTOR 0: not reported.
    vec![0u8; 0x3c]
}

fn provisioning(lu: &LogicalUnit) -> Vec<u8> {
    let mut d = vec![0u8; 4];
    if lu.config().unmap {
        // LBPU, LBPWS, LBPWS10, LBPRZ; provisioning type 2 (thin).
        d[1] = 0x80 | 0x40 | 0x20 | 0x04;
        d[2] = 0x02;
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iscsi::scsi::lu::{LuConfig, NexusId};

    fn lu(unmap: bool) -> LogicalUnit {
        LogicalUnit::new(LuConfig {
            target_iqn: "iqn.2026-01.example:disk0".into(),
            lun: 0,
            size_bytes: 1 << 20,
            read_only: false,
            unmap,
        })
    }

    fn data(o: Outcome) -> Vec<u8> {
        match o {
            Outcome::Data(d) => d,
            other => panic!("expected data, got {other:?}"),
        }
    }

    fn inq(lu: &mut LogicalUnit, cdb: &[u8]) -> Outcome {
        // Inquiry is exempt from unit attentions, so a fresh nexus is fine.
        lu.execute(NexusId(1), cdb)
    }

    #[test]
    fn identity_is_stable_and_distinct() {
        let (s0, n0) = identity("iqn.2026-01.example:disk0", 0);
        let (s1, n1) = identity("iqn.2026-01.example:disk0", 1);
        assert_eq!(identity("iqn.2026-01.example:disk0", 0), (s0.clone(), n0));
        assert_ne!(s0, s1);
        assert_ne!(n0, n1);
        assert_eq!(n0 >> 60, 3);
        assert_eq!(s0.len(), 16);
        // FNV-1a is fixed: these values must never change between releases,
        // or initiators would see a different disk.
        assert_eq!(s0, "22a9161323b259da");
        assert_eq!(n0, 0x32a9_1613_23b2_59da);
    }

    #[test]
    fn standard_inquiry_fields() {
        let d = data(inq(&mut lu(false), &[0x12, 0, 0, 0, 0xff, 0]));
        assert_eq!(d.len(), 74);
        assert_eq!(&d[..8], &[0x00, 0x00, 0x06, 0x12, 69, 0x00, 0x00, 0x02]);
        assert_eq!(&d[8..16], b"DLS     ");
        assert!(d[32..36].iter().all(|&b| (0x20..0x7f).contains(&b)));
        assert_eq!(
            &d[58..66],
            &[0x00, 0xa0, 0x04, 0x60, 0x04, 0xc0, 0x09, 0x60]
        );
    }

    #[test]
    fn bc_25_supported_pages_lists_itself_ascending() {
        let d = data(inq(&mut lu(false), &[0x12, 0x01, 0x00, 0x00, 0xff, 0x00]));
        assert_eq!(
            d,
            vec![0x00, 0x00, 0x00, 0x06, 0x00, 0x80, 0x83, 0xb0, 0xb1, 0xb2]
        );
    }

    #[test]
    fn bc_25_serial_and_device_identification() {
        let mut lu = lu(false);
        let d = data(inq(&mut lu, &[0x12, 0x01, 0x80, 0x00, 0xff, 0x00]));
        assert_eq!(&d[..4], &[0x00, 0x80, 0x00, 16]);
        assert_eq!(&d[4..], lu.serial().as_bytes());

        let d = data(inq(&mut lu, &[0x12, 0x01, 0x83, 0x00, 0xff, 0x00]));
        assert_eq!(&d[..2], &[0x00, 0x83]);
        assert_eq!(usize::from(u16::from_be_bytes([d[2], d[3]])), d.len() - 4);
        // First designator: NAA, binary, logical unit, 8 bytes, NAA 3h.
        assert_eq!(&d[4..8], &[0x01, 0x03, 0x00, 0x08]);
        assert_eq!(&d[8..16], &lu.naa().to_be_bytes());
        assert_eq!(d[8] >> 4, 3);
        // Second: T10 vendor id "DLS     " + serial.
        assert_eq!(&d[16..20], &[0x02, 0x01, 0x00, 24]);
        assert_eq!(&d[20..28], b"DLS     ");
        // Third: relative target port 1, iSCSI, PIV.
        assert_eq!(&d[44..52], &[0x51, 0x94, 0x00, 0x04, 0, 0, 0, 1]);
        // Fourth: SCSI name string of the target port, padded to 4.
        assert_eq!(&d[52..54], &[0x53, 0x98]);
        let name_len = usize::from(d[55]);
        assert_eq!(name_len % 4, 0);
        assert!(d[56..56 + name_len].starts_with(b"iqn.2026-01.example:disk0,t,0x0001\0"));
    }

    #[test]
    fn bc_25_unsupported_page_and_evpd_zero() {
        let mut lu = lu(false);
        let o = inq(&mut lu, &[0x12, 0x01, 0x86, 0x00, 0xff, 0x00]);
        assert_eq!(o, Outcome::Check(Sense::invalid_field_in_cdb(2, None)));
        assert_eq!(o.transfer().len, 0);
        let o = inq(&mut lu, &[0x12, 0x00, 0x83, 0x00, 0x24, 0x00]);
        assert_eq!(o, Outcome::Check(Sense::invalid_field_in_cdb(2, None)));
    }

    #[test]
    fn bc_25_allocation_length() {
        let mut lu = lu(false);
        let d = data(inq(&mut lu, &[0x12, 0, 0, 0, 5, 0]));
        assert_eq!(d, vec![0x00, 0x00, 0x06, 0x12, 69]);
        assert_eq!(inq(&mut lu, &[0x12, 0, 0, 0, 0, 0]), Outcome::Data(vec![]));
        // 16-bit allocation length.
        let d = data(inq(&mut lu, &[0x12, 1, 0x83, 0x01, 0x00, 0]));
        assert!(d.len() < 256);
    }

    #[test]
    fn block_limits_page() {
        let d = data(inq(&mut lu(true), &[0x12, 1, 0xb0, 0, 64, 0]));
        assert_eq!(d.len(), 64);
        assert_eq!(&d[..4], &[0x00, 0xb0, 0x00, 0x3c]);
        assert_eq!(d[4], 0x01);
        assert_eq!(&d[8..12], &MAX_TRANSFER_BLOCKS.to_be_bytes());
        assert_eq!(&d[20..24], &MAX_UNMAP_BLOCKS.to_be_bytes());
        assert_eq!(&d[24..28], &MAX_UNMAP_DESCRIPTORS.to_be_bytes());
        assert_eq!(&d[36..44], &u64::from(MAX_WRITE_SAME_BLOCKS).to_be_bytes());
        // Without unmap support the unmap limits are 0 (libiscsi checks).
        let d = data(inq(&mut lu(false), &[0x12, 1, 0xb0, 0, 64, 0]));
        assert_eq!(&d[20..28], &[0; 8]);
    }

    #[test]
    fn characteristics_and_provisioning_pages() {
        let d = data(inq(&mut lu(false), &[0x12, 1, 0xb1, 0, 64, 0]));
        assert_eq!(&d[..4], &[0x00, 0xb1, 0x00, 0x3c]);
        let d = data(inq(&mut lu(true), &[0x12, 1, 0xb2, 0, 64, 0]));
        assert_eq!(d, vec![0x00, 0xb2, 0x00, 0x04, 0x00, 0xe4, 0x02, 0x00]);
        let d = data(inq(&mut lu(false), &[0x12, 1, 0xb2, 0, 64, 0]));
        assert_eq!(d, vec![0x00, 0xb2, 0x00, 0x04, 0, 0, 0, 0]);
    }
}
