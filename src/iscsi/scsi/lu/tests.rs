//! Byte-vector tests of the logical unit, named after the cases of
//! CASES.md where they reproduce one.

use super::*;
use crate::iscsi::scsi::sense::asc;

const N: NexusId = NexusId(1);

fn config(size_bytes: u64, read_only: bool, unmap: bool) -> LuConfig {
    LuConfig {
        target_iqn: "iqn.2026-01.example:disk0".into(),
        lun: 0,
        size_bytes,
        read_only,
        unmap,
    }
}

/// A unit whose power-on unit attention has already been reported to `N`.
fn unit(size_bytes: u64, read_only: bool, unmap: bool) -> LogicalUnit {
    let mut lu = LogicalUnit::new(config(size_bytes, read_only, unmap));
    assert_eq!(
        lu.take_unit_attention(N).map(|s| s.triple()),
        Some((6, 0x29, 0))
    );
    lu
}

fn mib() -> LogicalUnit {
    unit(1_048_576, false, true)
}

fn cdb10(op: u8, byte1: u8, lba: u32, len: u16) -> Vec<u8> {
    let mut c = vec![op, byte1];
    c.extend_from_slice(&lba.to_be_bytes());
    c.push(0);
    c.extend_from_slice(&len.to_be_bytes());
    c.push(0);
    c
}

fn cdb16(op: u8, byte1: u8, lba: u64, len: u32) -> Vec<u8> {
    let mut c = vec![op, byte1];
    c.extend_from_slice(&lba.to_be_bytes());
    c.extend_from_slice(&len.to_be_bytes());
    c.extend_from_slice(&[0, 0]);
    c
}

fn check(o: Outcome) -> (u8, u8, u8) {
    match o {
        Outcome::Check(s) => s.triple(),
        other => panic!("expected CHECK CONDITION, got {other:?}"),
    }
}

const OOB: (u8, u8, u8) = (5, 0x21, 0);
const INVALID_FIELD: (u8, u8, u8) = (5, 0x24, 0);
const WRITE_PROTECTED: (u8, u8, u8) = (7, 0x27, 0);

#[test]
fn bc_17_read_capacity_10_and_16() {
    let mut lu = mib();
    let o = lu.execute(N, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        o,
        Outcome::Data(vec![0x00, 0x00, 0x07, 0xff, 0x00, 0x00, 0x02, 0x00])
    );
    let o = lu.execute(N, &cdb16(0x9e, 0x10, 0, 32));
    let Outcome::Data(d) = o else { panic!() };
    assert_eq!(d.len(), 32);
    assert_eq!(&d[..12], &[0, 0, 0, 0, 0, 0, 0x07, 0xff, 0, 0, 0x02, 0x00]);
    assert_eq!(d[14], 0xc0); // LBPME, LBPRZ
                             // Allocation length 0 is not an error, just no data.
    assert_eq!(
        lu.execute(N, &cdb16(0x9e, 0x10, 0, 0)),
        Outcome::Data(vec![])
    );
    let Outcome::Data(d) = lu.execute(N, &cdb16(0x9e, 0x10, 0, 12)) else {
        panic!()
    };
    assert_eq!(d.len(), 12);
}

#[test]
fn bc_17_read_last_block_and_beyond() {
    let mut lu = mib();
    let o = lu.execute(N, &cdb10(0x28, 0, 2047, 1));
    assert_eq!(
        o,
        Outcome::Read(Extent {
            offset: 2047 * 512,
            len: 512
        })
    );
    assert_eq!(
        o.transfer(),
        Transfer {
            direction: Direction::In,
            len: 512
        }
    );
    let o = lu.execute(N, &cdb10(0x28, 0, 2047, 2));
    assert_eq!(o.transfer().len, 0);
    assert_eq!(check(o), OOB);
}

#[test]
fn bc_17_read16_lba_max_does_not_wrap() {
    let mut lu = mib();
    assert_eq!(check(lu.execute(N, &cdb16(0x88, 0, u64::MAX, 1))), OOB);
    assert_eq!(
        check(lu.execute(N, &cdb16(0x88, 0, u64::MAX - 1, u32::MAX))),
        OOB
    );
    assert_eq!(check(lu.execute(N, &cdb16(0x8a, 0, u64::MAX, 1))), OOB);
    assert_eq!(check(lu.execute(N, &cdb16(0x8f, 0, u64::MAX, 1))), OOB);
    assert_eq!(check(lu.execute(N, &cdb16(0x91, 0, u64::MAX, 0))), OOB);
    assert_eq!(check(lu.execute(N, &cdb16(0x90, 0, u64::MAX, 1))), OOB);
    assert_eq!(check(lu.execute(N, &cdb16(0x93, 0, u64::MAX, 1))), OOB);
}

#[test]
fn bc_17_partial_tail_block_not_exposed() {
    let mut lu = unit(1_048_600, false, false);
    assert_eq!(lu.blocks(), 2048);
    let o = lu.execute(N, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        o,
        Outcome::Data(vec![0x00, 0x00, 0x07, 0xff, 0x00, 0x00, 0x02, 0x00])
    );
    assert_eq!(check(lu.execute(N, &cdb10(0x28, 0, 2048, 1))), OOB);
}

#[test]
fn bc_20_3_write_to_read_only_lun() {
    let mut lu = unit(1_048_576, true, true);
    // WRITE(10) 16 blocks: refused before any Data-Out is solicited; the
    // session discards the immediate data.
    let o = lu.execute(N, &cdb10(0x2a, 0, 0, 16));
    assert_eq!(o.transfer().len, 0);
    assert_eq!(check(o), WRITE_PROTECTED);
    assert_eq!(
        check(lu.execute(N, &[0x0a, 0, 0, 0, 1, 0])),
        WRITE_PROTECTED
    );
    assert_eq!(
        check(lu.execute(N, &cdb16(0x8a, 0x08, 0, 1))),
        WRITE_PROTECTED
    );
    assert_eq!(check(lu.execute(N, &cdb10(0x41, 0, 0, 1))), WRITE_PROTECTED);
    assert_eq!(
        check(lu.execute(N, &cdb16(0x93, 0x09, 0, 1))),
        WRITE_PROTECTED
    );
    assert_eq!(
        check(lu.execute(N, &cdb10(0x42, 0, 0, 24))),
        WRITE_PROTECTED
    );
    // Reads still work; SYNCHRONIZE CACHE has nothing to flush.
    assert!(matches!(
        lu.execute(N, &cdb10(0x28, 0, 0, 1)),
        Outcome::Read(_)
    ));
    assert_eq!(lu.execute(N, &cdb10(0x35, 0, 0, 0)), Outcome::Good);
}

#[test]
fn read_variants() {
    let mut lu = mib();
    // READ(6) with length 0 reads 256 blocks.
    let o = lu.execute(N, &[0x08, 0, 0, 0, 0, 0]);
    assert_eq!(
        o,
        Outcome::Read(Extent {
            offset: 0,
            len: 256 * 512
        })
    );
    assert_eq!(check(lu.execute(N, &[0x08, 0, 0x07, 0x01, 0, 0])), OOB);
    let o = lu.execute(N, &[0xa8, 0, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0]);
    assert_eq!(
        o,
        Outcome::Read(Extent {
            offset: 1024,
            len: 1536
        })
    );
    // Zero blocks: GOOD without data, but the LBA must still exist.
    assert_eq!(lu.execute(N, &cdb10(0x28, 0, 2048, 0)), Outcome::Good);
    assert_eq!(check(lu.execute(N, &cdb10(0x28, 0, 2049, 0))), OOB);
    assert_eq!(check(lu.execute(N, &cdb10(0x28, 0, u32::MAX, 0))), OOB);
    // RDPROTECT without protection information; DPO and FUA are fine.
    assert_eq!(
        check(lu.execute(N, &cdb10(0x28, 0x20, 0, 1))),
        INVALID_FIELD
    );
    assert!(matches!(
        lu.execute(N, &cdb10(0x28, 0x18, 0, 1)),
        Outcome::Read(_)
    ));
}

#[test]
fn maximum_transfer_length() {
    let mut lu = unit(1 << 40, false, false);
    assert!(matches!(
        lu.execute(N, &cdb16(0x88, 0, 0, MAX_TRANSFER_BLOCKS)),
        Outcome::Read(_)
    ));
    assert_eq!(
        check(lu.execute(N, &cdb16(0x88, 0, 0, MAX_TRANSFER_BLOCKS + 1))),
        INVALID_FIELD
    );
}

#[test]
fn write_variants() {
    let mut lu = mib();
    let o = lu.execute(N, &cdb10(0x2a, 0x08, 10, 2));
    assert_eq!(
        o,
        Outcome::DataOut {
            len: 1024,
            then: AfterDataOut::Write {
                offset: 5120,
                fua: true
            }
        }
    );
    assert_eq!(
        o.transfer(),
        Transfer {
            direction: Direction::Out,
            len: 1024
        }
    );
    let o = lu.execute(N, &[0x0a, 0, 0, 1, 0, 0]);
    assert_eq!(
        o,
        Outcome::DataOut {
            len: 256 * 512,
            then: AfterDataOut::Write {
                offset: 512,
                fua: false
            }
        }
    );
    let o = lu.execute(N, &[0xaa, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
    assert!(matches!(o, Outcome::DataOut { len: 512, .. }));
    assert_eq!(lu.execute(N, &cdb16(0x8a, 0x08, 0, 0)), Outcome::Good);
    assert_eq!(check(lu.execute(N, &cdb16(0x8a, 0, 2047, 2))), OOB);
}

#[test]
fn write_and_verify_is_a_durable_write() {
    let mut lu = mib();
    let o = lu.execute(N, &cdb10(0x2e, 0x02, 10, 2));
    let then = AfterDataOut::Write {
        offset: 5120,
        fua: true,
    };
    assert_eq!(o, Outcome::DataOut { len: 1024, then });
    assert_eq!(check(lu.execute(N, &cdb16(0x8e, 0, 2047, 2))), OOB);
    let mut ro = unit(1 << 20, true, false);
    assert_eq!(check(ro.execute(N, &cdb10(0x2e, 0, 0, 1))), WRITE_PROTECTED);
}

#[test]
fn verify_variants() {
    let mut lu = mib();
    assert_eq!(lu.execute(N, &cdb10(0x2f, 0x10, 0, 8)), Outcome::Good);
    let o = lu.execute(N, &cdb10(0x2f, 0x02, 1, 2));
    let extent = Extent {
        offset: 512,
        len: 1024,
    };
    assert_eq!(
        o,
        Outcome::DataOut {
            len: 1024,
            then: AfterDataOut::Compare {
                extent,
                repeat: false
            }
        }
    );
    let o = lu.execute(N, &cdb16(0x8f, 0x06, 1, 2));
    assert_eq!(
        o,
        Outcome::DataOut {
            len: 512,
            then: AfterDataOut::Compare {
                extent,
                repeat: true
            }
        }
    );
    assert_eq!(lu.execute(N, &cdb10(0x2f, 0x02, 0, 0)), Outcome::Good);
    assert_eq!(check(lu.execute(N, &cdb10(0x2f, 0x02, 2047, 2))), OOB);
    assert_eq!(
        check(lu.execute(N, &[0xaf, 0x02, 0, 0, 0x08, 0, 0, 0, 0, 1, 0, 0])),
        OOB
    );
}

#[test]
fn write_same() {
    let mut lu = mib();
    let extent = Extent {
        offset: 0,
        len: 4096,
    };
    let o = lu.execute(N, &cdb10(0x41, 0x08, 0, 8));
    let want = Parameters::WriteSame {
        extent,
        unmap: true,
    };
    assert_eq!(
        o,
        Outcome::DataOut {
            len: 512,
            then: AfterDataOut::Parameters(want)
        }
    );
    // Zero pattern with UNMAP on a store that punches holes: deallocate.
    assert_eq!(
        lu.handle_parameters(N, want, &[0; 512]),
        Outcome::Deallocate(vec![extent])
    );
    // UNMAP asks for deallocation whatever the pattern (LBPRZ says zeros).
    let o = lu.handle_parameters(N, want, &[0xab; 512]);
    assert_eq!(o, Outcome::Deallocate(vec![extent]));
    // Without UNMAP the pattern is written.
    let plain = Parameters::WriteSame {
        extent,
        unmap: false,
    };
    let o = lu.handle_parameters(N, plain, &[0xab; 512]);
    assert_eq!(
        o,
        Outcome::WriteSame {
            pattern: vec![0xab; 512],
            extent
        }
    );
    let o = lu.handle_parameters(N, plain, &[0; 512]);
    assert_eq!(
        o,
        Outcome::WriteSame {
            pattern: vec![0; 512],
            extent
        }
    );
    assert_eq!(
        check(lu.handle_parameters(N, plain, &[0; 100])),
        (5, 0x1a, 0)
    );
    // NDOB: no Data-Out at all.
    assert_eq!(
        lu.execute(N, &cdb16(0x93, 0x09, 0, 8)),
        Outcome::Deallocate(vec![extent])
    );
    let o = lu.execute(N, &cdb16(0x93, 0x01, 0, 8));
    assert_eq!(
        o,
        Outcome::WriteSame {
            pattern: vec![0; 512],
            extent
        }
    );
}

#[test]
fn write_same_ranges_and_zero_blocks() {
    let mut lu = mib();
    // WSNZ: zero blocks refused, but a bad LBA is reported as such first.
    assert_eq!(check(lu.execute(N, &cdb10(0x41, 0, 0, 0))), INVALID_FIELD);
    assert_eq!(check(lu.execute(N, &cdb10(0x41, 0, 2049, 0))), OOB);
    assert_eq!(check(lu.execute(N, &cdb10(0x41, 0, 0x8000_0000, 0))), OOB);
    assert_eq!(check(lu.execute(N, &cdb10(0x41, 0, u32::MAX, 0))), OOB);
    assert_eq!(check(lu.execute(N, &cdb10(0x41, 0, 2047, 2))), OOB);
    let mut big = unit(1 << 40, false, false);
    assert_eq!(
        check(big.execute(N, &cdb16(0x93, 0, 0, MAX_WRITE_SAME_BLOCKS + 1))),
        INVALID_FIELD
    );
    // Without hole punching UNMAP is ignored and the zeros are written.
    let o = big.execute(N, &cdb16(0x93, 0x09, 0, 1));
    assert!(matches!(o, Outcome::WriteSame { .. }));
}

fn unmap_list(descriptors: &[(u64, u32)]) -> Vec<u8> {
    let bd_len = (descriptors.len() * 16) as u16;
    let mut l = Vec::new();
    l.extend_from_slice(&(bd_len + 6).to_be_bytes());
    l.extend_from_slice(&bd_len.to_be_bytes());
    l.extend_from_slice(&[0; 4]);
    for &(lba, n) in descriptors {
        l.extend_from_slice(&lba.to_be_bytes());
        l.extend_from_slice(&n.to_be_bytes());
        l.extend_from_slice(&[0; 4]);
    }
    l
}

#[test]
fn unmap() {
    let mut lu = mib();
    let o = lu.execute(N, &cdb10(0x42, 0, 0, 40));
    assert_eq!(
        o,
        Outcome::DataOut {
            len: 40,
            then: AfterDataOut::Parameters(Parameters::Unmap)
        }
    );
    let list = unmap_list(&[(0, 8), (100, 0), (2040, 8)]);
    let o = lu.handle_parameters(N, Parameters::Unmap, &list);
    assert_eq!(
        o,
        Outcome::Deallocate(vec![
            Extent {
                offset: 0,
                len: 4096
            },
            Extent {
                offset: 2040 * 512,
                len: 4096
            }
        ])
    );
    assert_eq!(
        lu.handle_parameters(N, Parameters::Unmap, &unmap_list(&[])),
        Outcome::Good
    );
    let o = lu.handle_parameters(N, Parameters::Unmap, &unmap_list(&[(2041, 8)]));
    assert_eq!(check(o), OOB);
    let o = lu.handle_parameters(N, Parameters::Unmap, &unmap_list(&[(u64::MAX, 1)]));
    assert_eq!(check(o), OOB);
    assert_eq!(
        check(lu.handle_parameters(N, Parameters::Unmap, &[0; 7])),
        (5, 0x1a, 0)
    );
    // An incomplete trailing descriptor is ignored.
    let mut l = unmap_list(&[(0, 1)]);
    l[3] = 20;
    l.extend_from_slice(&[0xff; 4]);
    assert!(
        matches!(lu.handle_parameters(N, Parameters::Unmap, &l), Outcome::Deallocate(v) if v.len() == 1)
    );
    // Zero parameter length: nothing to do; 1..7: length error.
    assert_eq!(lu.execute(N, &cdb10(0x42, 0, 0, 0)), Outcome::Good);
    assert_eq!(check(lu.execute(N, &cdb10(0x42, 0, 0, 7))), (5, 0x1a, 0));
}

#[test]
fn unmap_limits() {
    let mut lu = unit(1 << 40, false, true);
    let many: Vec<(u64, u32)> = (0..=u64::from(MAX_UNMAP_DESCRIPTORS))
        .map(|i| (i * 8, 1))
        .collect();
    let o = lu.handle_parameters(N, Parameters::Unmap, &unmap_list(&many));
    assert_eq!(check(o), (5, 0x26, 0));
    let o = lu.handle_parameters(
        N,
        Parameters::Unmap,
        &unmap_list(&[(0, MAX_UNMAP_BLOCKS + 1)]),
    );
    assert_eq!(check(o), (5, 0x26, 0));
    let half = MAX_UNMAP_BLOCKS / 2 + 1;
    let list = unmap_list(&[(0, half), (1 << 30, half)]);
    assert_eq!(
        check(lu.handle_parameters(N, Parameters::Unmap, &list)),
        (5, 0x26, 0)
    );
    let list = unmap_list(&[(0, MAX_UNMAP_BLOCKS)]);
    assert!(matches!(
        lu.handle_parameters(N, Parameters::Unmap, &list),
        Outcome::Deallocate(_)
    ));
    // A store that cannot punch holes does not offer UNMAP at all.
    let mut thick = unit(1 << 20, false, false);
    assert_eq!(
        check(thick.execute(N, &cdb10(0x42, 0, 0, 24))),
        (5, 0x20, 0)
    );
}

#[test]
fn synchronize_cache_and_prefetch() {
    let mut lu = mib();
    assert_eq!(lu.execute(N, &cdb10(0x35, 0, 0, 0)), Outcome::Flush);
    assert_eq!(lu.execute(N, &cdb16(0x91, 0x02, 2047, 1)), Outcome::Flush);
    assert_eq!(check(lu.execute(N, &cdb10(0x35, 0, 2047, 2))), OOB);
    assert_eq!(check(lu.execute(N, &cdb10(0x35, 0, 2049, 0))), OOB);
    assert_eq!(lu.execute(N, &cdb10(0x34, 0x02, 0, 1)), Outcome::Good);
    assert_eq!(lu.execute(N, &cdb16(0x90, 0, 2048, 0)), Outcome::Good);
    assert_eq!(check(lu.execute(N, &cdb16(0x90, 0, 2000, 100))), OOB);
}

#[test]
fn test_unit_ready_start_stop_unknown() {
    let mut lu = mib();
    assert_eq!(lu.execute(N, &[0, 0, 0, 0, 0, 0]), Outcome::Good);
    assert_eq!(lu.execute(N, &[0x1b, 0x01, 0, 0, 0x00, 0]), Outcome::Good);
    assert_eq!(lu.execute(N, &[0x1b, 0, 0, 0, 0x01, 0]), Outcome::Good);
    assert_eq!(lu.execute(N, &[0x1b, 0, 0, 0, 0x30, 0]), Outcome::Good);
    // Not removable: LOEJ is refused (libiscsi's StartStopUnit.Simple).
    assert_eq!(
        check(lu.execute(N, &[0x1b, 0, 0, 0, 0x02, 0])),
        INVALID_FIELD
    );
    for op in [0x5e, 0x5f, 0xa3, 0x89, 0x8b, 0x9d, 0x7f, 0xc0] {
        assert_eq!(
            check(lu.execute(N, &[op; 16])),
            (5, 0x20, 0),
            "opcode {op:#x}"
        );
    }
}

#[test]
fn unit_attention_once_per_nexus_and_exemptions() {
    let mut lu = LogicalUnit::new(config(1 << 20, false, false));
    // INQUIRY and REPORT LUNS neither report nor clear it.
    assert!(matches!(
        lu.execute(N, &[0x12, 0, 0, 0, 36, 0]),
        Outcome::Data(_)
    ));
    let rl = [0xa0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0];
    assert!(matches!(lu.execute(N, &rl), Outcome::Data(_)));
    assert_eq!(check(lu.execute(N, &[0, 0, 0, 0, 0, 0])), (6, 0x29, 0));
    assert_eq!(lu.execute(N, &[0, 0, 0, 0, 0, 0]), Outcome::Good);
    // A second nexus has its own.
    assert_eq!(
        check(lu.execute(NexusId(2), &cdb10(0x28, 0, 0, 1))),
        (6, 0x29, 0)
    );
    // Even an unknown opcode reports the unit attention first.
    lu.reset();
    assert_eq!(check(lu.execute(N, &[0xff; 16])), (6, 0x29, 0));
    assert_eq!(check(lu.execute(N, &[0xff; 16])), (5, 0x20, 0));
}

#[test]
fn request_sense_reports_and_clears() {
    let mut lu = LogicalUnit::new(config(1 << 20, false, false));
    let Outcome::Data(d) = lu.execute(N, &[0x03, 0, 0, 0, 18, 0]) else {
        panic!()
    };
    assert_eq!(d.len(), 18);
    assert_eq!((d[0], d[2], d[12], d[13]), (0x70, 0x06, 0x29, 0x00));
    let Outcome::Data(d) = lu.execute(N, &[0x03, 0, 0, 0, 252, 0]) else {
        panic!()
    };
    assert_eq!(d, Sense::no_sense().encode().to_vec());
    assert_eq!(lu.execute(N, &[0x03, 0, 0, 0, 0, 0]), Outcome::Data(vec![]));
    assert_eq!(lu.execute(N, &[0, 0, 0, 0, 0, 0]), Outcome::Good);
    assert_eq!(check(lu.execute(N, &[0x03, 1, 0, 0, 18, 0])), INVALID_FIELD);
}

#[test]
fn capacity_change_unit_attention() {
    let mut lu = mib();
    lu.execute(NexusId(2), &[0x12, 0, 0, 0, 36, 0]); // nexus 2 is known
    lu.set_size(1 << 20); // no change, no unit attention
    assert_eq!(lu.execute(N, &[0; 6]), Outcome::Good);
    lu.set_size(2 << 20);
    assert_eq!(check(lu.execute(N, &[0; 6])), (6, 0x2a, 0x09));
    let Outcome::Data(d) = lu.execute(N, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]) else {
        panic!()
    };
    assert_eq!(&d[..4], &[0, 0, 0x0f, 0xff]);
    // Nexus 2 still has its power-on pending, which supersedes the change.
    assert_eq!(check(lu.execute(NexusId(2), &[0; 6])), (6, 0x29, 0));
    assert_eq!(lu.execute(NexusId(2), &[0; 6]), Outcome::Good);
    lu.nexus_lost(NexusId(2));
    assert_eq!(check(lu.execute(NexusId(2), &[0; 6])), (6, 0x29, 0));
}

#[test]
fn nexus_table_is_bounded() {
    let mut lu = mib();
    for i in 0..(MAX_NEXUSES as u64 + 10) {
        lu.take_unit_attention(NexusId(100 + i));
    }
    assert_eq!(lu.nexuses.len(), MAX_NEXUSES);
}

#[test]
fn large_and_empty_units() {
    // 2^64 - 1 bytes: the capacity saturates READ CAPACITY(10), and the
    // largest LBA still gets a correct answer.
    let mut lu = unit(u64::MAX, false, false);
    let Outcome::Data(d) = lu.execute(N, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]) else {
        panic!()
    };
    assert_eq!(&d[..4], &[0xff; 4]);
    let last = (u64::MAX >> 9) - 1;
    let o = lu.execute(N, &cdb16(0x88, 0, last, 1));
    assert_eq!(
        o,
        Outcome::Read(Extent {
            offset: last << 9,
            len: 512
        })
    );
    assert_eq!(check(lu.execute(N, &cdb16(0x88, 0, last + 1, 1))), OOB);
    let Outcome::Data(d) = lu.execute(N, &[0x1a, 0, 0x08, 0, 0xff, 0]) else {
        panic!()
    };
    assert_eq!(&d[4..8], &[0xff; 4]);

    let mut empty = unit(511, false, false);
    assert_eq!(empty.blocks(), 0);
    let Outcome::Data(d) = empty.execute(N, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]) else {
        panic!()
    };
    assert_eq!(&d[..4], &[0; 4]);
    assert_eq!(check(empty.execute(N, &cdb10(0x28, 0, 0, 1))), OOB);
}

#[test]
fn transfer_of_every_outcome() {
    assert_eq!(
        Outcome::Good.transfer(),
        Transfer {
            direction: Direction::None,
            len: 0
        }
    );
    assert_eq!(Outcome::Flush.transfer().direction, Direction::None);
    assert_eq!(
        Outcome::Data(vec![1, 2, 3]).transfer(),
        Transfer {
            direction: Direction::In,
            len: 3
        }
    );
    let s = Sense::new(SenseKey::MediumError, asc::WRITE_ERROR);
    assert_eq!(Outcome::Check(s).transfer().len, 0);
}

#[test]
fn hostile_cdbs_never_panic() {
    // Every opcode, every length 0..=16, through the whole executor, on a
    // writable thin unit and a read-only one; then parameter lists.
    let mut lus = [mib(), unit(1_048_576, true, false), unit(0, false, true)];
    for lu in lus.iter_mut() {
        for op in 0..=255u8 {
            for len in 0..=16usize {
                for fill in [0x00u8, 0xff, 0x01, 0x80] {
                    let mut c = vec![fill; len];
                    if let Some(b) = c.first_mut() {
                        *b = op;
                    }
                    let o = lu.execute(N, &c);
                    if let Outcome::DataOut {
                        then: AfterDataOut::Parameters(p),
                        len,
                    } = o
                    {
                        let data = vec![fill; len.min(4096) as usize];
                        let _ = lu.handle_parameters(N, p, &data);
                    }
                }
            }
        }
        for params in [
            Parameters::Unmap,
            Parameters::ModeSelect { ten: false },
            Parameters::ModeSelect { ten: true },
        ] {
            for len in 0..64usize {
                for fill in [0x00u8, 0xff, 0x08] {
                    let _ = lu.handle_parameters(N, params, &vec![fill; len]);
                }
            }
        }
    }
}

#[test]
fn write_same_data_out_must_be_one_block() {
    let mut lu = mib();
    let ws = lu.execute(N, &cdb10(0x41, 0x08, 0, 1));
    assert_eq!(ws.clone().with_edtl(512), ws);
    for edtl in [0, 256, 1024] {
        assert_eq!(
            check(ws.clone().with_edtl(edtl)),
            INVALID_FIELD,
            "edtl {edtl}"
        );
    }
    // Other commands keep their outcome; residuals are the session's.
    let w = lu.execute(N, &cdb10(0x2a, 0, 0, 2));
    assert_eq!(w.clone().with_edtl(512), w);
    let r = lu.execute(N, &cdb10(0x28, 0, 0, 2));
    assert_eq!(r.clone().with_edtl(0), r);
}
