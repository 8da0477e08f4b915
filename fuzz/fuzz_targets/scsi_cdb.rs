//! Fuzzes the SCSI command layer: CDB decoding, the logical unit executor and
//! the parameter lists that follow as Data-Out (UNMAP, MODE SELECT, WRITE
//! SAME), through `Target` so LUN routing is covered too.
//!
//! Input: byte 0 picks the unit's configuration and the LUN, byte 1 the CDB
//! length (0..=16), then the CDB, then whatever Data-Out follows. Besides not
//! panicking, every outcome must stay inside the store and the allocation
//! length.
#![no_main]

use dls::iscsi::scsi::lu::{AfterDataOut, Extent, LogicalUnit, LuConfig, NexusId, Outcome};
use dls::iscsi::scsi::target::{encode_lun, Target};
use libfuzzer_sys::fuzz_target;

const SIZES: [u64; 4] = [0, 1_048_600, 1 << 40, u64::MAX];

fn check_extent(e: &Extent, size: u64) {
    let end = e.offset.checked_add(e.len).expect("extent wraps");
    assert!(end <= size, "extent {e:?} past the end of {size}");
}

fn check(o: &Outcome, size: u64) {
    match o {
        Outcome::Read(e) => check_extent(e, size),
        Outcome::DataOut { len, then } => {
            assert!(*len > 0);
            match then {
                AfterDataOut::Write { offset, .. } => check_extent(
                    &Extent {
                        offset: *offset,
                        len: *len,
                    },
                    size,
                ),
                AfterDataOut::Compare { extent, .. } => check_extent(extent, size),
                AfterDataOut::Parameters(_) => assert!(*len <= 65_535),
            }
        }
        Outcome::Deallocate(v) => {
            assert!(!v.is_empty());
            v.iter().for_each(|e| check_extent(e, size));
        }
        Outcome::WriteSame { pattern, extent } => {
            assert_eq!(pattern.len(), 512);
            check_extent(extent, size);
        }
        Outcome::Data(d) => assert!(d.len() <= 1 << 16),
        Outcome::Good | Outcome::Flush | Outcome::Check(_) => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let [sel, cdb_len, rest @ ..] = data else {
        return;
    };
    let size = SIZES[usize::from(sel & 3)];
    let lu = LogicalUnit::new(LuConfig {
        target_iqn: "iqn.2026-01.example:fuzz".into(),
        lun: 0,
        size_bytes: size,
        read_only: sel & 4 != 0,
        unmap: sel & 8 != 0,
    });
    let mut target = Target::new(vec![lu]);
    let lun = encode_lun(u16::from(sel >> 6));
    let (cdb, data_out) = rest.split_at(usize::from(*cdb_len % 17).min(rest.len()));
    let size = size & !511;

    // Twice: the first command of a nexus meets the power-on unit attention.
    for _ in 0..2 {
        let o = target.execute(NexusId(1), lun, cdb);
        check(&o, size);
        if let Outcome::DataOut {
            then: AfterDataOut::Parameters(p),
            ..
        } = o
        {
            let o = target.handle_parameters(NexusId(1), lun, p, data_out);
            check(&o, size);
            assert!(!matches!(o, Outcome::DataOut { .. }));
        }
    }
});
