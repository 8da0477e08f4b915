//! The storm's iSCSI phase: what a booting kernel's initiator does first —
//! log in, then read the start of its disk, one command at a time.
//!
//! Blocking and queue depth 1 on purpose: a machine coming up reads its
//! boot loader and kernel mostly in sequence, and the storm measures many
//! such machines, not one deep queue (`dls-bench iscsi` does that).

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use dls::iscsi::pdu::{self, DataIn, Header, LogoutRequest, ScsiCommand};

use crate::iscsi::login::{self, Numbers, Offer};

/// What this initiator accepts in one Data-In: the most `login::recv` takes.
const MAX_RECV_DATA: u32 = 65_536;

pub struct Session {
    stream: TcpStream,
    n: Numbers,
    itt: u32,
    block_len: u32,
    buf: Vec<u8>,
}

impl Session {
    /// Connects and logs in (no authentication, no digests) to the full
    /// feature phase, as `dls-bench iscsi` does.
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
        let mut stream = TcpStream::connect_timeout(&portal, left)
            .map_err(|e| format!("connect {portal}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| e.to_string())?;
        let [hi, lo] = isid_low.to_be_bytes();
        // ISID type "random" (0x80) with the machine's index in the low bytes.
        let offer = Offer {
            initiator,
            target,
            isid: [0x80, 0x12, 0x34, 0x56, hi, lo],
            max_recv_data: MAX_RECV_DATA,
            max_burst: 262_144,
            first_burst: 65_536,
        };
        let (_, n) = login::login(&mut stream, &offer).map_err(|e| format!("login: {e}"))?;
        Ok(Session {
            stream,
            n,
            itt: 0x1000,
            block_len: 512,
            buf: Vec::new(),
        })
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
        let (_, len) =
            login::read_capacity(&mut self.stream, lun, &mut self.n).map_err(|e| e.to_string())?;
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
            lun: login::encode_lun(lun),
            itt,
            expected_len,
            cmd_sn: self.n.cmd_sn,
            exp_stat_sn: self.n.exp_stat_sn,
            cdb,
            ..Default::default()
        });
        self.n.cmd_sn = self.n.cmd_sn.wrapping_add(1);
        self.send(cmd, &[])?;
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
                        self.n.exp_stat_sn = stat_sn.wrapping_add(1);
                        break check_status(status, &[]);
                    }
                }
                Header::ScsiResponse(r) if r.itt == itt => {
                    self.n.exp_stat_sn = r.stat_sn.wrapping_add(1);
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
                        cmd_sn: self.n.cmd_sn,
                        exp_stat_sn: self.n.exp_stat_sn,
                    });
                    self.send(out, &[])?;
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
            cmd_sn: self.n.cmd_sn,
            exp_stat_sn: self.n.exp_stat_sn,
            ..Default::default()
        });
        if self.send(req, &[]).is_ok() {
            let _ = self.recv();
        }
    }

    fn send(&mut self, h: Header, data: &[u8]) -> Result<(), String> {
        login::send(&mut self.stream, h, data).map_err(|e| format!("send: {e}"))
    }

    fn recv(&mut self) -> Result<(Header, Vec<u8>), String> {
        login::recv(&mut self.stream).map_err(|e| match e.kind() {
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
