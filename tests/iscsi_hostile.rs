//! Hostile input against the iSCSI target from a raw TCP client that builds
//! PDUs by hand from RFC 7143 §11 (48-byte BHS at fixed offsets), so a bug
//! shared with the server's own codec cannot hide: truncated, oversized and
//! garbage PDUs, commands before login, unknown, invalid, re-declared and
//! out-of-phase login keys (BC-28), SCSI in a discovery session, data
//! segments above the declared limit, out-of-window CmdSN (BC-23) and a
//! connection dropped mid-write.
//!
//! After each, a normal `iscsi-inq` must still work, a session logged in
//! the whole time must not notice, and dlsd must hold no more fds than
//! before.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::{
    iscsi_target, iscsi_url, open_fds, pattern, require_libiscsi, tool, IscsiSetup,
    ISCSI_DISK0 as DISK0,
};

// Hostile input from a raw client (RFC 7143 §11)

const OP_NOP_OUT: u8 = 0x00;
const OP_SCSI_CMD: u8 = 0x01;
const OP_LOGIN: u8 = 0x03;
const OP_TEXT: u8 = 0x04;
const OP_LOGOUT: u8 = 0x06;
const OP_SCSI_RESP: u8 = 0x21;
const OP_LOGIN_RESP: u8 = 0x23;
const OP_TEXT_RESP: u8 = 0x24;
const OP_LOGOUT_RESP: u8 = 0x26;
const OP_R2T: u8 = 0x31;
const OP_REJECT: u8 = 0x3f;
const IMMEDIATE: u8 = 0x40;
const ISID: [u8; 6] = [0x80, 0x00, 0x12, 0x34, 0x56, 0x78];
const RAW_INITIATOR: &str = "iqn.2026-01.example:raw";

/// One PDU as received.
struct Rx {
    bhs: [u8; 48],
    data: Vec<u8>,
}

impl Rx {
    fn opcode(&self) -> u8 {
        self.bhs[0] & 0x3f
    }
    fn u32_at(&self, at: usize) -> u32 {
        u32::from_be_bytes(self.bhs[at..at + 4].try_into().unwrap())
    }
    /// Login Response status class and detail (§11.13.5).
    fn status(&self) -> (u8, u8) {
        (self.bhs[36], self.bhs[37])
    }
    fn keys(&self) -> Vec<(String, String)> {
        String::from_utf8_lossy(&self.data)
            .split('\0')
            .filter(|s| !s.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }
    fn key(&self, name: &str) -> Option<String> {
        self.keys()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

#[derive(PartialEq, Eq, Debug)]
enum Ended {
    Closed,
    Silent,
}

/// A hand-made initiator: BHS bytes at fixed offsets, no digests.
struct Raw {
    s: TcpStream,
    itt: u32,
    cmd_sn: u32,
    exp_stat_sn: u32,
}

impl Raw {
    fn connect(portal: &str) -> Raw {
        let s = TcpStream::connect(portal).expect("connect to dlsd");
        s.set_nodelay(true).unwrap();
        Raw {
            s,
            itt: 1,
            cmd_sn: 1,
            exp_stat_sn: 0,
        }
    }

    /// Sends a BHS with DataSegmentLength set from `data`, then the data
    /// padded to 4 bytes.
    fn send(&mut self, mut bhs: [u8; 48], data: &[u8]) {
        let len = (data.len() as u32).to_be_bytes();
        bhs[5..8].copy_from_slice(&len[1..]);
        let mut buf = bhs.to_vec();
        buf.extend_from_slice(data);
        buf.resize(buf.len() + (4 - data.len() % 4) % 4, 0);
        self.s.write_all(&buf).expect("send PDU");
    }

    /// The next PDU within `limit`, or how the stream ended.
    fn recv(&mut self, limit: Duration) -> Result<Rx, Ended> {
        let deadline = Instant::now() + limit;
        let mut bhs = [0u8; 48];
        self.read_exact(&mut bhs, deadline)?;
        let len = u32::from_be_bytes([0, bhs[5], bhs[6], bhs[7]]) as usize;
        let mut data = vec![0u8; len.div_ceil(4) * 4];
        self.read_exact(&mut data, deadline)?;
        data.truncate(len);
        if matches!(bhs[0] & 0x3f, 0x21 | 0x23 | 0x24 | 0x26 | 0x3f) {
            self.exp_stat_sn = u32::from_be_bytes(bhs[24..28].try_into().unwrap()).wrapping_add(1);
        }
        Ok(Rx { bhs, data })
    }

    fn read_exact(&mut self, buf: &mut [u8], deadline: Instant) -> Result<(), Ended> {
        let mut got = 0;
        while got < buf.len() {
            let left = deadline
                .checked_duration_since(Instant::now())
                .ok_or(Ended::Silent)?;
            self.s
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.s.read(&mut buf[got..]) {
                Ok(0) => return Err(Ended::Closed),
                Ok(n) => got += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(Ended::Closed),
            }
        }
        Ok(())
    }

    /// True once the server has closed the connection (within `limit`),
    /// whatever it sent before.
    fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Ok(_) => continue,
                Err(Ended::Closed) => return true,
                Err(Ended::Silent) => return false,
            }
        }
    }

    fn next_itt(&mut self) -> u32 {
        self.itt += 1;
        self.itt
    }

    /// A Login Request (§11.12) with `keys` as its text.
    fn login(
        &mut self,
        csg: u8,
        nsg: u8,
        transit: bool,
        keys: &[(&str, &str)],
    ) -> ([u8; 48], Vec<u8>) {
        let mut bhs = [0u8; 48];
        bhs[0] = IMMEDIATE | OP_LOGIN;
        bhs[1] = (u8::from(transit) << 7) | (csg << 2) | nsg;
        bhs[8..14].copy_from_slice(&ISID);
        bhs[16..20].copy_from_slice(&self.itt.to_be_bytes());
        bhs[24..28].copy_from_slice(&self.cmd_sn.to_be_bytes());
        bhs[28..32].copy_from_slice(&self.exp_stat_sn.to_be_bytes());
        let mut data = Vec::new();
        for (k, v) in keys {
            data.extend_from_slice(format!("{k}={v}\0").as_bytes());
        }
        (bhs, data)
    }

    fn send_login(&mut self, csg: u8, nsg: u8, transit: bool, keys: &[(&str, &str)]) -> Rx {
        let (bhs, data) = self.login(csg, nsg, transit, keys);
        self.send(bhs, &data);
        let rx = self.recv(Duration::from_secs(5)).expect("Login Response");
        assert_eq!(rx.opcode(), OP_LOGIN_RESP);
        rx
    }

    /// Logs in straight from the operational stage to full feature phase.
    fn login_normal(&mut self, target: &str) -> Rx {
        let keys = [
            ("InitiatorName", RAW_INITIATOR),
            ("TargetName", target),
            ("SessionType", "Normal"),
            ("HeaderDigest", "None"),
            ("DataDigest", "None"),
            ("MaxRecvDataSegmentLength", "65536"),
        ];
        let rx = self.send_login(1, 3, true, &keys);
        assert_eq!(rx.status(), (0, 0), "login refused: {:?}", rx.keys());
        assert_eq!(rx.bhs[1] & 0x83, 0x83, "T=1, NSG=3 expected");
        rx
    }

    /// A SCSI Command (§11.3) for LUN 0, simple task attribute.
    fn scsi(&mut self, flags: u8, edtl: u32, cdb: &[u8]) -> [u8; 48] {
        let mut bhs = [0u8; 48];
        bhs[0] = OP_SCSI_CMD;
        bhs[1] = 0x80 | flags | 0x01;
        let itt = self.next_itt();
        bhs[16..20].copy_from_slice(&itt.to_be_bytes());
        bhs[20..24].copy_from_slice(&edtl.to_be_bytes());
        bhs[24..28].copy_from_slice(&self.cmd_sn.to_be_bytes());
        bhs[28..32].copy_from_slice(&self.exp_stat_sn.to_be_bytes());
        bhs[32..32 + cdb.len()].copy_from_slice(cdb);
        bhs
    }

    /// Sends TEST UNIT READY with the next CmdSN; returns the status and
    /// the sense key (0 without sense data).
    fn tur(&mut self) -> (u8, u8) {
        let bhs = self.scsi(0, 0, &[0; 6]);
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        self.send(bhs, &[]);
        let rx = self.recv(Duration::from_secs(5)).expect("SCSI Response");
        assert_eq!(rx.opcode(), OP_SCSI_RESP);
        assert_eq!(rx.bhs[2], 0, "iSCSI response: command completed");
        // Sense data: SenseLength (2 bytes), then fixed (70h/71h) or
        // descriptor (72h/73h) format (SPC-4 §4.5).
        let key = match rx.data.get(2).map(|b| b & 0x7f) {
            Some(0x70 | 0x71) => rx.data.get(4).map_or(0, |b| b & 0x0f),
            Some(0x72 | 0x73) => rx.data.get(3).map_or(0, |b| b & 0x0f),
            _ => 0,
        };
        (rx.bhs[3], key)
    }

    /// TEST UNIT READY is GOOD, after at most one UNIT ATTENTION (the
    /// power-on condition every new nexus sees first).
    fn tur_good(&mut self) {
        let mut got = self.tur();
        if got == (0x02, 0x06) {
            got = self.tur();
        }
        assert_eq!(got, (0, 0), "TUR: (status, sense key)");
    }

    /// A Text Request (§11.10), final, no continuation.
    fn text(&mut self) -> [u8; 48] {
        let mut bhs = [0u8; 48];
        bhs[0] = OP_TEXT;
        bhs[1] = 0x80;
        let itt = self.next_itt();
        bhs[16..20].copy_from_slice(&itt.to_be_bytes());
        bhs[20..24].copy_from_slice(&u32::MAX.to_be_bytes());
        bhs[24..28].copy_from_slice(&self.cmd_sn.to_be_bytes());
        bhs[28..32].copy_from_slice(&self.exp_stat_sn.to_be_bytes());
        bhs
    }

    /// Logout (close the session) and its response.
    fn logout(&mut self) {
        let mut bhs = [0u8; 48];
        bhs[0] = IMMEDIATE | OP_LOGOUT;
        bhs[1] = 0x80;
        let itt = self.next_itt();
        bhs[16..20].copy_from_slice(&itt.to_be_bytes());
        bhs[24..28].copy_from_slice(&self.cmd_sn.to_be_bytes());
        bhs[28..32].copy_from_slice(&self.exp_stat_sn.to_be_bytes());
        self.send(bhs, &[]);
        let rx = self.recv(Duration::from_secs(5)).expect("Logout Response");
        assert_eq!(rx.opcode(), OP_LOGOUT_RESP);
        assert_eq!(rx.bhs[2], 0, "logout response");
        assert!(self.closed_within(Duration::from_secs(5)));
    }
}

/// `iscsi-inq` against the target must still work.
fn inquiry_works(portal: &str, after: &str) {
    let (ok, out) = tool("iscsi-inq", &[&iscsi_url(portal, DISK0, 0)]);
    assert!(
        ok && out.contains("DIRECT_ACCESS"),
        "iscsi-inq after {after}:\n{out}"
    );
}

#[test]
fn hostile_input_is_refused_and_leaves_the_server_serving_without_leaks() {
    require_libiscsi();
    let setup = IscsiSetup::fresh();
    let lun = setup.sparse("disk0.img", 8 << 20);
    let settings = "login_timeout = \"2s\"\nnop_interval = \"10m\"\n";
    let (server, portal) = setup.start(settings, &iscsi_target(DISK0, &[(&lun, false)], ""));
    let pid = server.pid();
    inquiry_works(&portal, "start");
    std::thread::sleep(Duration::from_millis(300));
    let fds_before = open_fds(pid);

    // A session that stays logged in through everything below.
    let mut bystander = Raw::connect(&portal);
    bystander.login_normal(DISK0);
    bystander.tur_good();

    // Truncated PDU, then close.
    let mut raw = Raw::connect(&portal);
    let (bhs, data) = raw.login(1, 3, true, &[("InitiatorName", RAW_INITIATOR)]);
    raw.s.write_all(&bhs[..30]).unwrap();
    drop(raw);
    let mut raw = Raw::connect(&portal);
    let mut pdu = bhs.to_vec();
    pdu[5..8].copy_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
    pdu.extend_from_slice(&data[..data.len() / 2]);
    raw.s.write_all(&pdu).unwrap();
    raw.s.shutdown(Shutdown::Write).unwrap();
    assert!(
        raw.closed_within(Duration::from_secs(5)),
        "half a login PDU"
    );
    inquiry_works(&portal, "truncated PDUs");

    // A login PDU claiming 16 MiB of text: closed at once, nothing read.
    let mut raw = Raw::connect(&portal);
    let (mut bhs, _) = raw.login(1, 3, true, &[]);
    bhs[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    raw.s.write_all(&bhs).unwrap();
    assert!(
        raw.closed_within(Duration::from_secs(3)),
        "oversized login data segment"
    );
    inquiry_works(&portal, "an oversized login PDU");

    // Garbage: closed (at the latest by the 2 s login timeout).
    let mut raw = Raw::connect(&portal);
    let _ = raw.s.write_all(&pattern(4096, 99));
    assert!(raw.closed_within(Duration::from_secs(5)), "garbage bytes");
    let mut raw = Raw::connect(&portal);
    let _ = raw.s.write_all(&[0x03; 20]);
    assert!(
        raw.closed_within(Duration::from_secs(5)),
        "a partial BHS must end at the login timeout"
    );
    inquiry_works(&portal, "garbage");

    // A SCSI Command before login: Login Response 0x020b, then close.
    let mut raw = Raw::connect(&portal);
    let bhs = raw.scsi(0, 0, &[0; 6]);
    raw.send(bhs, &[]);
    let rx = raw.recv(Duration::from_secs(5)).expect("an answer");
    assert_eq!(rx.opcode(), OP_LOGIN_RESP);
    assert_eq!(rx.status(), (2, 0x0b), "invalid during login");
    assert!(raw.closed_within(Duration::from_secs(5)));
    inquiry_works(&portal, "a command before login");

    let rounds: &[(&str, Round)] = &[
        ("BC-28a", bc_28_a_unknown_keys_not_understood),
        ("BC-28b", bc_28_b_redeclared_key_is_an_initiator_error),
        ("BC-28c", bc_28_c_invalid_value_is_answered_reject),
        ("BC-28d", bc_28_d_discovery_session_refuses_scsi_commands),
        (
            "oversized data",
            data_segment_above_mrdsl_is_rejected_and_closed,
        ),
        ("BC-23", out_of_window_cmd_sn_is_ignored),
        ("a drop mid-write", connection_closed_mid_write),
    ];
    for &(name, round) in rounds {
        round(&portal);
        inquiry_works(&portal, name);
    }

    nop_flood_leaves_memory_flat(&portal, pid);
    inquiry_works(&portal, "a NOP-Out flood");

    // The bystander never noticed.
    bystander.tur_good();
    bystander.logout();

    // Every connection's fd is gone again.
    let settle = Instant::now() + Duration::from_secs(5);
    let mut fds_after = open_fds(pid);
    while fds_after != fds_before && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(100));
        fds_after = open_fds(pid);
    }
    assert_eq!(
        fds_after,
        fds_before,
        "dlsd holds {fds_after} fds after the hostile round, {fds_before} before:\n{}",
        server.log()
    );
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// NOP-Outs with the reserved ITT get no answer, so no output limit holds
/// the sender back: only reading no faster than PDUs are handled does. The
/// server's memory must stay flat while the sender meets TCP's window.
fn nop_flood_leaves_memory_flat(portal: &str, pid: i32) {
    let before = rss_kib(pid);
    let mut raw = Raw::connect(portal);
    raw.login_normal(DISK0);
    raw.s
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut nop = [0u8; 48];
    nop[0] = 0x40; // NOP-Out, immediate
    nop[1] = 0x80; // F
    nop[16..24].copy_from_slice(&[0xff; 8]); // ITT and TTT reserved
    nop[24..28].copy_from_slice(&raw.cmd_sn.to_be_bytes());
    nop[28..32].copy_from_slice(&raw.exp_stat_sn.to_be_bytes());
    let burst: Vec<u8> = nop.iter().copied().cycle().take(48 * 4096).collect();
    let (until, mut sent) = (Instant::now() + Duration::from_secs(3), 0usize);
    while Instant::now() < until {
        if let Ok(n) = raw.s.write(&burst) {
            sent += n;
        }
    }
    let after = rss_kib(pid);
    assert!(
        after < before + 48 * 1024,
        "dlsd grew from {before} KiB to {after} KiB while {sent} bytes of NOP-Outs came in"
    );
}

/// One hostile exchange on its own connection, given the portal.
type Round = fn(&str);

/// BC-28a: unknown and private keys are answered NotUnderstood, the rest
/// of the login goes on.
fn bc_28_a_unknown_keys_not_understood(portal: &str) {
    let mut raw = Raw::connect(portal);
    let keys = [
        ("InitiatorName", "iqn.2026-01.example:init"),
        ("TargetName", DISK0),
        ("SessionType", "Normal"),
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("MaxRecvDataSegmentLength", "65536"),
        ("FooBar", "1"),
        ("X-com.example.Tweak", "on"),
        ("ErrorRecoveryLevel", "0"),
    ];
    let rx = raw.send_login(1, 3, true, &keys);
    assert_eq!(rx.status(), (0, 0), "{:?}", rx.keys());
    assert_eq!(rx.bhs[1] & 0x83, 0x83, "T=1, NSG=3");
    assert_eq!(rx.key("FooBar").as_deref(), Some("NotUnderstood"));
    assert_eq!(
        rx.key("X-com.example.Tweak").as_deref(),
        Some("NotUnderstood")
    );
    assert_eq!(rx.key("TargetPortalGroupTag").as_deref(), Some("1"));
    assert!(
        rx.key("MaxRecvDataSegmentLength").is_some(),
        "{:?}",
        rx.keys()
    );
    raw.tur_good();
    raw.logout();
}

/// BC-28b: a key declared again in a later login PDU: 0x0200, then close.
fn bc_28_b_redeclared_key_is_an_initiator_error(portal: &str) {
    let mut raw = Raw::connect(portal);
    let first = [
        ("InitiatorName", "iqn.2026-01.example:init"),
        ("TargetName", DISK0),
        ("SessionType", "Normal"),
        ("MaxRecvDataSegmentLength", "65536"),
    ];
    let rx = raw.send_login(1, 3, false, &first);
    assert_eq!(rx.status(), (0, 0), "{:?}", rx.keys());
    let rx = raw.send_login(1, 3, true, &[("MaxRecvDataSegmentLength", "65536")]);
    assert_eq!(rx.status(), (2, 0x00), "re-declared key");
    assert!(raw.closed_within(Duration::from_secs(5)));

    // The same key twice in one PDU.
    let mut raw = Raw::connect(portal);
    let twice = [
        ("InitiatorName", "iqn.2026-01.example:init"),
        ("TargetName", DISK0),
        ("HeaderDigest", "None"),
        ("HeaderDigest", "None"),
    ];
    let rx = raw.send_login(1, 3, true, &twice);
    assert_eq!(rx.status(), (2, 0x00), "key repeated in one PDU");
    assert!(raw.closed_within(Duration::from_secs(5)));

    // A security key out of phase: AuthMethod in the operational stage.
    let mut raw = Raw::connect(portal);
    let late = [
        ("InitiatorName", "iqn.2026-01.example:init"),
        ("TargetName", DISK0),
        ("AuthMethod", "None"),
    ];
    let rx = raw.send_login(1, 3, true, &late);
    assert_eq!(rx.status(), (2, 0x00), "AuthMethod outside security");
    assert!(raw.closed_within(Duration::from_secs(5)));
}

/// BC-28c: a value outside the key's domain is answered Reject and the
/// login goes on with the default.
fn bc_28_c_invalid_value_is_answered_reject(portal: &str) {
    let mut raw = Raw::connect(portal);
    let keys = [
        ("InitiatorName", "iqn.2026-01.example:init"),
        ("TargetName", DISK0),
        ("SessionType", "Normal"),
        ("ImmediateData", "Maybe"),
    ];
    let rx = raw.send_login(1, 3, true, &keys);
    assert_eq!(rx.status(), (0, 0), "{:?}", rx.keys());
    assert_eq!(rx.key("ImmediateData").as_deref(), Some("Reject"));
    raw.tur_good();
    raw.logout();
}

/// BC-28d: a discovery session answers a SCSI Command with a Reject and
/// goes on with SendTargets.
fn bc_28_d_discovery_session_refuses_scsi_commands(portal: &str) {
    let mut raw = Raw::connect(portal);
    let keys = [
        ("InitiatorName", RAW_INITIATOR),
        ("SessionType", "Discovery"),
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
    ];
    let rx = raw.send_login(1, 3, true, &keys);
    assert_eq!(rx.status(), (0, 0), "{:?}", rx.keys());

    let bhs = raw.scsi(0, 0, &[0; 6]);
    raw.cmd_sn = raw.cmd_sn.wrapping_add(1);
    raw.send(bhs, &[]);
    let rx = raw.recv(Duration::from_secs(5)).expect("Reject");
    assert_eq!(rx.opcode(), OP_REJECT);
    assert_eq!(rx.bhs[2], 0x05, "reason: command not supported");
    assert_eq!(rx.data.get(..48), Some(&bhs[..]), "the rejected BHS");

    let bhs = raw.text();
    raw.cmd_sn = raw.cmd_sn.wrapping_add(1);
    raw.send(bhs, b"SendTargets=All\0");
    let rx = raw.recv(Duration::from_secs(5)).expect("Text Response");
    assert_eq!(rx.opcode(), OP_TEXT_RESP);
    assert_eq!(rx.key("TargetName").as_deref(), Some(DISK0));
    assert_eq!(
        rx.key("TargetAddress"),
        Some(format!("{portal},1")),
        "{:?}",
        rx.keys()
    );
    raw.logout();
}

/// A PDU whose data segment exceeds the MaxRecvDataSegmentLength the
/// target declared: Reject (protocol error), then close (§13.12, ERL 0).
fn data_segment_above_mrdsl_is_rejected_and_closed(portal: &str) {
    let mut raw = Raw::connect(portal);
    let rx = raw.login_normal(DISK0);
    let mrdsl: u32 = rx
        .key("MaxRecvDataSegmentLength")
        .and_then(|v| v.parse().ok())
        .expect("the target declares MaxRecvDataSegmentLength");
    let mut bhs = [0u8; 48];
    bhs[0] = IMMEDIATE | OP_NOP_OUT;
    bhs[1] = 0x80;
    bhs[16..20].copy_from_slice(&7u32.to_be_bytes());
    bhs[20..24].copy_from_slice(&u32::MAX.to_be_bytes());
    bhs[24..28].copy_from_slice(&raw.cmd_sn.to_be_bytes());
    let big = vec![0x11u8; mrdsl as usize + 4];
    // The target may close before all of it is sent.
    let len = (big.len() as u32).to_be_bytes();
    bhs[5..8].copy_from_slice(&len[1..]);
    let _ = raw.s.write_all(&bhs);
    let _ = raw.s.write_all(&big);
    let rx = raw.recv(Duration::from_secs(5));
    if let Ok(rx) = &rx {
        assert_eq!(rx.opcode(), OP_REJECT, "only a Reject may come back");
        assert_eq!(rx.bhs[2], 0x04, "protocol error");
    }
    assert!(
        raw.closed_within(Duration::from_secs(5)),
        "connection must close after an oversized data segment"
    );
}

/// RFC 7143 §4.2.2.1 (BC-23): a CmdSN above MaxCmdSN is ignored silently;
/// the connection stays up and the next in-window command runs.
fn out_of_window_cmd_sn_is_ignored(portal: &str) {
    let mut raw = Raw::connect(portal);
    let rx = raw.login_normal(DISK0);
    let (exp, max) = (rx.u32_at(28), rx.u32_at(32));
    assert_eq!(exp, raw.cmd_sn, "ExpCmdSN after login");
    let mut bhs = raw.scsi(0, 0, &[0; 6]);
    bhs[24..28].copy_from_slice(&max.wrapping_add(1).to_be_bytes());
    raw.send(bhs, &[]);
    assert!(
        matches!(raw.recv(Duration::from_secs(1)), Err(Ended::Silent)),
        "an out-of-window command must get no answer"
    );
    raw.tur_good();
    raw.logout();
}

/// A WRITE waiting for its Data-Out when the initiator vanishes.
fn connection_closed_mid_write(portal: &str) {
    let mut raw = Raw::connect(portal);
    raw.login_normal(DISK0);
    raw.tur_good();
    // WRITE(10), LBA 0, 64 blocks, no immediate data.
    let cdb = [0x2a, 0, 0, 0, 0, 0, 0, 0, 64, 0];
    let bhs = raw.scsi(0x20, 64 * 512, &cdb);
    raw.cmd_sn = raw.cmd_sn.wrapping_add(1);
    raw.send(bhs, &[]);
    let rx = raw.recv(Duration::from_secs(5)).expect("R2T");
    assert_eq!(rx.opcode(), OP_R2T);
    drop(raw);
}
