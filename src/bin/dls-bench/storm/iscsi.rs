//! The storm's iSCSI phase: what a booting kernel's initiator does first —
//! log in, then read the start of its disk, one command at a time.
//!
//! Blocking and queue depth 1 on purpose: a machine coming up reads its
//! boot loader and kernel mostly in sequence, and the storm measures many
//! such machines, not one deep queue (`dls-bench iscsi` does that).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use dls::iscsi::pdu::{
    self, DataIn, Header, LoginRequest, LoginResponse, LogoutRequest, ScsiCommand, BHS_LEN,
};
use dls::iscsi::text;

/// What this initiator accepts in one Data-In.
const MAX_RECV_DATA: u32 = 262_144;

pub struct Session {
    stream: TcpStream,
    cmd_sn: u32,
    exp_stat_sn: u32,
    itt: u32,
    block_len: u32,
    buf: Vec<u8>,
}

impl Session {
    /// Connects and logs in (no authentication, no digests) to the full
    /// feature phase.
    pub fn login(
        portal: SocketAddr,
        initiator: &str,
        target: &str,
        isid_low: u16,
        deadline: Instant,
    ) -> Result<Session, String> {
        let left = deadline
            .checked_duration_since(Instant::now())
            .ok_or("no time left")?;
        let stream = TcpStream::connect_timeout(&portal, left)
            .map_err(|e| format!("connect {portal}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let mut s = Session {
            stream,
            cmd_sn: 1,
            exp_stat_sn: 0,
            itt: 1,
            block_len: 512,
            buf: Vec::new(),
        };
        let [hi, lo] = isid_low.to_be_bytes();
        // ISID type "random" (0x80) with the machine's index in the low bytes.
        let isid = [0x80, 0x12, 0x34, 0x56, hi, lo];
        let mut keys = Vec::new();
        text::encode(&mut keys, "InitiatorName", initiator);
        text::encode(&mut keys, "SessionType", "Normal");
        text::encode(&mut keys, "TargetName", target);
        text::encode(&mut keys, "AuthMethod", "None");
        let mut stage = 0;
        let mut tsih = 0;
        for _ in 0..8 {
            let nsg = if stage == 0 { 1 } else { 3 };
            let req = Header::LoginRequest(LoginRequest {
                transit: true,
                csg: stage,
                nsg,
                isid,
                tsih,
                itt: s.itt,
                cmd_sn: s.cmd_sn,
                exp_stat_sn: s.exp_stat_sn,
                ..Default::default()
            });
            s.send(&req, &keys)?;
            let (resp, _) = s.recv()?;
            let Header::LoginResponse(LoginResponse {
                transit,
                nsg: got_nsg,
                tsih: t,
                stat_sn,
                status_class,
                status_detail,
                ..
            }) = resp
            else {
                return Err(format!(
                    "expected a Login Response, got {:?}",
                    resp.opcode()
                ));
            };
            if status_class != 0 {
                return Err(format!(
                    "login refused: class {status_class} detail {status_detail}"
                ));
            }
            s.exp_stat_sn = stat_sn.wrapping_add(1);
            tsih = t;
            keys.clear();
            if transit && got_nsg == 3 {
                return Ok(s);
            }
            if transit {
                stage = got_nsg;
            }
            if stage == 1 {
                for (k, v) in [
                    ("HeaderDigest", "None"),
                    ("DataDigest", "None"),
                    ("MaxRecvDataSegmentLength", "262144"),
                    ("InitialR2T", "Yes"),
                    ("ImmediateData", "Yes"),
                    ("ErrorRecoveryLevel", "0"),
                ] {
                    text::encode(&mut keys, k, v);
                }
            }
        }
        Err("login did not reach the full feature phase".into())
    }

    /// Reads `bytes` from the start of `lun` in commands of `io_size`.
    pub fn read_start(
        &mut self,
        lun: u64,
        bytes: u64,
        io_size: u32,
        deadline: Instant,
    ) -> Result<(), String> {
        self.read_capacity(lun)?;
        let io_blocks = (io_size / self.block_len).max(1);
        let mut lba = 0u64;
        let end = bytes.div_ceil(u64::from(self.block_len));
        while lba < end {
            if Instant::now() >= deadline {
                return Err(format!("storm time limit at LBA {lba}"));
            }
            let blocks = io_blocks.min((end - lba) as u32);
            let mut cdb = [0u8; 16];
            cdb[0] = 0x88; // READ(16)
            cdb[2..10].copy_from_slice(&lba.to_be_bytes());
            cdb[10..14].copy_from_slice(&blocks.to_be_bytes());
            let got = self.command(lun, cdb, blocks * self.block_len)?;
            if got != u64::from(blocks * self.block_len) {
                return Err(format!(
                    "READ at LBA {lba}: {got} bytes, wanted {}",
                    blocks * self.block_len
                ));
            }
            lba += u64::from(blocks);
        }
        Ok(())
    }

    /// A command, repeated while the target reports a UNIT ATTENTION (a
    /// fresh session's first command gets one for the power-on reset, as a
    /// real initiator expects).
    fn command(&mut self, lun: u64, cdb: [u8; 16], expected_len: u32) -> Result<u64, String> {
        for _ in 0..4 {
            match self.command_once(lun, cdb, expected_len)? {
                Ok(n) => return Ok(n),
                Err(sense) if sense.key == 6 => continue,
                Err(sense) => return Err(format!("CHECK CONDITION {sense}")),
            }
        }
        Err("UNIT ATTENTION four times in a row".into())
    }

    fn read_capacity(&mut self, lun: u64) -> Result<(), String> {
        let mut cdb = [0u8; 16];
        cdb[0] = 0x9e; // SERVICE ACTION IN(16)
        cdb[1] = 0x10; // READ CAPACITY(16)
        cdb[13] = 32;
        self.command(lun, cdb, 32)?;
        let len = u32::from_be_bytes([self.buf[8], self.buf[9], self.buf[10], self.buf[11]]);
        if len == 0 || len > 1 << 20 {
            return Err(format!("READ CAPACITY: block length {len}"));
        }
        self.block_len = len;
        Ok(())
    }

    /// One read command; the Data-In bytes land in `self.buf`. Returns how
    /// many arrived when the status is GOOD, the sense on CHECK CONDITION,
    /// and an error for anything else.
    fn command_once(
        &mut self,
        lun: u64,
        cdb: [u8; 16],
        expected_len: u32,
    ) -> Result<Result<u64, Sense>, String> {
        self.itt = self.itt.wrapping_add(1);
        let itt = self.itt;
        let cmd = Header::ScsiCommand(ScsiCommand {
            final_bit: true,
            read: true,
            attr: 1, // simple
            lun: lun << 48,
            itt,
            expected_len,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            cdb,
            ..Default::default()
        });
        self.cmd_sn = self.cmd_sn.wrapping_add(1);
        self.send(&cmd, &[])?;
        let mut received = 0u64;
        let mut data = std::mem::take(&mut self.buf);
        data.clear();
        let result = loop {
            let (h, segment) = self.recv()?;
            match h {
                Header::DataIn(DataIn {
                    itt: i,
                    has_status,
                    status,
                    stat_sn,
                    ..
                }) if i == itt => {
                    received += segment.len() as u64;
                    data.extend_from_slice(&segment);
                    if has_status {
                        self.exp_stat_sn = stat_sn.wrapping_add(1);
                        break check_status(status, &[]);
                    }
                }
                Header::ScsiResponse(r) if r.itt == itt => {
                    self.exp_stat_sn = r.stat_sn.wrapping_add(1);
                    break if r.response != 0 {
                        Err(format!("target failure (response {})", r.response))
                    } else {
                        check_status(r.status, &segment)
                    };
                }
                Header::NopIn(n) if n.ttt != 0xffff_ffff => {
                    // The target pings: answer so it keeps the connection.
                    let out = Header::NopOut(pdu::NopOut {
                        immediate: true,
                        lun: n.lun,
                        itt: 0xffff_ffff,
                        ttt: n.ttt,
                        cmd_sn: self.cmd_sn,
                        exp_stat_sn: self.exp_stat_sn,
                    });
                    self.send(&out, &[])?;
                }
                Header::NopIn(_) | Header::AsyncMessage(_) => {}
                other => break Err(format!("unexpected {:?}", other.opcode())),
            }
        };
        self.buf = data;
        Ok(match result? {
            None => Ok(received),
            Some(sense) => Err(sense),
        })
    }

    pub fn logout(&mut self) {
        self.itt = self.itt.wrapping_add(1);
        let req = Header::LogoutRequest(LogoutRequest {
            immediate: true,
            reason: 0,
            itt: self.itt,
            cmd_sn: self.cmd_sn,
            exp_stat_sn: self.exp_stat_sn,
            ..Default::default()
        });
        if self.send(&req, &[]).is_ok() {
            let _ = self.recv();
        }
    }

    fn send(&mut self, h: &Header, data: &[u8]) -> Result<(), String> {
        let mut pdu = h.encode(0, data.len() as u32).to_vec();
        pdu.extend_from_slice(data);
        pdu.resize(pdu.len().next_multiple_of(4), 0);
        self.stream
            .write_all(&pdu)
            .map_err(|e| format!("send: {e}"))
    }

    fn recv(&mut self) -> Result<(Header, Vec<u8>), String> {
        let mut bhs = [0u8; BHS_LEN];
        self.read_exact(&mut bhs)?;
        let ahs = pdu::ahs_len(&bhs);
        let len = pdu::data_len(&bhs);
        if len > MAX_RECV_DATA {
            return Err(format!(
                "data segment of {len} bytes, above the {MAX_RECV_DATA} offered"
            ));
        }
        let mut rest = vec![0u8; ahs + (len as usize).next_multiple_of(4)];
        self.read_exact(&mut rest)?;
        rest.drain(..ahs);
        rest.truncate(len as usize);
        Ok((Header::parse(&bhs), rest))
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), String> {
        self.stream.read_exact(buf).map_err(|e| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                "target silent until the time limit".into()
            }
            _ => format!("receive: {e}"),
        })
    }
}

/// Sense key and additional sense code of a CHECK CONDITION.
struct Sense {
    key: u8,
    asc: u8,
    ascq: u8,
}

impl std::fmt::Display for Sense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "key {:#x} asc {:#04x} ascq {:#04x}",
            self.key, self.asc, self.ascq
        )
    }
}

/// GOOD is `None`, CHECK CONDITION the sense from the response's data
/// segment (a 2-byte SenseLength, then fixed or descriptor format sense).
fn check_status(status: u8, segment: &[u8]) -> Result<Option<Sense>, String> {
    match status {
        0 => Ok(None),
        2 => {
            let sense = segment.get(2..).unwrap_or(&[]);
            let at = |i: usize| sense.get(i).copied().unwrap_or(0);
            Ok(Some(match at(0) & 0x7f {
                0x72 | 0x73 => Sense {
                    key: at(1) & 0xf,
                    asc: at(2),
                    ascq: at(3),
                },
                _ => Sense {
                    key: at(2) & 0xf,
                    asc: at(12),
                    ascq: at(13),
                },
            }))
        }
        s => Err(format!("SCSI status {s:#04x}")),
    }
}
