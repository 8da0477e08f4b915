//! CDB decoding and the per-command path of the SCSI layer: what every
//! READ and WRITE pays before the engine touches the store.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dls::iscsi::scsi::{Cdb, LogicalUnit, LuConfig, NexusId};

const READ_10: [u8; 16] = [0x28, 0, 0, 0, 0x10, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0];
const WRITE_16: [u8; 16] = [0x8a, 0x08, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 8, 0, 0];
const INQUIRY_83: [u8; 16] = [0x12, 1, 0x83, 0, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn decode(c: &mut Criterion) {
    c.bench_function("scsi_parse_read10", |b| {
        b.iter(|| Cdb::parse(black_box(&READ_10)))
    });
    c.bench_function("scsi_parse_write16", |b| {
        b.iter(|| Cdb::parse(black_box(&WRITE_16)))
    });
}

fn execute(c: &mut Criterion) {
    let mut lu = LogicalUnit::new(LuConfig {
        target_iqn: "iqn.2026-01.example:bench".into(),
        lun: 0,
        size_bytes: 1 << 30,
        read_only: false,
        unmap: true,
    });
    let nexus = NexusId(1);
    lu.take_unit_attention(nexus);
    c.bench_function("scsi_execute_read10", |b| {
        b.iter(|| lu.execute(nexus, black_box(&READ_10)))
    });
    c.bench_function("scsi_execute_write16", |b| {
        b.iter(|| lu.execute(nexus, black_box(&WRITE_16)))
    });
    c.bench_function("scsi_execute_inquiry_vpd83", |b| {
        b.iter(|| lu.execute(nexus, black_box(&INQUIRY_83)))
    });
}

criterion_group!(benches, decode, execute);
criterion_main!(benches);
