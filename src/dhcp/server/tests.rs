//! Scripted exchanges against the DHCP server, on a fixed clock. Requests
//! are real encoded packets; replies are checked as bytes and parsed fields.
//! Tests named `bc_NN_x` reproduce cases of ../shared/cases/CASES.md.

use std::collections::HashMap;

use super::*;
use crate::dhcp::config::{HostConfig, Mac};
use crate::dhcp::store::Store;
use crate::dhcp::wire::tests::request_bytes;

const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const RELAY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 254);
const OTHER_SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const ZERO: Ipv4Addr = Ipv4Addr::UNSPECIFIED;
const MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const BCAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::BROADCAST, 68);
const PXE_CLASS: &[u8] = b"PXEClient:Arch:00000:UNDI:002001";

fn config(mode: Mode) -> DhcpConfig {
    let mut c = DhcpConfig::new("dls0", mode);
    c.subnet = Some("198.51.100.0/24".parse().unwrap());
    if mode == Mode::Server {
        c.range = Some([
            Ipv4Addr::new(198, 51, 100, 100),
            Ipv4Addr::new(198, 51, 100, 199),
        ]);
        c.router = Some(RELAY);
        c.dns = vec![SERVER];
    }
    c.boot.bios = Some("undionly.kpxe".into());
    c.boot.uefi_x64 = Some("ipxe.efi".into());
    c.boot.uefi_arm64 = Some("ipxe-arm64.efi".into());
    c.boot.uefi_ia32 = Some("ipxe-ia32.efi".into());
    c.boot.ipxe_script = Some("http://198.51.100.1/boot.ipxe".into());
    c.validate().unwrap();
    c
}

fn server(mode: Mode) -> Server {
    Server::new(config(mode), Bindings::default())
}

fn at(s: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
}

fn arrival(port: u16, source: SocketAddrV4) -> Arrival {
    Arrival {
        local_addr: SERVER,
        local_port: port,
        source,
    }
}

fn local() -> Arrival {
    arrival(67, SocketAddrV4::new(ZERO, 68))
}

/// A request under construction.
#[derive(Clone)]
struct Pkt {
    mac: [u8; 6],
    flags: u16,
    ciaddr: Ipv4Addr,
    giaddr: Ipv4Addr,
    options: Vec<(u8, Vec<u8>)>,
}

fn pkt(msg: MessageType) -> Pkt {
    Pkt {
        mac: MAC,
        flags: 0x8000,
        ciaddr: ZERO,
        giaddr: ZERO,
        options: vec![(code::MESSAGE_TYPE, vec![u8::from(msg)])],
    }
}

impl Pkt {
    fn opt(mut self, c: u8, v: &[u8]) -> Pkt {
        self.options.push((c, v.to_vec()));
        self
    }
    fn pxe(self, arch: &[u8]) -> Pkt {
        self.opt(code::VENDOR_CLASS, PXE_CLASS)
            .opt(code::CLIENT_ARCH, arch)
    }
    fn requested(self, ip: Ipv4Addr) -> Pkt {
        self.opt(code::REQUESTED_IP, &ip.octets())
    }
    fn server_id(self, ip: Ipv4Addr) -> Pkt {
        self.opt(code::SERVER_ID, &ip.octets())
    }
    fn ciaddr(mut self, ip: Ipv4Addr) -> Pkt {
        self.ciaddr = ip;
        self
    }
    fn giaddr(mut self, ip: Ipv4Addr) -> Pkt {
        self.giaddr = ip;
        self
    }
    fn flags(mut self, f: u16) -> Pkt {
        self.flags = f;
        self
    }
    fn mac(mut self, last: u8) -> Pkt {
        self.mac[5] = last;
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let opts: Vec<(u8, &[u8])> = self
            .options
            .iter()
            .map(|(c, v)| (*c, v.as_slice()))
            .collect();
        request_bytes(self.mac, self.flags, self.ciaddr, self.giaddr, &opts)
    }
}

/// A reply, parsed back (with op patched so the request parser reads it).
struct Seen {
    out: Outgoing,
    msg: Request,
}

impl Seen {
    fn file_field(&self) -> &[u8] {
        &self.out.bytes[108..236]
    }
    fn file(&self) -> &[u8] {
        let f = self.file_field();
        &f[..f.iter().position(|&b| b == 0).unwrap_or(f.len())]
    }
    fn siaddr(&self) -> Ipv4Addr {
        self.msg.siaddr
    }
    fn opt(&self, c: u8) -> Option<&[u8]> {
        self.msg.option(c)
    }
    /// The byte right after option 67's value in the encoded options.
    fn byte_after_option_67(&self) -> Option<u8> {
        let mut i = 240;
        let b = &self.out.bytes;
        while i < b.len() {
            match b[i] {
                0 => i += 1,
                255 => return None,
                c => {
                    let len = usize::from(b[i + 1]);
                    if c == code::BOOTFILE {
                        return Some(b[i + 2 + len]);
                    }
                    i += 2 + len;
                }
            }
        }
        None
    }
}

fn send(s: &mut Server, p: &Pkt, arr: &Arrival, now: u64) -> Result<Decision, Ignored> {
    s.handle(&p.bytes(), arr, at(now))
}

fn reply(s: &mut Server, p: &Pkt, arr: &Arrival, now: u64) -> Seen {
    let d = send(s, p, arr, now).expect("a reply");
    let out = d.reply.expect("a reply");
    assert!(out.bytes.len() >= wire::BOOTP_MIN_LEN);
    let mut b = out.bytes.clone();
    assert_eq!(b[0], 2, "BOOTREPLY");
    b[0] = 1;
    let msg = Request::parse(&b).expect("reply parses");
    Seen { out, msg }
}

fn mtype(s: &Seen) -> MessageType {
    s.msg.message_type.unwrap()
}

/// DISCOVER and REQUEST for one client; returns the ACKed address.
fn dora(s: &mut Server, mac: u8, now: u64) -> (Ipv4Addr, Decision) {
    let offer = reply(s, &pkt(MessageType::Discover).mac(mac), &local(), now);
    let ip = offer.msg.yiaddr;
    let req = pkt(MessageType::Request)
        .mac(mac)
        .server_id(SERVER)
        .requested(ip);
    let d = send(s, &req, &local(), now).unwrap();
    let ack = d.reply.as_ref().unwrap();
    assert_eq!(ack.message_type, MessageType::Ack);
    (ip, d)
}

#[test]
fn discover_request_ack() {
    let mut s = server(Mode::Server);
    let offer = reply(&mut s, &pkt(MessageType::Discover), &local(), 0);
    assert_eq!(mtype(&offer), MessageType::Offer);
    let ip = offer.msg.yiaddr;
    assert_eq!(ip.octets()[..3], [198, 51, 100]);
    assert!((100..=199).contains(&ip.octets()[3]));
    assert_eq!(offer.opt(code::SERVER_ID), Some(&SERVER.octets()[..]));
    assert_eq!(
        offer.opt(code::LEASE_TIME),
        Some(&3600u32.to_be_bytes()[..])
    );
    assert_eq!(
        offer.opt(code::RENEWAL_TIME),
        Some(&1800u32.to_be_bytes()[..])
    );
    assert_eq!(
        offer.opt(code::REBINDING_TIME),
        Some(&3150u32.to_be_bytes()[..])
    );
    assert_eq!(offer.opt(code::SUBNET_MASK), Some(&[255, 255, 255, 0][..]));
    assert_eq!(offer.opt(code::ROUTER), Some(&RELAY.octets()[..]));
    assert_eq!(
        offer.opt(code::BOOTFILE),
        None,
        "no boot info for a plain client"
    );

    let req = pkt(MessageType::Request).server_id(SERVER).requested(ip);
    let d = send(&mut s, &req, &local(), 1).unwrap();
    assert_eq!(
        d.journal,
        vec![Record::Grant {
            ip,
            client: ClientId(vec![1, 0x52, 0x54, 0, 0, 0, 1]),
            expires: 1_800_003_601
        }]
    );
    assert_eq!(d.reply.unwrap().message_type, MessageType::Ack);
    assert_eq!(s.bindings().active(unix_secs(at(2))).count(), 1);
}

#[test]
fn bc_11_a_relay_gets_offer_on_port_67() {
    let mut s = server(Mode::Server);
    let p = pkt(MessageType::Discover).giaddr(RELAY).flags(0x8000);
    let r = reply(&mut s, &p, &arrival(67, SocketAddrV4::new(RELAY, 67)), 0);
    assert_eq!(r.out.destination, SocketAddrV4::new(RELAY, 67));
    assert!(!r.out.broadcast_l2);
    assert_eq!(r.msg.flags, 0x8000);
    assert_eq!(r.msg.giaddr, RELAY);
}

#[test]
fn bc_11_b_second_relay_hop_still_to_giaddr() {
    let mut s = server(Mode::Server);
    let p = pkt(MessageType::Discover).giaddr(RELAY);
    let hop = SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 67);
    let r = reply(&mut s, &p, &arrival(67, hop), 0);
    assert_eq!(r.out.destination, SocketAddrV4::new(RELAY, 67));
    assert_eq!(r.msg.giaddr, RELAY);
}

#[test]
fn bc_11_c_broadcast_flag_means_broadcast() {
    let mut s = server(Mode::Server);
    let r = reply(
        &mut s,
        &pkt(MessageType::Discover).flags(0x8000),
        &local(),
        0,
    );
    assert_eq!(r.out.destination, BCAST);
    assert!(r.out.broadcast_l2);
    assert_eq!(r.msg.flags, 0x8000);
}

#[test]
fn bc_11_d_flags_zero_are_echoed() {
    let mut s = server(Mode::Server);
    let r = reply(&mut s, &pkt(MessageType::Discover).flags(0), &local(), 0);
    // No ARP entry for yiaddr yet: broadcast, which the case accepts.
    assert_eq!(r.out.destination, BCAST);
    assert_eq!(r.msg.flags, 0);
    // Other flag bits (reserved, MUST be zero) are copied too.
    let r = reply(
        &mut s,
        &pkt(MessageType::Discover).flags(0x0001).mac(2),
        &local(),
        0,
    );
    assert_eq!(r.msg.flags, 0x0001);
}

#[test]
fn bc_11_e_ciaddr_gets_unicast() {
    let mut s = server(Mode::Server);
    let client = Ipv4Addr::new(198, 51, 100, 50);
    let inform = pkt(MessageType::Inform).ciaddr(client).flags(0);
    let r = reply(
        &mut s,
        &inform,
        &arrival(67, SocketAddrV4::new(client, 68)),
        0,
    );
    assert_eq!(r.out.destination, SocketAddrV4::new(client, 68));
    assert!(!r.out.broadcast_l2);

    let mut p = server(Mode::Proxy);
    let req = pkt(MessageType::Request).ciaddr(client).pxe(&[0, 7]);
    let r = reply(
        &mut p,
        &req,
        &arrival(4011, SocketAddrV4::new(client, 68)),
        0,
    );
    assert_eq!(r.out.destination, SocketAddrV4::new(client, 68));
}

#[test]
fn bc_11_f_proxy_offer_via_relay() {
    let mut s = server(Mode::Proxy);
    let p = pkt(MessageType::Discover).giaddr(RELAY).pxe(&[0, 0]);
    let r = reply(&mut s, &p, &arrival(67, SocketAddrV4::new(RELAY, 67)), 0);
    assert_eq!(mtype(&r), MessageType::Offer);
    assert_eq!(r.out.destination, SocketAddrV4::new(RELAY, 67));
    assert_eq!(r.msg.flags, 0x8000);
    assert_eq!(r.msg.giaddr, RELAY);
}

#[test]
fn relay_outside_subnet_is_ignored() {
    let mut s = server(Mode::Server);
    let p = pkt(MessageType::Discover).giaddr(Ipv4Addr::new(192, 0, 2, 1));
    assert_eq!(
        send(&mut s, &p, &local(), 0).unwrap_err(),
        Ignored::WrongSubnet
    );
    let mut proxy = Server::new(DhcpConfig::new("dls0", Mode::Proxy), Bindings::default());
    let p = pkt(MessageType::Discover).giaddr(RELAY).pxe(&[0, 0]);
    assert_eq!(
        send(&mut proxy, &p, &local(), 0).unwrap_err(),
        Ignored::WrongSubnet
    );
}

#[test]
fn bc_12_step_1_file_field_and_nul_after_option_67() {
    for (arch, name) in [([0u8, 0], &b"undionly.kpxe"[..]), ([0, 7], b"ipxe.efi")] {
        for mode in [Mode::Server, Mode::Proxy] {
            let mut s = server(mode);
            let r = reply(&mut s, &pkt(MessageType::Discover).pxe(&arch), &local(), 0);
            assert_eq!(r.file(), name, "{mode:?}");
            assert!(
                r.file_field()[name.len()..].iter().all(|&b| b == 0),
                "NUL-padded to 128"
            );
            assert_eq!(r.siaddr(), SERVER);
            assert_eq!(r.opt(code::BOOTFILE), Some(name));
            assert_eq!(r.byte_after_option_67(), Some(0));
            assert_eq!(r.opt(code::TFTP_SERVER), Some(&b"198.51.100.1"[..]));
        }
    }
}

#[test]
fn bc_14_a_proxy_offer_without_94_and_97() {
    let mut s = server(Mode::Proxy);
    let r = reply(
        &mut s,
        &pkt(MessageType::Discover).pxe(&[0, 0]),
        &local(),
        0,
    );
    assert_eq!(mtype(&r), MessageType::Offer);
    assert_eq!(r.msg.yiaddr, ZERO);
    assert_eq!(r.siaddr(), SERVER);
    assert_eq!(r.opt(code::SERVER_ID), Some(&SERVER.octets()[..]));
    assert_eq!(r.opt(code::VENDOR_CLASS), Some(&b"PXEClient"[..]));
    assert_eq!(r.opt(code::VENDOR_SPECIFIC), Some(&[6, 1, 8, 255][..]));
    assert_eq!(r.file(), b"undionly.kpxe");
    assert_eq!(r.opt(code::CLIENT_UUID), None);
    assert_eq!(r.opt(code::LEASE_TIME), None, "a proxy grants no lease");
}

#[test]
fn bc_14_b_uuid_is_echoed() {
    let mut s = server(Mode::Proxy);
    let mut uuid = vec![0u8];
    uuid.extend(1..=16);
    let p = pkt(MessageType::Discover)
        .pxe(&[0, 0])
        .opt(code::CLIENT_UUID, &uuid);
    let r = reply(&mut s, &p, &local(), 0);
    assert_eq!(r.opt(code::CLIENT_UUID), Some(&uuid[..]));
}

#[test]
fn bc_14_c_request_on_4011_gets_unicast_ack() {
    let mut s = server(Mode::Proxy);
    s.config.boot.uefi_x64 = Some("bootx64.efi".into());
    let client = Ipv4Addr::new(198, 51, 100, 50);
    let mut uuid = vec![0u8];
    uuid.extend(1..=16);
    let p = pkt(MessageType::Request)
        .ciaddr(client)
        .flags(0)
        .pxe(&[0, 7])
        .opt(code::CLIENT_UUID, &uuid);
    let r = reply(&mut s, &p, &arrival(4011, SocketAddrV4::new(client, 68)), 0);
    assert_eq!(mtype(&r), MessageType::Ack);
    assert_eq!(r.out.destination, SocketAddrV4::new(client, 68));
    assert!(!r.out.broadcast_l2);
    assert_eq!(r.file(), b"bootx64.efi");
    assert_eq!(r.opt(code::VENDOR_CLASS), Some(&b"PXEClient"[..]));
    assert_eq!(r.msg.ciaddr, client);
    assert_eq!(r.msg.yiaddr, ZERO);
}

#[test]
fn bc_14_d_proxy_silent_on_request_for_other_server() {
    let mut s = server(Mode::Proxy);
    let p = pkt(MessageType::Request)
        .pxe(&[0, 0])
        .server_id(OTHER_SERVER)
        .requested(Ipv4Addr::new(198, 51, 100, 77));
    assert_eq!(
        send(&mut s, &p, &local(), 0).unwrap_err(),
        Ignored::OtherServer
    );
    let no_sid = pkt(MessageType::Request)
        .pxe(&[0, 0])
        .requested(Ipv4Addr::new(198, 51, 100, 77));
    assert_eq!(
        send(&mut s, &no_sid, &local(), 0).unwrap_err(),
        Ignored::OtherServer
    );
}

#[test]
fn proxy_answers_uefi_http_boot() {
    let mut s = server(Mode::Proxy);
    let p = pkt(MessageType::Discover)
        .opt(code::VENDOR_CLASS, b"HTTPClient:Arch:00016:UNDI:003001")
        .opt(code::CLIENT_ARCH, &[0, 0x10]);
    let r = reply(&mut s, &p, &local(), 0);
    assert_eq!(r.file(), b"http://198.51.100.1/ipxe.efi");
    assert_eq!(r.opt(code::VENDOR_CLASS), Some(&b"HTTPClient"[..]));
    assert_eq!(r.msg.yiaddr, ZERO);
}

#[test]
fn bc_14_e_proxy_silent_for_non_pxe() {
    let mut s = server(Mode::Proxy);
    let p = pkt(MessageType::Discover).opt(code::CLIENT_ARCH, &[0, 0]);
    assert_eq!(send(&mut s, &p, &local(), 0).unwrap_err(), Ignored::NotPxe);
    let p = pkt(MessageType::Discover).opt(code::VENDOR_CLASS, b"MSFT 5.0");
    assert_eq!(send(&mut s, &p, &local(), 0).unwrap_err(), Ignored::NotPxe);
}

fn boot_file_for(s: &mut Server, p: Pkt) -> (Vec<u8>, Option<Vec<u8>>) {
    let r = reply(s, &p, &local(), 0);
    (
        r.opt(code::BOOTFILE).unwrap_or_default().to_vec(),
        r.opt(code::VENDOR_CLASS).map(<[u8]>::to_vec),
    )
}

#[test]
fn bc_15_arch_mapping() {
    let mut s = server(Mode::Server);
    let d =
        || pkt(MessageType::Discover).opt(code::VENDOR_CLASS, b"PXEClient:Arch:00000:UNDI:002001");
    for (arch, file) in [
        (&[0u8, 0][..], &b"undionly.kpxe"[..]),
        (&[0, 6], b"ipxe-ia32.efi"),
        (&[0, 7], b"ipxe.efi"),
        (&[0, 9], b"ipxe.efi"),
        (&[0, 0x0b], b"ipxe-arm64.efi"),
        (&[0, 7, 0, 0], b"ipxe.efi"),
        (&[0, 0x63, 0, 0x0b], b"ipxe-arm64.efi"),
    ] {
        assert_eq!(
            boot_file_for(&mut s, d().opt(code::CLIENT_ARCH, arch)).0,
            file,
            "arch {arch:?}"
        );
    }
}

#[test]
fn bc_15_http_boot_gets_url_and_httpclient() {
    let mut s = server(Mode::Server);
    let p = pkt(MessageType::Discover)
        .opt(code::VENDOR_CLASS, b"HTTPClient:Arch:00016:UNDI:003001")
        .opt(code::CLIENT_ARCH, &[0, 0x10]);
    let r = reply(&mut s, &p, &local(), 0);
    assert_eq!(r.file(), b"http://198.51.100.1/ipxe.efi");
    assert_eq!(
        r.opt(code::BOOTFILE),
        Some(&b"http://198.51.100.1/ipxe.efi"[..])
    );
    assert_eq!(r.opt(code::VENDOR_CLASS), Some(&b"HTTPClient"[..]));
    assert_eq!(r.opt(code::VENDOR_SPECIFIC), None);
    assert_eq!(r.opt(code::TFTP_SERVER), None, "a URL needs no TFTP server");
    let arm = pkt(MessageType::Discover)
        .mac(2)
        .opt(code::CLIENT_ARCH, &[0, 0x13]);
    assert_eq!(
        boot_file_for(&mut s, arm).0,
        b"http://198.51.100.1/ipxe-arm64.efi"
    );
}

#[test]
fn bc_15_arch_from_vendor_class_when_93_absent() {
    let mut s = server(Mode::Server);
    let p = pkt(MessageType::Discover).opt(code::VENDOR_CLASS, b"PXEClient:Arch:00007:UNDI:003016");
    assert_eq!(boot_file_for(&mut s, p).0, b"ipxe.efi");
}

#[test]
fn bc_15_odd_length_93_is_ignored_and_answered() {
    for mode in [Mode::Server, Mode::Proxy] {
        let mut s = server(mode);
        for arch in [&[7u8][..], &[0, 7, 0]] {
            let p = pkt(MessageType::Discover).pxe(arch);
            let r = reply(&mut s, &p, &local(), 0);
            assert_eq!(mtype(&r), MessageType::Offer);
            // Falls back to the arch in option 60 (00000: BIOS).
            assert_eq!(r.file(), b"undionly.kpxe");
        }
        // Without a usable 93 or 60 arch a server still offers an address.
        let p = pkt(MessageType::Discover)
            .opt(code::VENDOR_CLASS, b"PXEClient")
            .opt(code::CLIENT_ARCH, &[7]);
        let d = send(&mut s, &p, &local(), 0);
        match mode {
            Mode::Server => assert_eq!(d.unwrap().reply.unwrap().message_type, MessageType::Offer),
            Mode::Proxy => assert_eq!(d.unwrap_err(), Ignored::NoBootFile),
        }
    }
}

fn ipxe_discover() -> Pkt {
    pkt(MessageType::Discover)
        .opt(code::VENDOR_CLASS, PXE_CLASS)
        .opt(code::CLIENT_ARCH, &[0, 0])
}

#[test]
fn bc_16_a_ipxe_gets_the_script() {
    let mut s = server(Mode::Server);
    let p = ipxe_discover()
        .opt(code::USER_CLASS, b"iPXE")
        .opt(code::IPXE, &[19, 1, 1]);
    let r = reply(&mut s, &p, &local(), 0);
    assert_eq!(r.file(), b"http://198.51.100.1/boot.ipxe");
    assert_eq!(
        r.opt(code::BOOTFILE),
        Some(&b"http://198.51.100.1/boot.ipxe"[..])
    );
    assert_eq!(
        r.opt(code::IPXE),
        Some(&[176, 1, 1][..]),
        "told not to wait for proxyDHCP"
    );
    // 175 alone is enough.
    let p = ipxe_discover().mac(2).opt(code::IPXE, &[19, 1, 1]);
    assert_eq!(boot_file_for(&mut s, p).0, b"http://198.51.100.1/boot.ipxe");
}

#[test]
fn bc_16_b_plain_pxe_gets_the_binary() {
    let mut s = server(Mode::Server);
    let r = reply(&mut s, &ipxe_discover(), &local(), 0);
    assert_eq!(r.file(), b"undionly.kpxe");
    assert_eq!(r.opt(code::IPXE), None);
}

#[test]
fn bc_16_c_rfc3004_user_class_is_ipxe_too() {
    let mut s = server(Mode::Server);
    let p = ipxe_discover().opt(code::USER_CLASS, b"\x04iPXE");
    assert_eq!(boot_file_for(&mut s, p).0, b"http://198.51.100.1/boot.ipxe");
}

#[test]
fn bc_16_d_proxy_rounds_never_give_ipxe_the_binary_twice() {
    let mut s = server(Mode::Proxy);
    // Round 1: the ROM's PXE stack gets the NBP.
    assert_eq!(boot_file_for(&mut s, ipxe_discover()).0, b"undionly.kpxe");
    // Rounds 2 and 3, within seconds, from iPXE: the script both times, and
    // no "no proxyDHCP" in a proxy's own answer.
    for now in [3, 8] {
        let p = ipxe_discover()
            .opt(code::USER_CLASS, b"iPXE")
            .opt(code::IPXE, &[19, 1, 1]);
        let r = reply(&mut s, &p, &local(), now);
        assert_eq!(r.file(), b"http://198.51.100.1/boot.ipxe");
        assert_eq!(r.opt(code::IPXE), None);
    }
    // A script on the TFTP root is a plain name with siaddr.
    s.config.boot.ipxe_script = Some("boot.ipxe".into());
    let r = reply(
        &mut s,
        &ipxe_discover().opt(code::USER_CLASS, b"iPXE"),
        &local(),
        9,
    );
    assert_eq!((r.file(), r.siaddr()), (&b"boot.ipxe"[..], SERVER));
}

#[test]
fn reservation_hostname_and_root_path() {
    let mut c = config(Mode::Server);
    c.hosts.push(HostConfig {
        mac: Mac(MAC),
        ip: Some(Ipv4Addr::new(198, 51, 100, 10)),
        hostname: Some("node01".into()),
        root_path: Some("iscsi:198.51.100.1::::iqn.2026-01.example:disk0".into()),
        boot: None,
        ipxe_script: Some("node01.ipxe".into()),
    });
    let mut s = Server::new(c, Bindings::default());
    let p = ipxe_discover().opt(code::USER_CLASS, b"iPXE");
    let r = reply(&mut s, &p, &local(), 0);
    assert_eq!(r.msg.yiaddr, Ipv4Addr::new(198, 51, 100, 10));
    assert_eq!(r.opt(code::HOSTNAME), Some(&b"node01"[..]));
    assert_eq!(
        r.opt(code::ROOT_PATH),
        Some(&b"iscsi:198.51.100.1::::iqn.2026-01.example:disk0"[..])
    );
    assert_eq!(r.file(), b"node01.ipxe");
    // Another client cannot take the reserved address.
    let other = pkt(MessageType::Request)
        .mac(9)
        .server_id(SERVER)
        .requested(Ipv4Addr::new(198, 51, 100, 10));
    assert_eq!(
        reply(&mut s, &other, &local(), 0).out.message_type,
        MessageType::Nak
    );
}

#[test]
fn nak_for_address_held_by_another_client() {
    let mut s = server(Mode::Server);
    let (ip, _) = dora(&mut s, 1, 0);
    let steal = pkt(MessageType::Request)
        .mac(2)
        .server_id(SERVER)
        .requested(ip);
    let r = reply(&mut s, &steal, &local(), 1);
    assert_eq!(mtype(&r), MessageType::Nak);
    assert_eq!(r.out.destination, BCAST);
    assert_eq!(r.msg.yiaddr, ZERO);
    assert_eq!(r.opt(code::LEASE_TIME), None);
    // The same via a relay: to the relay, with the broadcast bit set.
    let via_relay = steal.clone().giaddr(RELAY).flags(0);
    let r = reply(&mut s, &via_relay, &local(), 1);
    assert_eq!(r.out.destination, SocketAddrV4::new(RELAY, 67));
    assert_eq!(r.msg.flags, 0x8000);
}

#[test]
fn request_to_other_server_withdraws_offer() {
    let mut s = server(Mode::Server);
    let offer = reply(&mut s, &pkt(MessageType::Discover), &local(), 0);
    let ip = offer.msg.yiaddr;
    let p = pkt(MessageType::Request)
        .server_id(OTHER_SERVER)
        .requested(ip);
    assert_eq!(
        send(&mut s, &p, &local(), 1).unwrap_err(),
        Ignored::OtherServer
    );
    // The address is free again for someone else at once.
    let other = pkt(MessageType::Discover).mac(2).requested(ip);
    assert_eq!(reply(&mut s, &other, &local(), 2).msg.yiaddr, ip);
}

#[test]
fn init_reboot() {
    let mut s = server(Mode::Server);
    let (ip, _) = dora(&mut s, 1, 0);
    let reboot = pkt(MessageType::Request).requested(ip);
    assert_eq!(
        mtype(&reply(&mut s, &reboot, &local(), 100)),
        MessageType::Ack
    );
    // Wrong network: NAK.
    let moved = pkt(MessageType::Request).requested(Ipv4Addr::new(10, 0, 0, 5));
    assert_eq!(
        mtype(&reply(&mut s, &moved, &local(), 100)),
        MessageType::Nak
    );
    // A different address than its binding: NAK.
    let other = Ipv4Addr::new(198, 51, 100, 150);
    assert_ne!(other, ip);
    let wrong = pkt(MessageType::Request).requested(other);
    assert_eq!(
        mtype(&reply(&mut s, &wrong, &local(), 100)),
        MessageType::Nak
    );
    // A client unknown here: silence (RFC 2131 4.3.2).
    let stranger = pkt(MessageType::Request).mac(7).requested(other);
    assert_eq!(
        send(&mut s, &stranger, &local(), 100).unwrap_err(),
        Ignored::NoRecord
    );
    // ... unless it asks for an address someone else holds.
    let stranger = pkt(MessageType::Request).mac(7).requested(ip);
    assert_eq!(
        mtype(&reply(&mut s, &stranger, &local(), 100)),
        MessageType::Nak
    );
}

#[test]
fn renewing_and_rebinding() {
    let mut s = server(Mode::Server);
    let (ip, _) = dora(&mut s, 1, 0);
    let src = SocketAddrV4::new(ip, 68);
    let renew = pkt(MessageType::Request).ciaddr(ip).flags(0);
    let d = send(&mut s, &renew, &arrival(67, src), 1800).unwrap();
    assert!(matches!(d.journal[..], [Record::Grant { expires, .. }] if expires == 1_800_005_400));
    let out = d.reply.unwrap();
    assert_eq!(out.message_type, MessageType::Ack);
    assert_eq!(out.destination, SocketAddrV4::new(ip, 68));
    let rebind = pkt(MessageType::Request).ciaddr(ip).flags(0);
    assert_eq!(
        mtype(&reply(&mut s, &rebind, &arrival(67, src), 3000)),
        MessageType::Ack
    );
    let unknown = pkt(MessageType::Request)
        .mac(5)
        .ciaddr(Ipv4Addr::new(198, 51, 100, 180));
    assert_eq!(
        send(&mut s, &unknown, &local(), 3000).unwrap_err(),
        Ignored::NoRecord
    );
}

#[test]
fn release_frees_and_remembers() {
    let mut s = server(Mode::Server);
    let (ip, _) = dora(&mut s, 1, 0);
    let rel = pkt(MessageType::Release).ciaddr(ip).server_id(SERVER);
    let d = send(&mut s, &rel, &local(), 10).unwrap();
    assert_eq!(d.reply, None);
    assert!(matches!(d.journal[..], [Record::Release { .. }]));
    assert_eq!(s.bindings().active(unix_secs(at(11))).count(), 0);
    // Same client comes back to the same address.
    assert_eq!(dora(&mut s, 1, 20).0, ip);
    let foreign = pkt(MessageType::Release).mac(3).ciaddr(ip);
    assert_eq!(
        send(&mut s, &foreign, &local(), 30).unwrap_err(),
        Ignored::NoRecord
    );
}

#[test]
fn decline_quarantines() {
    let mut s = server(Mode::Server);
    let (ip, _) = dora(&mut s, 1, 0);
    let dec = pkt(MessageType::Decline).requested(ip).server_id(SERVER);
    let d = send(&mut s, &dec, &local(), 5).unwrap();
    assert_eq!(d.reply, None);
    assert_eq!(
        d.journal,
        vec![Record::Decline {
            ip,
            until: 1_800_000_605
        }]
    );
    let again = reply(
        &mut s,
        &pkt(MessageType::Discover).requested(ip),
        &local(),
        6,
    );
    assert_ne!(again.msg.yiaddr, ip);
    let later = reply(
        &mut s,
        &pkt(MessageType::Discover).mac(4).requested(ip),
        &local(),
        700,
    );
    assert_eq!(later.msg.yiaddr, ip);
}

#[test]
fn inform_gets_configuration_only() {
    let mut s = server(Mode::Server);
    let client = Ipv4Addr::new(198, 51, 100, 60);
    let r = reply(
        &mut s,
        &pkt(MessageType::Inform).ciaddr(client).pxe(&[0, 7]),
        &local(),
        0,
    );
    assert_eq!(mtype(&r), MessageType::Ack);
    assert_eq!(r.msg.yiaddr, ZERO);
    assert_eq!(r.opt(code::LEASE_TIME), None);
    assert_eq!(r.opt(code::BOOTFILE), Some(&b"ipxe.efi"[..]));
    assert_eq!(
        send(&mut s, &pkt(MessageType::Inform), &local(), 0).unwrap_err(),
        Ignored::MissingAddress
    );
}

#[test]
fn relay_agent_information_is_echoed() {
    let mut s = server(Mode::Server);
    let p = pkt(MessageType::Discover)
        .giaddr(RELAY)
        .opt(code::RELAY_AGENT, &[1, 3, b'e', b't', b'0']);
    let r = reply(&mut s, &p, &local(), 0);
    assert_eq!(
        r.opt(code::RELAY_AGENT),
        Some(&[1, 3, b'e', b't', b'0'][..])
    );
}

#[test]
fn client_identifier_keys_the_lease_and_is_echoed() {
    let mut s = server(Mode::Server);
    let id = [0xff, 0, 0, 0, 1, 0, 1, 0x2a];
    let p = pkt(MessageType::Discover).opt(code::CLIENT_ID, &id);
    let offer = reply(&mut s, &p, &local(), 0);
    assert_eq!(offer.opt(code::CLIENT_ID), Some(&id[..]));
    let ip = offer.msg.yiaddr;
    // Same identifier behind another NIC: same client, same address.
    let req = pkt(MessageType::Request)
        .mac(9)
        .opt(code::CLIENT_ID, &id)
        .server_id(SERVER)
        .requested(ip);
    let ack = reply(&mut s, &req, &local(), 1);
    assert_eq!((mtype(&ack), ack.msg.yiaddr), (MessageType::Ack, ip));
    assert_eq!(s.bindings().address_of(&ClientId(id.to_vec())), Some(ip));
}

#[test]
fn ignored_inputs() {
    let mut s = server(Mode::Server);
    assert!(matches!(
        s.handle(&[1, 2, 3], &local(), at(0)),
        Err(Ignored::Malformed(_))
    ));
    let mut bootp = pkt(MessageType::Discover);
    bootp.options.clear();
    assert_eq!(
        send(&mut s, &bootp, &local(), 0).unwrap_err(),
        Ignored::Bootp
    );
    assert_eq!(
        send(&mut s, &pkt(MessageType::Offer), &local(), 0).unwrap_err(),
        Ignored::MessageType(2)
    );
    let foreign_if = arrival(67, SocketAddrV4::new(ZERO, 68));
    let mut other = foreign_if;
    other.local_addr = Ipv4Addr::new(192, 0, 2, 1);
    assert_eq!(
        send(&mut s, &pkt(MessageType::Discover), &other, 0).unwrap_err(),
        Ignored::WrongSubnet
    );
}

#[test]
fn pool_exhaustion_and_own_address() {
    let mut c = config(Mode::Server);
    c.range = Some([
        Ipv4Addr::new(198, 51, 100, 1),
        Ipv4Addr::new(198, 51, 100, 3),
    ]);
    c.router = None;
    let mut s = Server::new(c, Bindings::default());
    let a = reply(&mut s, &pkt(MessageType::Discover).mac(1), &local(), 0)
        .msg
        .yiaddr;
    let b = reply(&mut s, &pkt(MessageType::Discover).mac(2), &local(), 0)
        .msg
        .yiaddr;
    assert!(a != SERVER && b != SERVER && a != b);
    assert_eq!(
        send(&mut s, &pkt(MessageType::Discover).mac(3), &local(), 0).unwrap_err(),
        Ignored::PoolExhausted
    );
}

#[test]
fn reconfigure_keeps_leases() {
    let mut s = server(Mode::Server);
    let (ip, _) = dora(&mut s, 1, 0);
    let mut c = config(Mode::Server);
    c.boot.bios = Some("other.kpxe".into());
    s.reconfigure(c);
    assert_eq!(
        s.bindings()
            .address_of(&ClientId(vec![1, 0x52, 0x54, 0, 0, 0, 1])),
        Some(ip)
    );
    assert_eq!(
        boot_file_for(&mut s, ipxe_discover().mac(1)).0,
        b"other.kpxe"
    );
}

/// kill -9 between any two decisions, with a torn record in flight: every
/// ACKed lease survives and no address is ever ACKed to two live clients.
#[test]
fn crash_loses_no_ack_and_never_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases");
    let mut c = config(Mode::Server);
    c.range = Some([
        Ipv4Addr::new(198, 51, 100, 100),
        Ipv4Addr::new(198, 51, 100, 139),
    ]);
    let mut acked: HashMap<Ipv4Addr, (u8, u64)> = HashMap::new();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut now = 0;
    for round in 0..12 {
        let (mut store, _) = Store::open_with(&path, unix_secs(at(now)), 8).unwrap();
        let mut s = Server::new(c.clone(), store.bindings().clone());
        for _ in 0..15 {
            now += rand() % 300;
            let mac = (rand() % 60) as u8 + 1;
            let offer = send(&mut s, &pkt(MessageType::Discover).mac(mac), &local(), now);
            let Ok(Decision { reply: Some(o), .. }) = offer else {
                continue;
            };
            let ip = Ipv4Addr::from(<[u8; 4]>::try_from(&o.bytes[16..20]).unwrap());
            let req = pkt(MessageType::Request)
                .mac(mac)
                .server_id(SERVER)
                .requested(ip);
            let d = send(&mut s, &req, &local(), now).unwrap();
            store.append(&d.journal, unix_secs(at(now))).unwrap();
            let out = d.reply.unwrap();
            if out.message_type == MessageType::Ack {
                if let Some((holder, expires)) = acked.get(&ip) {
                    assert!(
                        *holder == mac || *expires <= now,
                        "round {round}: {ip} given twice"
                    );
                }
                acked.insert(ip, (mac, now + 3600));
            }
        }
        drop(store);
        // The crash tears whatever record was being written next.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, &b"1234abcd G 198.51.100.1"[..(round % 20)]).unwrap();
    }
    let (store, _) = Store::open(&path, unix_secs(at(now))).unwrap();
    for (ip, (mac, expires)) in &acked {
        if *expires > now {
            let lease = store.bindings().lease(*ip).expect("ACKed lease survives");
            assert_eq!(lease.client.0.last(), Some(mac));
        }
    }
}
