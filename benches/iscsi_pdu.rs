//! The per-PDU costs of the iSCSI data path: parsing a SCSI Command,
//! building a Data-In header (with and without header digest), and CRC32C
//! over a typical data segment.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

use dls::iscsi::crc32c;
use dls::iscsi::frame::{Digests, HeaderBytes, Pdu};
use dls::iscsi::pdu::{DataIn, Header, ScsiCommand, RESERVED_TAG};

fn read10_pdu() -> Vec<u8> {
    let mut cdb = [0u8; 16];
    cdb[..10].copy_from_slice(&[0x28, 0, 0, 0, 0x10, 0, 0, 0, 8, 0]);
    let c = ScsiCommand {
        final_bit: true,
        read: true,
        attr: 1,
        itt: 0x1234,
        expected_len: 4096,
        cmd_sn: 7,
        cdb,
        ..ScsiCommand::default()
    };
    Header::ScsiCommand(c).encode(0, 0).to_vec()
}

fn parse(c: &mut Criterion) {
    let bytes = read10_pdu();
    c.bench_function("iscsi_parse_scsi_command", |b| {
        b.iter(|| Pdu::parse(black_box(&bytes), Digests::default(), 262_144).map(|(p, _)| p.header))
    });
}

fn data_in_header(c: &mut Criterion) {
    let d = DataIn {
        final_bit: true,
        itt: 0x1234,
        ttt: RESERVED_TAG,
        stat_sn: 10,
        exp_cmd_sn: 8,
        max_cmd_sn: 135,
        data_sn: 3,
        buffer_offset: 3 * 262_144,
        ..DataIn::default()
    };
    c.bench_function("iscsi_data_in_header", |b| {
        b.iter(|| black_box(&d).encode(262_144))
    });
    let digests = Digests {
        header: true,
        data: false,
    };
    c.bench_function("iscsi_data_in_header_digest", |b| {
        b.iter(|| HeaderBytes::new(black_box(&d).encode(262_144), digests))
    });
}

fn crc(c: &mut Criterion) {
    let data = vec![0x5au8; 65536];
    let mut g = c.benchmark_group("iscsi_crc32c");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("64KiB", |b| b.iter(|| crc32c::checksum(black_box(&data))));
    g.finish();
}

criterion_group!(benches, parse, data_in_header, crc);
criterion_main!(benches);
