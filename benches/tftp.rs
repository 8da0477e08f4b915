//! criterion benches for the TFTP hot path: packet parse and encode, option
//! negotiation, path resolution, the per-window path of the state machine,
//! one window through the real send call on loopback, and a burst of ACKs
//! through the real receive call (recv_from until EAGAIN against recvmmsg).
//!
//! `cargo bench --bench tftp` for the full run, `-- --quick` for a short one.
//! The send benches measure the sender's syscall and the receiver's drain
//! together, on whatever kernel runs them; they are for comparing send
//! paths on one machine, not a throughput figure for the server.

use std::hint::black_box;
use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dls::sys::{self, Datagram, Segment, SendBatch};
use dls::tftp::negotiate::{negotiate, Limits};
use dls::tftp::path;
use dls::tftp::transfer::{Transfer, Transmit};
use dls::tftp::wire::{self, Packet, DATA_HEADER_LEN};
use socket2::{SockAddr, SockRef};

/// What iPXE sends for its first file.
const IPXE_RRQ: &[u8] = b"\x00\x01boot.ipxe\x00octet\x00blksize\x001432\x00tsize\x000\x00";
/// The same with the largest window dls grants by default.
const WINDOWED_RRQ: &[u8] =
    b"\x00\x01boot.ipxe\x00octet\x00blksize\x001432\x00tsize\x000\x00windowsize\x0064\x00";
const BLKSIZE: usize = 1432;
const WINDOW: usize = 64;

fn wire_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire");
    g.bench_function("parse_rrq_ipxe", |b| {
        b.iter(|| Packet::parse(black_box(IPXE_RRQ)))
    });
    g.bench_function("parse_ack", |b| {
        b.iter(|| Packet::parse(black_box(b"\x00\x04\x12\x34")))
    });
    g.bench_function("encode_data_header", |b| {
        b.iter(|| wire::encode_data_header(black_box(0x1234)))
    });
    let oack = [
        ("blksize", "1432".to_string()),
        ("tsize", "31457280".to_string()),
    ];
    let mut out = Vec::with_capacity(64);
    g.bench_function("encode_oack", |b| {
        b.iter(|| {
            out.clear();
            wire::encode_oack(&mut out, black_box(&oack));
            out.len()
        })
    });
    g.finish();
}

fn request_benches(c: &mut Criterion) {
    let Ok(Packet::Rrq(req)) = Packet::parse(IPXE_RRQ) else {
        unreachable!("IPXE_RRQ is an RRQ");
    };
    let limits = Limits::default();
    let mut g = c.benchmark_group("request");
    g.bench_function("negotiate_ipxe", |b| {
        b.iter(|| negotiate(black_box(&req), black_box(31_457_280), &limits))
    });
    g.bench_function("resolve_flat", |b| {
        b.iter(|| path::resolve(black_box(b"boot.ipxe")))
    });
    g.bench_function("resolve_pxelinux_cfg", |b| {
        b.iter(|| path::resolve(black_box(b"/pxelinux.cfg/01-52-54-00-12-34-56")))
    });
    g.finish();
}

/// Sends the window the transfer asks for, as the engine does short of the
/// syscall: one header and one block lookup per packet. Returns the last
/// block sent.
fn send_window(t: &mut Transfer, headers: &mut Vec<[u8; DATA_HEADER_LEN]>, now: Instant) -> u64 {
    let Some(Transmit::Window { first, count }) = t.poll_transmit() else {
        panic!("expected a window, got {:?}", t.poll_transmit());
    };
    headers.clear();
    let mut bytes = 0;
    for seq in first..first + count {
        let block = t.block(seq);
        headers.push(wire::encode_data_header(block.number));
        bytes += block.len;
    }
    black_box((&headers, bytes));
    t.on_sent(count, now);
    first + count - 1
}

fn transfer_benches(c: &mut Criterion) {
    let Ok(Packet::Rrq(req)) = Packet::parse(WINDOWED_RRQ) else {
        unreachable!("WINDOWED_RRQ is an RRQ");
    };
    // Large enough that no run of the bench reaches the end of the file.
    let size = 1u64 << 50;
    let limits = Limits::default();
    let n = negotiate(&req, size, &limits);
    assert_eq!(usize::from(n.windowsize), WINDOW);
    let now = Instant::now();
    let mut t = Transfer::new(&n, size, &limits, now);
    t.on_sent(1, now); // the OACK
    t.handle_packet(&Packet::Ack { block: 0 }, now);
    let mut headers = Vec::with_capacity(WINDOW);
    let mut last = send_window(&mut t, &mut headers, now);

    let mut g = c.benchmark_group("transfer");
    g.throughput(Throughput::Elements(WINDOW as u64));
    g.bench_function("ack_then_window_of_64", |b| {
        b.iter(|| {
            let ack = Packet::Ack {
                block: t.block(last).number,
            };
            t.handle_packet(black_box(&ack), now);
            last = send_window(&mut t, &mut headers, now);
        })
    });
    g.finish();
    assert!(!t.is_done());
}

/// Reads everything queued on `rx`; returns the number of datagrams.
fn drain(rx: &UdpSocket, buf: &mut [u8]) -> usize {
    let mut n = 0;
    loop {
        match rx.recv(buf) {
            Ok(_) => n += 1,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return n,
            Err(e) => panic!("recv on loopback: {e}"),
        }
    }
}

fn send_benches(c: &mut Criterion) {
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind receiver");
    rx.set_nonblocking(true).expect("non-blocking receiver");
    // Room for a whole window; the kernel caps this at net.core.rmem_max.
    let _ = SockRef::from(&rx).set_recv_buffer_size(4 << 20);
    let tx = UdpSocket::bind("127.0.0.1:0").expect("bind sender");
    let _ = SockRef::from(&tx).set_send_buffer_size(4 << 20);
    let dst = SockAddr::from(rx.local_addr().expect("receiver address"));
    let fd = tx.as_raw_fd();

    let payload = vec![0xa5u8; WINDOW * BLKSIZE];
    let headers: Vec<[u8; DATA_HEADER_LEN]> =
        (1..=WINDOW as u16).map(wire::encode_data_header).collect();
    let datagrams: Vec<Datagram> = headers
        .iter()
        .zip(payload.chunks(BLKSIZE))
        .map(|(h, p)| Datagram {
            header: Segment::from_slice(h),
            payload: Segment::from_slice(p),
        })
        .collect();
    let mut batch = SendBatch::default();
    let mut buf = vec![0u8; 65536];

    let mut g = c.benchmark_group("send");
    g.throughput(Throughput::Bytes((WINDOW * BLKSIZE) as u64));
    g.measurement_time(Duration::from_secs(3));
    for (name, gso) in [
        ("sendmmsg_window_of_64", None),
        ("gso_window_of_64", Some(BLKSIZE + DATA_HEADER_LEN)),
    ] {
        // One probe send first: skip GSO where the kernel refuses it, and
        // say how many datagrams arrive so a short receive buffer shows.
        match sys::send_datagrams(fd, &dst, &datagrams, gso, &mut batch) {
            Ok(sent) => {
                std::thread::sleep(Duration::from_millis(10));
                let got = drain(&rx, &mut buf);
                println!("send/{name}: probe sent {sent}, received {got} of {WINDOW}");
            }
            Err(e) if gso.is_some() && sys::gso_refusal(&e).is_some() => {
                println!("send/{name}: skipped, the kernel refuses UDP GSO here ({e})");
                continue;
            }
            Err(e) => panic!("send/{name}: probe send failed: {e}"),
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                let sent = sys::send_datagrams(fd, &dst, &datagrams, gso, &mut batch)
                    .expect("send on loopback");
                (sent, drain(&rx, &mut buf))
            })
        });
    }
    g.finish();
}

/// Sends `n` ACKs from `client` to the server socket.
fn send_acks(client: &UdpSocket, n: usize) {
    for i in 0..n {
        let ack = [0, 4, 0, i as u8];
        client.send(&ack).expect("send ACK on loopback");
    }
}

/// The receive side of a transfer socket: a burst of ACKs (a client that
/// acknowledges every block) and a single ACK (lock-step, or one per
/// window), taken the old way (recv_from until EAGAIN) and with one
/// recvmmsg. Each iteration also pays the client's sends, the same in both.
fn recv_benches(c: &mut Criterion) {
    let server = UdpSocket::bind("127.0.0.1:0").expect("bind server");
    server.set_nonblocking(true).expect("non-blocking server");
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind client");
    client
        .connect(server.local_addr().expect("server address"))
        .expect("connect client");
    let fd = server.as_raw_fd();
    let mut batch = sys::RecvBatch::new(32, 1024);
    let mut buf = vec![0u8; 65536];

    let mut g = c.benchmark_group("recv");
    for burst in [1usize, 32] {
        g.throughput(Throughput::Elements(burst as u64));
        g.bench_function(format!("recvfrom_until_eagain_{burst}_acks"), |b| {
            b.iter(|| {
                send_acks(&client, burst);
                let mut acks = 0;
                while acks < burst {
                    if let Ok((len, from)) = server.recv_from(&mut buf) {
                        acks += usize::from(Packet::parse(&buf[..len]).is_ok());
                        black_box(from);
                    }
                }
                // The engine's old loop ended on the EAGAIN of one more call.
                black_box(server.recv_from(&mut buf).is_err());
            })
        });
        g.bench_function(format!("recvmmsg_{burst}_acks"), |b| {
            b.iter(|| {
                send_acks(&client, burst);
                let mut acks = 0;
                while acks < burst {
                    let n = sys::recv_datagrams(fd, &mut batch).unwrap_or(0);
                    acks += (0..n)
                        .filter_map(|i| batch.get(i))
                        .filter(|d| Packet::parse(d.bytes).is_ok() && d.from.is_some())
                        .count();
                }
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    wire_benches,
    request_benches,
    transfer_benches,
    send_benches,
    recv_benches
);
criterion_main!(benches);
