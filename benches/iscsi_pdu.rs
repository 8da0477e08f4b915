//! The per-PDU costs of the iSCSI data path: parsing a SCSI Command,
//! building a Data-In header (with and without header digest), CRC32C
//! over a typical data segment, framing a batch of 32 commands out of one
//! read, and sending 32 Data-In PDUs of 4 KiB both ways the engine can
//! (data copied behind the headers into one send, or one sendfile each).

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

use dls::engine::iscsi::rx::RxBuf;
use dls::engine::outq::{FilePath, OutQueue};
use dls::iscsi::frame::{self, Frame};

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

/// 32 READ commands arrive in one read; all are framed and parsed before
/// anything is written (the engine's batched command path).
fn command_batch(c: &mut Criterion) {
    let one = read10_pdu();
    let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 32).collect();
    let mut rx = RxBuf::default();
    c.bench_function("iscsi_frame_parse_32_commands", |b| {
        b.iter(|| {
            let mut src = &batch[..];
            rx.read_from(&mut src, 256 << 10).unwrap();
            let mut n = 0;
            while let Ok(Frame::Complete(layout)) =
                frame::frame(rx.data(), Digests::default(), 262_144)
            {
                let (pdu, _) = Pdu::parse(rx.data(), Digests::default(), 262_144).unwrap();
                black_box(pdu.header);
                rx.consume(layout.total());
                n += 1;
            }
            assert_eq!(n, 32);
        })
    });
}

/// 32 Data-In PDUs of 4 KiB to a socket whose peer drains it: copied
/// behind their headers (what the engine does up to 32 KiB) against a
/// header send plus one sendfile each.
fn data_in_batch(c: &mut Criterion) {
    let mut file = tempfile::tempfile().unwrap();
    file.write_all(&vec![0x5au8; 1 << 20]).unwrap();
    let file = Arc::new(file);
    let (tx, mut rx) = UnixStream::pair().unwrap();
    std::thread::spawn(move || {
        let mut sink = vec![0u8; 1 << 20];
        while rx.read(&mut sink).is_ok_and(|n| n > 0) {}
    });
    let header = [0x25u8; 48];
    let mut q = OutQueue::default();
    let mut g = c.benchmark_group("iscsi_send_32_data_in_4k");
    g.throughput(Throughput::Bytes(32 * (48 + 4096)));
    let flush = |q: &mut OutQueue| while !q.flush(tx.as_raw_fd(), FilePath::Sendfile).unwrap() {};
    g.bench_function("copied", |b| {
        b.iter(|| {
            for i in 0..32u64 {
                q.push_slice(&header);
                q.push_read(&file, i * 8192, 4096).unwrap();
            }
            flush(&mut q);
        })
    });
    g.bench_function("sendfile", |b| {
        b.iter(|| {
            for i in 0..32u64 {
                q.push_slice(&header);
                q.push_file(file.clone(), i * 8192, 4096);
            }
            flush(&mut q);
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    parse,
    data_in_header,
    crc,
    command_batch,
    data_in_batch
);
criterion_main!(benches);
