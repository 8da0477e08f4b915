//! kill -9 of a real process in the middle of a burst of leases.
//!
//! The child (this test binary re-run with `DLS_STORE_CHILD` set) runs the
//! DHCP server and the lease store for ever-new clients, printing each
//! lease only after the store's append returned, i.e. at the moment it
//! would send the ACK; it compacts every 64 records, so the kill also lands
//! inside compactions. The parent kills it with SIGKILL at an arbitrary
//! point, reopens the store, and checks that every printed lease is there
//! and that no address was ever ACKed to two clients.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use dls::dhcp::config::{DhcpConfig, Mode};
use dls::dhcp::server::unix_secs;
use dls::dhcp::store::Store;
use dls::dhcp::{Arrival, Server};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

fn config() -> DhcpConfig {
    let mut c = DhcpConfig::new("dls0", Mode::Server);
    c.subnet = "10.77.0.0/16".parse().ok();
    c.range = Some([Ipv4Addr::new(10, 77, 1, 0), Ipv4Addr::new(10, 77, 255, 254)]);
    c
}

/// A DHCP request: DISCOVER, or REQUEST (SELECTING) for `requested`.
fn packet(mac: [u8; 6], requested: Option<Ipv4Addr>) -> Vec<u8> {
    let mut b = vec![0u8; 240];
    b[..4].copy_from_slice(&[1, 1, 6, 0]);
    b[10] = 0x80;
    b[28..34].copy_from_slice(&mac);
    b[236..240].copy_from_slice(&[99, 130, 83, 99]);
    match requested {
        None => b.extend_from_slice(&[53, 1, 1]),
        Some(ip) => {
            b.extend_from_slice(&[53, 1, 3, 50, 4]);
            b.extend_from_slice(&ip.octets());
            b.extend_from_slice(&[54, 4]);
            b.extend_from_slice(&SERVER.octets());
        }
    }
    b.push(255);
    b
}

fn mac_of(round: u32, i: u32) -> [u8; 6] {
    let [_, a, b, c] = (round << 16 | i).to_be_bytes();
    [0x52, 0x54, 0, a, b, c]
}

/// The child: leases for ever-new clients until killed.
#[test]
fn store_writer_child() {
    let Ok(path) = std::env::var("DLS_STORE_CHILD") else {
        return;
    };
    let round: u32 = std::env::var("DLS_ROUND").unwrap().parse().unwrap();
    let (mut store, _) = Store::open_with(path.as_ref(), unix_secs(SystemTime::now()), 64).unwrap();
    let mut server = Server::new(config(), store.bindings().clone());
    let arrival = Arrival {
        local_addr: SERVER,
        local_port: 67,
        source: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
    };
    let mut out = std::io::stdout().lock();
    for i in 0..60_000 {
        let now = SystemTime::now();
        let mac = mac_of(round, i);
        let offer = server.handle(&packet(mac, None), &arrival, now).unwrap();
        let bytes = offer.reply.unwrap().bytes;
        let ip = Ipv4Addr::new(bytes[16], bytes[17], bytes[18], bytes[19]);
        let ack = server
            .handle(&packet(mac, Some(ip)), &arrival, now)
            .unwrap();
        store.append(&ack.journal, unix_secs(now)).unwrap();
        assert_eq!(
            ack.reply.unwrap().message_type,
            dhcproto::v4::MessageType::Ack
        );
        writeln!(out, "ACK {ip} {round} {i}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn kill_9_during_a_burst_loses_no_acked_lease() {
    if std::env::var("DLS_STORE_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases");
    let exe = std::env::current_exe().unwrap();
    let mut acked: HashMap<Ipv4Addr, [u8; 6]> = HashMap::new();
    for round in 0..6u32 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "store_writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("DLS_STORE_CHILD", &path)
            .env("DLS_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = 0;
        for line in lines {
            let line = line.unwrap();
            let Some(rest) = line.strip_prefix("ACK ") else {
                continue;
            };
            let mut f = rest.split(' ');
            let ip: Ipv4Addr = f.next().unwrap().parse().unwrap();
            let i: u32 = f.nth(1).unwrap().parse().unwrap();
            let mac = mac_of(round, i);
            if let Some(prev) = acked.insert(ip, mac) {
                panic!("{ip} ACKed to {prev:02x?} and again to {mac:02x?}");
            }
            seen += 1;
            // Vary the moment of the kill from round to round.
            if seen >= 100 + 37 * round {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(10));

        let (store, _) = Store::open(&path, unix_secs(SystemTime::now())).unwrap();
        for (ip, mac) in &acked {
            let lease = store
                .bindings()
                .lease(*ip)
                .unwrap_or_else(|| panic!("round {round}: {ip} lost"));
            assert_eq!(
                lease.client.0[1..],
                mac[..],
                "round {round}: {ip} holder changed"
            );
        }
    }
}
