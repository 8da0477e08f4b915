//! The login of one bench session, and its READ CAPACITY(16), done with
//! blocking reads before the session joins the mio loop: a login is a short
//! lock-step exchange and the load, not the login, is what is measured.
//!
//! Stages (RFC 7143 §6.3): SecurityNegotiation with `AuthMethod=None`, then
//! LoginOperationalNegotiation offering the keys below, then full feature
//! phase. Declarative keys the target sends (its MaxRecvDataSegmentLength)
//! and the results of the negotiated ones are kept in [`Negotiated`].
//!
//! Not done: CHAP, digests (always offered as None), login responses split
//! with the C bit (a continued response fails the login).

use std::io::{self, Read, Write};
use std::net::TcpStream;

use dls::iscsi::frame::padded;
use dls::iscsi::pdu::{self, Header, LoginRequest, ScsiCommand, BHS_LEN};
use dls::iscsi::text;

/// What the initiator offers in operational negotiation.
pub struct Offer<'a> {
    pub initiator: &'a str,
    pub target: &'a str,
    pub isid: [u8; 6],
    pub max_recv_data: u32,
    pub max_burst: u32,
    pub first_burst: u32,
}

/// The operational values in force after login (RFC 7143 §13).
#[derive(Debug, Clone, Copy)]
pub struct Negotiated {
    /// The target's declared MaxRecvDataSegmentLength: the most data one
    /// Data-Out or immediate-data segment may carry.
    pub target_max_recv_data: u32,
    pub first_burst: u32,
    pub immediate_data: bool,
    pub initial_r2t: bool,
}

/// Sequence numbers where login left them.
#[derive(Debug, Clone, Copy)]
pub struct Numbers {
    pub cmd_sn: u32,
    pub exp_stat_sn: u32,
    pub max_cmd_sn: u32,
}

/// The largest text response we accept during login.
const MAX_LOGIN_DATA: usize = 64 * 1024;

/// Logs in on `stream` and returns the negotiated values and numbers.
pub fn login(stream: &mut TcpStream, offer: &Offer) -> io::Result<(Negotiated, Numbers)> {
    let mut n = Numbers {
        cmd_sn: 1,
        exp_stat_sn: 0,
        max_cmd_sn: 1,
    };
    let mut keys = Vec::new();
    text::encode(&mut keys, "InitiatorName", offer.initiator);
    text::encode(&mut keys, "SessionType", "Normal");
    text::encode(&mut keys, "TargetName", offer.target);
    text::encode(&mut keys, "AuthMethod", "None");
    let mut tsih = 0;
    let mut stage = (0u8, 1u8);
    let mut answers: Vec<(String, String)> = Vec::new();
    // A target may hold us in a stage for a few exchanges (T=0); bound it.
    for _ in 0..8 {
        let req = LoginRequest {
            transit: true,
            csg: stage.0,
            nsg: stage.1,
            isid: offer.isid,
            tsih,
            itt: 0,
            cmd_sn: n.cmd_sn,
            exp_stat_sn: n.exp_stat_sn,
            ..Default::default()
        };
        send(stream, Header::LoginRequest(req), &keys)?;
        keys.clear();
        let (header, data) = recv(stream)?;
        let Header::LoginResponse(resp) = header else {
            return Err(io::Error::other(format!(
                "expected a Login Response, got {header:?}"
            )));
        };
        if resp.status_class != 0 {
            return Err(io::Error::other(format!(
                "login refused: class {} detail {}",
                resp.status_class, resp.status_detail
            )));
        }
        if resp.cont {
            return Err(io::Error::other(
                "continued login responses are not supported",
            ));
        }
        tsih = resp.tsih;
        n.exp_stat_sn = resp.stat_sn.wrapping_add(1);
        n.cmd_sn = resp.exp_cmd_sn;
        n.max_cmd_sn = resp.max_cmd_sn;
        for (k, v) in text::parse(&data).map_err(|e| io::Error::other(e.to_string()))? {
            answers.push((k.to_string(), v.to_string()));
        }
        match (resp.transit, resp.nsg) {
            (true, 3) => return Ok((negotiated(&answers, offer), n)),
            (true, 1) if stage.0 == 0 => {
                stage = (1, 3);
                operational_keys(&mut keys, offer);
            }
            _ => {}
        }
    }
    Err(io::Error::other(
        "login did not reach full feature phase in 8 exchanges",
    ))
}

fn operational_keys(keys: &mut Vec<u8>, offer: &Offer) {
    text::encode(keys, "HeaderDigest", "None");
    text::encode(keys, "DataDigest", "None");
    text::encode(
        keys,
        "MaxRecvDataSegmentLength",
        &offer.max_recv_data.to_string(),
    );
    text::encode(keys, "MaxBurstLength", &offer.max_burst.to_string());
    text::encode(keys, "FirstBurstLength", &offer.first_burst.to_string());
    text::encode(keys, "ImmediateData", "Yes");
    text::encode(keys, "InitialR2T", "No");
    text::encode(keys, "MaxOutstandingR2T", "1");
    text::encode(keys, "MaxConnections", "1");
    text::encode(keys, "ErrorRecoveryLevel", "0");
    text::encode(keys, "DataPDUInOrder", "Yes");
    text::encode(keys, "DataSequenceInOrder", "Yes");
    text::encode(keys, "DefaultTime2Wait", "0");
    text::encode(keys, "DefaultTime2Retain", "0");
}

/// Results per RFC 7143 §13: a key the target did not answer keeps its
/// default (the target's MaxRecvDataSegmentLength defaults to 8192).
fn negotiated(answers: &[(String, String)], offer: &Offer) -> Negotiated {
    let value = |key: &str| answers.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v);
    let number = |key: &str, default: u32| {
        value(key)
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(default)
    };
    let yes = |key: &str, default: bool| value(key).map_or(default, |v| v == "Yes");
    let max_burst = number("MaxBurstLength", 262_144).min(offer.max_burst);
    Negotiated {
        target_max_recv_data: number("MaxRecvDataSegmentLength", 8192).max(512),
        first_burst: number("FirstBurstLength", 65_536)
            .min(offer.first_burst)
            .min(max_burst),
        immediate_data: yes("ImmediateData", true),
        initial_r2t: yes("InitialR2T", true),
    }
}

/// READ CAPACITY(16), retried like a real initiator does: the first
/// command of a new I_T nexus gets CHECK CONDITION with a UNIT ATTENTION
/// (power on or reset, SAM-5 §5.14) on many targets.
pub fn read_capacity(stream: &mut TcpStream, lun: u64, n: &mut Numbers) -> io::Result<(u64, u32)> {
    let mut last = None;
    for _ in 0..3 {
        match read_capacity_once(stream, lun, n) {
            Ok(found) => return Ok(found),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("three attempts made"))
}

/// READ CAPACITY(16) (SBC-3 §5.16): returns (blocks, block length).
fn read_capacity_once(stream: &mut TcpStream, lun: u64, n: &mut Numbers) -> io::Result<(u64, u32)> {
    let mut cdb = [0u8; 16];
    cdb[0] = 0x9e;
    cdb[1] = 0x10;
    cdb[13] = 32;
    let cmd = ScsiCommand {
        final_bit: true,
        read: true,
        attr: 1,
        lun: encode_lun(lun),
        itt: 1,
        expected_len: 32,
        cmd_sn: n.cmd_sn,
        exp_stat_sn: n.exp_stat_sn,
        cdb,
        ..Default::default()
    };
    send(stream, Header::ScsiCommand(cmd), &[])?;
    n.cmd_sn = n.cmd_sn.wrapping_add(1);
    let mut got = Vec::new();
    // Data-In (maybe with status), then a SCSI Response unless S was set.
    for _ in 0..4 {
        let (header, data) = recv(stream)?;
        let status = match header {
            Header::DataIn(d) => {
                got.extend_from_slice(&data);
                n.max_cmd_sn = d.max_cmd_sn;
                if !d.has_status {
                    continue;
                }
                n.exp_stat_sn = d.stat_sn.wrapping_add(1);
                d.status
            }
            Header::ScsiResponse(r) => {
                n.exp_stat_sn = r.stat_sn.wrapping_add(1);
                n.max_cmd_sn = r.max_cmd_sn;
                if r.response != 0 {
                    return Err(io::Error::other("READ CAPACITY(16): target failure"));
                }
                r.status
            }
            other => {
                return Err(io::Error::other(format!(
                    "READ CAPACITY(16): got {other:?}"
                )));
            }
        };
        if status != 0 || got.len() < 12 {
            return Err(io::Error::other(format!(
                "READ CAPACITY(16) on LUN {lun}: status {status:#x}, {} bytes",
                got.len()
            )));
        }
        let last = u64::from_be_bytes(got[0..8].try_into().expect("8 bytes checked above"));
        let block = u32::from_be_bytes(got[8..12].try_into().expect("4 bytes checked above"));
        return Ok((last + 1, block));
    }
    Err(io::Error::other("READ CAPACITY(16): no status"))
}

/// The 8-byte LUN field for LUNs below 256 (SAM-5 peripheral addressing).
pub fn encode_lun(lun: u64) -> u64 {
    (lun & 0xff) << 48
}

/// Writes one PDU (no digests), blocking.
pub fn send(stream: &mut TcpStream, header: Header, data: &[u8]) -> io::Result<()> {
    let mut out = header.encode(0, data.len() as u32).to_vec();
    out.extend_from_slice(data);
    out.resize(BHS_LEN + padded(data.len()), 0);
    stream.write_all(&out)
}

/// Reads one PDU (no digests), blocking; data segments above 64 KiB are
/// refused, so whoever logs in with this offers at most that.
pub fn recv(stream: &mut TcpStream) -> io::Result<(Header, Vec<u8>)> {
    let mut bhs = [0u8; BHS_LEN];
    stream.read_exact(&mut bhs)?;
    let len = pdu::data_len(&bhs) as usize;
    if len > MAX_LOGIN_DATA {
        return Err(io::Error::other(format!(
            "{len}-byte data segment during login"
        )));
    }
    let mut rest = vec![0u8; pdu::ahs_len(&bhs) + padded(len)];
    stream.read_exact(&mut rest)?;
    let data = rest[pdu::ahs_len(&bhs)..][..len].to_vec();
    Ok((Header::parse(&bhs), data))
}
