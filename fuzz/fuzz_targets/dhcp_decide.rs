//! DHCP request handling on hostile bytes: parse, decide, encode, in both
//! modes and on both ports, against a server that keeps its state across
//! inputs (so sequences of requests reach the lease paths too).
//!
//! The first input byte picks mode, port, relay and the clock; the rest is
//! the datagram. Any panic is a bug; every reply must parse back.

#![no_main]

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, SystemTime};

use dls::dhcp::config::{DhcpConfig, Mode};
use dls::dhcp::lease::Bindings;
use dls::dhcp::wire::Request;
use dls::dhcp::{Arrival, Server};
use libfuzzer_sys::fuzz_target;

fn config(mode: Mode) -> DhcpConfig {
    let mut c = DhcpConfig::new("dls0", mode);
    c.subnet = "198.51.100.0/24".parse().ok();
    c.range = Some([
        Ipv4Addr::new(198, 51, 100, 100),
        Ipv4Addr::new(198, 51, 100, 103),
    ]);
    c.router = Some(Ipv4Addr::new(198, 51, 100, 254));
    c.boot.bios = Some("undionly.kpxe".into());
    c.boot.uefi_x64 = Some("ipxe.efi".into());
    c.boot.ipxe_script = Some("boot.ipxe".into());
    c
}

thread_local! {
    static SERVERS: RefCell<[Server; 2]> = RefCell::new([
        Server::new(config(Mode::Server), Bindings::default()),
        Server::new(config(Mode::Proxy), Bindings::default()),
    ]);
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, packet)) = data.split_first() else {
        return;
    };
    let arrival = Arrival {
        local_addr: Ipv4Addr::new(198, 51, 100, 1),
        local_port: if ctl & 2 != 0 { 4011 } else { 67 },
        source: SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 50), 68),
    };
    let now =
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + u64::from(ctl >> 2) * 60);
    SERVERS.with(|s| {
        let mut servers = s.borrow_mut();
        let server = &mut servers[usize::from(ctl & 1)];
        if let Ok(decision) = server.handle(packet, &arrival, now) {
            if let Some(reply) = decision.reply {
                assert!(reply.bytes.len() >= 300);
                let mut back = reply.bytes.clone();
                back[0] = 1;
                Request::parse(&back).expect("our reply parses");
            }
        }
    });
});
