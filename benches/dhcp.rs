//! DHCP per-packet costs: parsing a PXE DISCOVER, and the whole decision
//! (parse, allocate, encode) for DISCOVER and REQUEST.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, SystemTime};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dls::dhcp::config::{DhcpConfig, Mode};
use dls::dhcp::lease::Bindings;
use dls::dhcp::wire::Request;
use dls::dhcp::{Arrival, Server};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

/// A DHCP request as a PXE ROM sends it.
fn packet(msg_type: u8, mac: [u8; 6], requested: Option<Ipv4Addr>) -> Vec<u8> {
    let mut b = vec![0u8; 240];
    b[..4].copy_from_slice(&[1, 1, 6, 0]);
    b[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    b[10] = 0x80;
    b[28..34].copy_from_slice(&mac);
    b[236..240].copy_from_slice(&[99, 130, 83, 99]);
    b.extend_from_slice(&[53, 1, msg_type]);
    b.extend_from_slice(&[60, 32]);
    b.extend_from_slice(b"PXEClient:Arch:00007:UNDI:003016");
    b.extend_from_slice(&[93, 2, 0, 7, 94, 3, 1, 3, 16, 97, 17, 0]);
    b.extend_from_slice(&[0x5a; 16]);
    b.extend_from_slice(&[55, 7, 1, 3, 6, 43, 60, 66, 67]);
    if let Some(ip) = requested {
        b.extend_from_slice(&[50, 4]);
        b.extend_from_slice(&ip.octets());
        b.extend_from_slice(&[54, 4]);
        b.extend_from_slice(&SERVER.octets());
    }
    b.push(255);
    b
}

fn server() -> Server {
    let mut c = DhcpConfig::new("dls0", Mode::Server);
    c.subnet = "10.77.0.0/16".parse().ok();
    c.range = Some([Ipv4Addr::new(10, 77, 1, 0), Ipv4Addr::new(10, 77, 255, 254)]);
    c.boot.uefi_x64 = Some("ipxe.efi".into());
    Server::new(c, Bindings::default())
}

fn bench(c: &mut Criterion) {
    let arrival = Arrival {
        local_addr: SERVER,
        local_port: 67,
        source: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let discover = packet(1, [0x52, 0x54, 0, 0, 0, 1], None);
    c.bench_function("dhcp_parse_discover", |b| {
        b.iter(|| Request::parse(black_box(&discover)))
    });

    let mut s = server();
    c.bench_function("dhcp_handle_discover", |b| {
        b.iter(|| s.handle(black_box(&discover), &arrival, now))
    });

    // DISCOVER + REQUEST per iteration over a 62k pool.
    let mut s = server();
    let mut n = 0u32;
    c.bench_function("dhcp_dora", |b| {
        b.iter(|| {
            // Cycles through 50k clients, fewer than the pool holds: new ones
            // first, then returning ones.
            n = (n + 1) % 50_000;
            let [_, x, y, z] = n.to_be_bytes();
            let mac = [0x52, 0x54, 0, x, y, z];
            let offer = s.handle(&packet(1, mac, None), &arrival, now);
            let Some(reply) = offer.ok().and_then(|d| d.reply) else {
                return;
            };
            let yiaddr = Ipv4Addr::new(
                reply.bytes[16],
                reply.bytes[17],
                reply.bytes[18],
                reply.bytes[19],
            );
            black_box(s.handle(&packet(3, mac, Some(yiaddr)), &arrival, now)).ok();
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
