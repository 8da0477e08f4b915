//! MODE SENSE and MODE SELECT (SPC-4 §6.9-6.12, §7.5; SBC-3 §6.4).
//!
//! Pages: caching 08h (SBC-3 §6.4.5; WCE=1 because writes land in the page
//! cache and reach stable storage on FUA or SYNCHRONIZE CACHE), control 0Ah
//! (SPC-4 §7.5.8) and informational exceptions control 1Ch (§7.5.14), and
//! 3Fh for all of them. The block descriptor is the short one, or the long
//! one for MODE SENSE(10) with LLBAA.
//!
//! The only changeable parameter is SWP (software write protect) of the
//! control page. MODE SELECT accepts a parameter list that changes nothing
//! else; anything else is INVALID FIELD IN PARAMETER LIST. Saved values do
//! not exist: PC=3 is SAVING PARAMETERS NOT SUPPORTED and SP=1 is refused.
//!
//! Not done: subpages (only 00h, and FFh with page 3Fh), the read-write error
//! recovery page (01h), changing the block length or the capacity.

use super::cdb::{ModeSelect, ModeSense, PageControl};
use super::lu::{truncate, AfterDataOut, LogicalUnit, Outcome, Parameters, BLOCK_SIZE};
use super::sense::Sense;

const PAGE_CACHING: u8 = 0x08;
const PAGE_CONTROL: u8 = 0x0a;
const PAGE_INFORMATIONAL_EXCEPTIONS: u8 = 0x1c;
const PAGE_ALL: u8 = 0x3f;

/// The pages of "all pages", in ascending order (SPC-4 §6.11).
const PAGES: [u8; 3] = [PAGE_CACHING, PAGE_CONTROL, PAGE_INFORMATIONAL_EXCEPTIONS];

/// SWP: byte 4 bit 3 of the control page.
const SWP_BYTE: usize = 4;
const SWP_BIT: u8 = 0x08;

/// One mode page with its header: current or default values, or the mask of
/// changeable bits. Saved values do not exist; asking for them gets defaults.
fn page(lu: &LogicalUnit, code: u8, pc: PageControl) -> Option<Vec<u8>> {
    let mut p = match code {
        PAGE_CACHING => {
            let mut p = vec![0u8; 20];
            p[2] = 0x04; // WCE
            p
        }
        PAGE_CONTROL => {
            let mut p = vec![0u8; 12];
            p[2] = 0x02; // GLTSD: no log parameters are saved
            p[3] = 0x10; // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering
            if lu.swp() && pc == PageControl::Current {
                p[SWP_BYTE] |= SWP_BIT;
            }
            p[8..10].copy_from_slice(&0xffffu16.to_be_bytes()); // BUSY TIMEOUT: unlimited
            p
        }
        PAGE_INFORMATIONAL_EXCEPTIONS => {
            let mut p = vec![0u8; 12];
            p[2] = 0x08; // DEXCPT: no failure prediction to report
            p
        }
        _ => return None,
    };
    if pc == PageControl::Changeable {
        p.iter_mut().skip(2).for_each(|b| *b = 0);
        if code == PAGE_CONTROL {
            p[SWP_BYTE] = SWP_BIT;
        }
    }
    p[0] = code;
    p[1] = (p.len() - 2) as u8;
    Some(p)
}

/// DEVICE-SPECIFIC PARAMETER of the mode header (SBC-3 §6.4.1): WP and DPOFUA.
fn device_specific(lu: &LogicalUnit) -> u8 {
    let wp = if lu.write_protected() { 0x80 } else { 0 };
    wp | 0x10
}

/// Answers MODE SENSE(6) or (10).
pub fn sense(lu: &LogicalUnit, ms: &ModeSense) -> Result<Outcome, Sense> {
    if ms.pc == PageControl::Saved {
        return Err(Sense::saving_parameters_not_supported());
    }
    let changeable = ms.pc == PageControl::Changeable;
    match (ms.page, ms.subpage) {
        (_, 0x00) | (PAGE_ALL, 0xff) => {}
        _ => return Err(Sense::invalid_field_in_cdb(3, None)),
    }
    let mut pages = Vec::new();
    if ms.page == PAGE_ALL {
        for code in PAGES {
            pages.extend(page(lu, code, ms.pc).unwrap_or_default());
        }
    } else {
        pages = page(lu, ms.page, ms.pc).ok_or(Sense::invalid_field_in_cdb(2, Some(5)))?;
    }

    let long = ms.ten && ms.llbaa;
    let mut bd = Vec::new();
    if !ms.dbd && !changeable {
        let blocks = lu.blocks();
        if long {
            bd.extend_from_slice(&blocks.to_be_bytes());
            bd.extend_from_slice(&[0; 4]);
            bd.extend_from_slice(&BLOCK_SIZE.to_be_bytes());
        } else {
            // NUMBER OF BLOCKS saturates at FFFFFFFFh (SBC-3 §6.4.2.2).
            let short = u32::try_from(blocks).unwrap_or(u32::MAX);
            bd.extend_from_slice(&short.to_be_bytes());
            bd.push(0);
            bd.extend_from_slice(&BLOCK_SIZE.to_be_bytes()[1..]);
        }
    } else if !ms.dbd {
        bd.resize(if long { 16 } else { 8 }, 0);
    }

    let mut d = Vec::with_capacity(8 + bd.len() + pages.len());
    if ms.ten {
        let len = 6 + bd.len() + pages.len();
        d.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
        d.extend_from_slice(&[0, device_specific(lu), u8::from(long), 0]);
        d.extend_from_slice(&u16::try_from(bd.len()).unwrap_or(0).to_be_bytes());
    } else {
        // The pages here total well under 255 bytes.
        let len = 3 + bd.len() + pages.len();
        d.extend_from_slice(&[u8::try_from(len).unwrap_or(u8::MAX), 0, device_specific(lu)]);
        d.push(u8::try_from(bd.len()).unwrap_or(0));
    }
    d.extend_from_slice(&bd);
    d.extend_from_slice(&pages);
    Ok(Outcome::Data(truncate(d, ms.alloc_len.into())))
}

/// MODE SELECT before its parameter list arrives.
pub fn select_cdb(ms: &ModeSelect) -> Result<Outcome, Sense> {
    if ms.sp {
        return Err(Sense::invalid_field_in_cdb(1, Some(0)));
    }
    if ms.param_len == 0 {
        return Ok(Outcome::Good);
    }
    Ok(Outcome::DataOut {
        len: ms.param_len.into(),
        then: AfterDataOut::Parameters(Parameters::ModeSelect { ten: ms.ten }),
    })
}

/// Applies a MODE SELECT parameter list: header, block descriptors, pages.
pub fn select(lu: &mut LogicalUnit, ten: bool, data: &[u8]) -> Result<(), Sense> {
    let (hdr_len, medium, long, bd_len) = if ten {
        let Some(h) = data.first_chunk::<8>() else {
            return Err(Sense::parameter_list_length_error());
        };
        (
            8,
            h[2],
            h[4] & 0x01 != 0,
            usize::from(u16::from_be_bytes([h[6], h[7]])),
        )
    } else {
        let Some(h) = data.first_chunk::<4>() else {
            return Err(Sense::parameter_list_length_error());
        };
        (4, h[1], false, usize::from(h[3]))
    };
    if medium != 0 {
        return Err(Sense::invalid_field_in_parameter_list(if ten {
            2
        } else {
            1
        }));
    }
    let Some(rest) = data.get(hdr_len..) else {
        return Err(Sense::parameter_list_length_error());
    };
    let Some((bds, pages)) = rest.split_at_checked(bd_len) else {
        return Err(Sense::parameter_list_length_error());
    };
    check_block_descriptors(lu, bds, long, hdr_len)?;

    let mut swp = lu.swp();
    let mut at = hdr_len + bd_len;
    let mut rest = pages;
    while let Some(&[code, len]) = rest.first_chunk::<2>() {
        // PS is ignored on MODE SELECT; SPF (subpage format) names a
        // subpage, and there are none.
        if code & 0x40 != 0 {
            return Err(Sense::invalid_field_in_parameter_list(at as u16));
        }
        let Some(current) = page(lu, code & 0x3f, PageControl::Current) else {
            return Err(Sense::invalid_field_in_parameter_list(at as u16));
        };
        let Some((sent, tail)) = rest.split_at_checked(2 + usize::from(len)) else {
            return Err(Sense::parameter_list_length_error());
        };
        if sent.len() != current.len() {
            return Err(Sense::invalid_field_in_parameter_list(at as u16 + 1));
        }
        let mask = page(lu, code & 0x3f, PageControl::Changeable).unwrap_or_default();
        for (i, ((&s, &c), &m)) in sent.iter().zip(&current).zip(&mask).enumerate().skip(2) {
            if (s ^ c) & !m != 0 {
                return Err(Sense::invalid_field_in_parameter_list((at + i) as u16));
            }
        }
        if code & 0x3f == PAGE_CONTROL {
            swp = sent.get(SWP_BYTE).is_some_and(|b| b & SWP_BIT != 0);
        }
        at += sent.len();
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(Sense::parameter_list_length_error());
    }
    lu.set_swp(swp);
    Ok(())
}

/// Block descriptors may only restate what is: the capacity (or 0, "no
/// change") and the block length.
fn check_block_descriptors(
    lu: &LogicalUnit,
    bds: &[u8],
    long: bool,
    at: usize,
) -> Result<(), Sense> {
    let size = if long { 16 } else { 8 };
    if !bds.len().is_multiple_of(size) {
        return Err(Sense::parameter_list_length_error());
    }
    for (i, bd) in bds.chunks_exact(size).enumerate() {
        let off = at + i * size;
        let (blocks, len) = match (bd.first_chunk::<8>(), bd.last_chunk::<4>()) {
            (Some(b), Some(l)) if long => (u64::from_be_bytes(*b), u32::from_be_bytes(*l)),
            (Some(b), _) => (
                u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])),
                u32::from_be_bytes([0, b[5], b[6], b[7]]),
            ),
            _ => return Err(Sense::parameter_list_length_error()),
        };
        let current = if long {
            lu.blocks()
        } else {
            u64::from(u32::try_from(lu.blocks()).unwrap_or(u32::MAX))
        };
        if blocks != 0 && blocks != current {
            return Err(Sense::invalid_field_in_parameter_list(off as u16));
        }
        if len != BLOCK_SIZE {
            return Err(Sense::invalid_field_in_parameter_list(
                (off + size - 3) as u16,
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iscsi::scsi::lu::{LuConfig, NexusId};

    const N: NexusId = NexusId(1);

    fn lu(read_only: bool) -> LogicalUnit {
        let mut lu = LogicalUnit::new(LuConfig {
            target_iqn: "iqn.2026-01.example:disk0".into(),
            lun: 0,
            size_bytes: 1 << 20,
            read_only,
            unmap: false,
        });
        lu.take_unit_attention(N);
        lu
    }

    fn data(o: Outcome) -> Vec<u8> {
        match o {
            Outcome::Data(d) => d,
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn mode_sense6_caching_with_block_descriptor() {
        let d = data(lu(false).execute(N, &[0x1a, 0x00, 0x08, 0x00, 0xff, 0x00]));
        assert_eq!(&d[..4], &[3 + 8 + 20, 0x00, 0x10, 0x08]);
        assert_eq!(&d[4..12], &[0x00, 0x00, 0x08, 0x00, 0x00, 0x00, 0x02, 0x00]);
        assert_eq!(&d[12..16], &[0x08, 0x12, 0x04, 0x00]);
        assert_eq!(d.len(), 32);
    }

    #[test]
    fn mode_sense10_all_pages_dbd_and_llbaa() {
        let d = data(lu(false).execute(N, &[0x5a, 0x08, 0x3f, 0, 0, 0, 0, 0x01, 0x00, 0]));
        assert_eq!(
            &d[..8],
            &[0x00, 6 + 20 + 12 + 12, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00]
        );
        assert_eq!(d[8], 0x08);
        assert_eq!(d[28], 0x0a);
        assert_eq!(
            &d[28..40],
            &[0x0a, 0x0a, 0x02, 0x10, 0, 0, 0, 0, 0xff, 0xff, 0, 0]
        );
        assert_eq!(&d[40..44], &[0x1c, 0x0a, 0x08, 0x00]);
        let d = data(lu(false).execute(N, &[0x5a, 0x10, 0x0a, 0, 0, 0, 0, 0x00, 0xff, 0]));
        assert_eq!(
            &d[..8],
            &[0x00, 6 + 16 + 12, 0x00, 0x10, 0x01, 0x00, 0x00, 0x10]
        );
        assert_eq!(
            &d[8..24],
            &[0, 0, 0, 0, 0, 0, 0x08, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x00]
        );
    }

    #[test]
    fn read_only_sets_wp() {
        let d = data(lu(true).execute(N, &[0x1a, 0x08, 0x3f, 0x00, 0xff, 0x00]));
        assert_eq!(d[2], 0x90);
        assert_eq!(d[3], 0);
    }

    #[test]
    fn page_control_values() {
        let mut lu = lu(false);
        let d = data(lu.execute(N, &[0x1a, 0x08, 0x48, 0x00, 0xff, 0x00]));
        assert_eq!(&d[4..], &[&[0x08u8, 0x12][..], &[0; 18]].concat()[..]);
        let d = data(lu.execute(N, &[0x1a, 0x08, 0x4a, 0x00, 0xff, 0x00]));
        assert_eq!(&d[4..8], &[0x0a, 0x0a, 0x00, 0x00]);
        assert_eq!(d[8], 0x08);
        let d2 = data(lu.execute(N, &[0x1a, 0x08, 0x88, 0x00, 0xff, 0x00]));
        assert_eq!(d2[6], 0x04);
        assert_eq!(
            lu.execute(N, &[0x1a, 0x08, 0xc8, 0x00, 0xff, 0x00]),
            Outcome::Check(Sense::saving_parameters_not_supported())
        );
    }

    #[test]
    fn unsupported_pages_and_subpages() {
        let mut lu = lu(false);
        assert_eq!(
            lu.execute(N, &[0x1a, 0x00, 0x01, 0x00, 0xff, 0x00]),
            Outcome::Check(Sense::invalid_field_in_cdb(2, Some(5)))
        );
        assert_eq!(
            lu.execute(N, &[0x1a, 0x00, 0x08, 0x01, 0xff, 0x00]),
            Outcome::Check(Sense::invalid_field_in_cdb(3, None))
        );
        let all = data(lu.execute(N, &[0x1a, 0x00, 0x3f, 0xff, 0xff, 0x00]));
        assert_eq!(all.len(), 4 + 8 + 44);
    }

    #[test]
    fn mode_sense6_allocation_length_four() {
        let d = data(lu(false).execute(N, &[0x1a, 0x00, 0x3f, 0x00, 0x04, 0x00]));
        assert_eq!(d, vec![55, 0x00, 0x10, 0x08]);
    }

    fn select(lu: &mut LogicalUnit, ten: bool, list: &[u8]) -> Outcome {
        lu.handle_parameters(N, Parameters::ModeSelect { ten }, list)
    }

    #[test]
    fn mode_select_cdb_checks() {
        let mut lu = lu(false);
        assert_eq!(lu.execute(N, &[0x15, 0x10, 0, 0, 0, 0]), Outcome::Good);
        assert_eq!(
            lu.execute(N, &[0x15, 0x11, 0, 0, 24, 0]),
            Outcome::Check(Sense::invalid_field_in_cdb(1, Some(0)))
        );
        let o = lu.execute(N, &[0x55, 0x10, 0, 0, 0, 0, 0, 0, 20, 0]);
        assert_eq!(
            o,
            Outcome::DataOut {
                len: 20,
                then: AfterDataOut::Parameters(Parameters::ModeSelect { ten: true })
            }
        );
    }

    #[test]
    fn mode_select_no_op_and_swp() {
        let mut lu = lu(false);
        // Header, then the control page exactly as MODE SENSE returned it.
        let mut list = vec![0, 0, 0x10, 0];
        list.extend(page(&lu, PAGE_CONTROL, PageControl::Current).unwrap());
        assert_eq!(select(&mut lu, false, &list), Outcome::Good);
        assert!(!lu.write_protected());

        list[4 + SWP_BYTE] |= SWP_BIT;
        assert_eq!(select(&mut lu, false, &list), Outcome::Good);
        assert!(lu.write_protected());
        let d = data(lu.execute(N, &[0x1a, 0x08, 0x0a, 0x00, 0xff, 0x00]));
        assert_eq!((d[2], d[4 + SWP_BYTE]), (0x90, SWP_BIT));
        let d = data(lu.execute(N, &[0x1a, 0x08, 0x8a, 0x00, 0xff, 0x00]));
        assert_eq!(d[4 + SWP_BYTE], 0, "default values keep SWP clear");
        assert_eq!(
            lu.execute(N, &[0x2a, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
            Outcome::Check(Sense::write_protected())
        );
        // Another nexus is told the mode parameters changed.
        lu.take_unit_attention(NexusId(2));
        list[4 + SWP_BYTE] &= !SWP_BIT;
        assert_eq!(select(&mut lu, false, &list), Outcome::Good);
        assert_eq!(
            lu.execute(NexusId(2), &[0; 6]),
            Outcome::Check(Sense::new(
                crate::iscsi::scsi::sense::SenseKey::UnitAttention,
                crate::iscsi::scsi::sense::asc::MODE_PARAMETERS_CHANGED
            ))
        );
        assert!(!lu.write_protected());
    }

    #[test]
    fn mode_select_refuses_changes() {
        let mut lu = lu(false);
        let mut list = vec![0, 0, 0, 0];
        list.extend(page(&lu, PAGE_CACHING, PageControl::Current).unwrap());
        list[6] = 0x00; // clear WCE
        assert_eq!(
            select(&mut lu, false, &list),
            Outcome::Check(Sense::invalid_field_in_parameter_list(6))
        );
        // Unknown page, short page, truncated header, medium type.
        assert_eq!(
            select(&mut lu, false, &[0, 0, 0, 0, 0x19, 0x02, 0, 0]),
            Outcome::Check(Sense::invalid_field_in_parameter_list(4))
        );
        assert_eq!(
            select(&mut lu, false, &[0, 0, 0, 0, 0x0a, 0x0a, 0x02]),
            Outcome::Check(Sense::parameter_list_length_error())
        );
        assert_eq!(
            select(&mut lu, true, &[0, 0, 0]),
            Outcome::Check(Sense::parameter_list_length_error())
        );
        assert_eq!(
            select(&mut lu, false, &[0, 1, 0, 0]),
            Outcome::Check(Sense::invalid_field_in_parameter_list(1))
        );
    }

    #[test]
    fn mode_select_block_descriptors() {
        let mut lu = lu(false);
        let ok = [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x02, 0x00];
        assert_eq!(select(&mut lu, false, &ok), Outcome::Good);
        let same = [0, 0, 0, 8, 0, 0, 0x08, 0, 0, 0, 0x02, 0x00];
        assert_eq!(select(&mut lu, false, &same), Outcome::Good);
        let bad_len = [0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0x10, 0x00];
        assert_eq!(
            select(&mut lu, false, &bad_len),
            Outcome::Check(Sense::invalid_field_in_parameter_list(9))
        );
        let grow = [0, 0, 0, 8, 0, 0, 0x09, 0, 0, 0, 0x02, 0x00];
        assert_eq!(
            select(&mut lu, false, &grow),
            Outcome::Check(Sense::invalid_field_in_parameter_list(4))
        );
        let long = [
            0, 0, 0, 0, 1, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0x08, 0, 0, 0, 0, 0, 0, 0, 0x02, 0,
        ];
        assert_eq!(select(&mut lu, true, &long), Outcome::Good);
        assert_eq!(
            select(&mut lu, false, &[0, 0, 0, 9, 0]),
            Outcome::Check(Sense::parameter_list_length_error())
        );
    }
}
