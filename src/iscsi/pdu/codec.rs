//! Decoding and encoding of the Basic Header Segment: every field at its
//! offset of RFC 7143 §11. Every offset is a constant below [`BHS_LEN`] on
//! a fixed-size array, so no accessor here can go out of bounds.

use super::*;

fn u16_at(b: &[u8; BHS_LEN], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8; BHS_LEN], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8; BHS_LEN], at: usize) -> u64 {
    (u64::from(u32_at(b, at)) << 32) | u64::from(u32_at(b, at + 4))
}

fn put16(b: &mut [u8; BHS_LEN], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn put32(b: &mut [u8; BHS_LEN], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64(b: &mut [u8; BHS_LEN], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

fn bit(byte: u8, mask: u8) -> bool {
    byte & mask != 0
}

fn flag(on: bool, mask: u8) -> u8 {
    if on {
        mask
    } else {
        0
    }
}

/// TotalAHSLength in bytes (the field counts 4-byte words).
pub fn ahs_len(b: &[u8; BHS_LEN]) -> usize {
    usize::from(b[4]) * 4
}

/// DataSegmentLength, without padding or digest.
pub fn data_len(b: &[u8; BHS_LEN]) -> u32 {
    u32::from_be_bytes([0, b[5], b[6], b[7]])
}

/// The Initiator Task Tag, at the same place in every PDU.
pub fn itt(b: &[u8; BHS_LEN]) -> u32 {
    u32_at(b, 16)
}

/// The I (immediate) bit of byte 0.
pub fn is_immediate(b: &[u8; BHS_LEN]) -> bool {
    bit(b[0], 0x40)
}

fn login_stages(byte: u8) -> (bool, bool, u8, u8) {
    (bit(byte, 0x80), bit(byte, 0x40), (byte >> 2) & 3, byte & 3)
}

impl Header {
    /// Decodes a Basic Header Segment; cannot fail.
    pub fn parse(b: &[u8; BHS_LEN]) -> Header {
        let imm = is_immediate(b);
        let f = bit(b[1], 0x80);
        match Opcode::from_u8(b[0]) {
            Opcode::NopOut => Header::NopOut(NopOut {
                immediate: imm,
                lun: u64_at(b, 8),
                itt: itt(b),
                ttt: u32_at(b, 20),
                cmd_sn: u32_at(b, 24),
                exp_stat_sn: u32_at(b, 28),
            }),
            Opcode::ScsiCommand => {
                let mut cdb = [0u8; 16];
                cdb.copy_from_slice(&b[32..48]);
                Header::ScsiCommand(ScsiCommand {
                    immediate: imm,
                    final_bit: f,
                    read: bit(b[1], 0x40),
                    write: bit(b[1], 0x20),
                    attr: b[1] & 0x07,
                    lun: u64_at(b, 8),
                    itt: itt(b),
                    expected_len: u32_at(b, 20),
                    cmd_sn: u32_at(b, 24),
                    exp_stat_sn: u32_at(b, 28),
                    cdb,
                })
            }
            Opcode::TaskMgmtRequest => Header::TaskMgmtRequest(TaskMgmtRequest {
                immediate: imm,
                function: b[1] & 0x7f,
                lun: u64_at(b, 8),
                itt: itt(b),
                referenced_tag: u32_at(b, 20),
                cmd_sn: u32_at(b, 24),
                exp_stat_sn: u32_at(b, 28),
                ref_cmd_sn: u32_at(b, 32),
                exp_data_sn: u32_at(b, 36),
            }),
            Opcode::LoginRequest => {
                let (transit, cont, csg, nsg) = login_stages(b[1]);
                let mut isid = [0u8; 6];
                isid.copy_from_slice(&b[8..14]);
                Header::LoginRequest(LoginRequest {
                    transit,
                    cont,
                    csg,
                    nsg,
                    version_max: b[2],
                    version_min: b[3],
                    isid,
                    tsih: u16_at(b, 14),
                    itt: itt(b),
                    cid: u16_at(b, 20),
                    cmd_sn: u32_at(b, 24),
                    exp_stat_sn: u32_at(b, 28),
                })
            }
            Opcode::TextRequest => Header::TextRequest(TextRequest {
                immediate: imm,
                final_bit: f,
                cont: bit(b[1], 0x40),
                lun: u64_at(b, 8),
                itt: itt(b),
                ttt: u32_at(b, 20),
                cmd_sn: u32_at(b, 24),
                exp_stat_sn: u32_at(b, 28),
            }),
            Opcode::DataOut => Header::DataOut(DataOut {
                final_bit: f,
                lun: u64_at(b, 8),
                itt: itt(b),
                ttt: u32_at(b, 20),
                exp_stat_sn: u32_at(b, 28),
                data_sn: u32_at(b, 36),
                buffer_offset: u32_at(b, 40),
            }),
            Opcode::LogoutRequest => Header::LogoutRequest(LogoutRequest {
                immediate: imm,
                reason: b[1] & 0x7f,
                itt: itt(b),
                cid: u16_at(b, 20),
                cmd_sn: u32_at(b, 24),
                exp_stat_sn: u32_at(b, 28),
            }),
            Opcode::Snack => Header::Snack(Snack {
                kind: b[1] & 0x0f,
                lun: u64_at(b, 8),
                itt: itt(b),
                ttt: u32_at(b, 20),
                exp_stat_sn: u32_at(b, 28),
                beg_run: u32_at(b, 40),
                run_length: u32_at(b, 44),
            }),
            Opcode::NopIn => Header::NopIn(NopIn {
                lun: u64_at(b, 8),
                itt: itt(b),
                ttt: u32_at(b, 20),
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
            }),
            Opcode::ScsiResponse => Header::ScsiResponse(ScsiResponse {
                bidi_overflow: bit(b[1], 0x10),
                bidi_underflow: bit(b[1], 0x08),
                overflow: bit(b[1], 0x04),
                underflow: bit(b[1], 0x02),
                response: b[2],
                status: b[3],
                itt: itt(b),
                snack_tag: u32_at(b, 20),
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
                exp_data_sn: u32_at(b, 36),
                bidi_residual: u32_at(b, 40),
                residual: u32_at(b, 44),
            }),
            Opcode::TaskMgmtResponse => Header::TaskMgmtResponse(TaskMgmtResponse {
                response: b[2],
                itt: itt(b),
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
            }),
            Opcode::LoginResponse => {
                let (transit, cont, csg, nsg) = login_stages(b[1]);
                let mut isid = [0u8; 6];
                isid.copy_from_slice(&b[8..14]);
                Header::LoginResponse(LoginResponse {
                    transit,
                    cont,
                    csg,
                    nsg,
                    version_max: b[2],
                    version_active: b[3],
                    isid,
                    tsih: u16_at(b, 14),
                    itt: itt(b),
                    stat_sn: u32_at(b, 24),
                    exp_cmd_sn: u32_at(b, 28),
                    max_cmd_sn: u32_at(b, 32),
                    status_class: b[36],
                    status_detail: b[37],
                })
            }
            Opcode::TextResponse => Header::TextResponse(TextResponse {
                final_bit: f,
                cont: bit(b[1], 0x40),
                lun: u64_at(b, 8),
                itt: itt(b),
                ttt: u32_at(b, 20),
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
            }),
            Opcode::DataIn => Header::DataIn(DataIn {
                final_bit: f,
                ack: bit(b[1], 0x40),
                overflow: bit(b[1], 0x04),
                underflow: bit(b[1], 0x02),
                has_status: bit(b[1], 0x01),
                // Reserved unless S is set (§11.7.5).
                status: if bit(b[1], 0x01) { b[3] } else { 0 },
                lun: u64_at(b, 8),
                itt: itt(b),
                ttt: u32_at(b, 20),
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
                data_sn: u32_at(b, 36),
                buffer_offset: u32_at(b, 40),
                residual: u32_at(b, 44),
            }),
            Opcode::LogoutResponse => Header::LogoutResponse(LogoutResponse {
                response: b[2],
                itt: itt(b),
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
                time2wait: u16_at(b, 40),
                time2retain: u16_at(b, 42),
            }),
            Opcode::R2t => Header::R2t(R2t {
                lun: u64_at(b, 8),
                itt: itt(b),
                ttt: u32_at(b, 20),
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
                r2t_sn: u32_at(b, 36),
                buffer_offset: u32_at(b, 40),
                desired_len: u32_at(b, 44),
            }),
            Opcode::AsyncMessage => Header::AsyncMessage(AsyncMessage {
                lun: u64_at(b, 8),
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
                event: b[36],
                vcode: b[37],
                parameter1: u16_at(b, 38),
                parameter2: u16_at(b, 40),
                parameter3: u16_at(b, 42),
            }),
            Opcode::Reject => Header::Reject(Reject {
                reason: RejectReason::from_u8(b[2]),
                stat_sn: u32_at(b, 24),
                exp_cmd_sn: u32_at(b, 28),
                max_cmd_sn: u32_at(b, 32),
                data_sn: u32_at(b, 36),
            }),
            Opcode::Unknown(_) => Header::Unknown(*b),
        }
    }

    /// The opcode of this header.
    pub fn opcode(&self) -> Opcode {
        match self {
            Header::NopOut(_) => Opcode::NopOut,
            Header::ScsiCommand(_) => Opcode::ScsiCommand,
            Header::TaskMgmtRequest(_) => Opcode::TaskMgmtRequest,
            Header::LoginRequest(_) => Opcode::LoginRequest,
            Header::TextRequest(_) => Opcode::TextRequest,
            Header::DataOut(_) => Opcode::DataOut,
            Header::LogoutRequest(_) => Opcode::LogoutRequest,
            Header::Snack(_) => Opcode::Snack,
            Header::NopIn(_) => Opcode::NopIn,
            Header::ScsiResponse(_) => Opcode::ScsiResponse,
            Header::TaskMgmtResponse(_) => Opcode::TaskMgmtResponse,
            Header::LoginResponse(_) => Opcode::LoginResponse,
            Header::TextResponse(_) => Opcode::TextResponse,
            Header::DataIn(_) => Opcode::DataIn,
            Header::LogoutResponse(_) => Opcode::LogoutResponse,
            Header::R2t(_) => Opcode::R2t,
            Header::AsyncMessage(_) => Opcode::AsyncMessage,
            Header::Reject(_) => Opcode::Reject,
            Header::Unknown(b) => Opcode::from_u8(b[0]),
        }
    }

    /// Encodes the header with the given AHS length (bytes, a multiple of 4,
    /// at most 1020) and DataSegmentLength (at most 2^24 - 1).
    pub fn encode(&self, ahs_len: usize, data_len: u32) -> [u8; BHS_LEN] {
        let mut b = match self {
            // An unknown header goes back exactly as it came, reserved bits
            // and all: it is the data of the Reject that answers it.
            Header::Unknown(raw) => *raw,
            _ => {
                let mut b = [0u8; BHS_LEN];
                b[0] = self.opcode().to_u8();
                b
            }
        };
        self.encode_fields(&mut b);
        b[4] = (ahs_len / 4).min(255) as u8;
        let len = data_len.min(0x00ff_ffff).to_be_bytes();
        b[5..8].copy_from_slice(&len[1..4]);
        b
    }

    fn encode_fields(&self, b: &mut [u8; BHS_LEN]) {
        match self {
            Header::NopOut(h) => {
                b[0] |= flag(h.immediate, 0x40);
                b[1] = 0x80;
                put64(b, 8, h.lun);
                put32(b, 16, h.itt);
                put32(b, 20, h.ttt);
                put32(b, 24, h.cmd_sn);
                put32(b, 28, h.exp_stat_sn);
            }
            Header::ScsiCommand(h) => {
                b[0] |= flag(h.immediate, 0x40);
                b[1] = flag(h.final_bit, 0x80)
                    | flag(h.read, 0x40)
                    | flag(h.write, 0x20)
                    | (h.attr & 7);
                put64(b, 8, h.lun);
                put32(b, 16, h.itt);
                put32(b, 20, h.expected_len);
                put32(b, 24, h.cmd_sn);
                put32(b, 28, h.exp_stat_sn);
                b[32..48].copy_from_slice(&h.cdb);
            }
            Header::TaskMgmtRequest(h) => {
                b[0] |= flag(h.immediate, 0x40);
                b[1] = 0x80 | (h.function & 0x7f);
                put64(b, 8, h.lun);
                put32(b, 16, h.itt);
                put32(b, 20, h.referenced_tag);
                put32(b, 24, h.cmd_sn);
                put32(b, 28, h.exp_stat_sn);
                put32(b, 32, h.ref_cmd_sn);
                put32(b, 36, h.exp_data_sn);
            }
            Header::LoginRequest(h) => {
                // Login Requests always carry the I bit (RFC 7143 §11.12).
                b[0] |= 0x40;
                b[1] = stages_byte(h.transit, h.cont, h.csg, h.nsg);
                b[2] = h.version_max;
                b[3] = h.version_min;
                b[8..14].copy_from_slice(&h.isid);
                put16(b, 14, h.tsih);
                put32(b, 16, h.itt);
                put16(b, 20, h.cid);
                put32(b, 24, h.cmd_sn);
                put32(b, 28, h.exp_stat_sn);
            }
            Header::TextRequest(h) => {
                b[0] |= flag(h.immediate, 0x40);
                b[1] = flag(h.final_bit, 0x80) | flag(h.cont, 0x40);
                put64(b, 8, h.lun);
                put32(b, 16, h.itt);
                put32(b, 20, h.ttt);
                put32(b, 24, h.cmd_sn);
                put32(b, 28, h.exp_stat_sn);
            }
            Header::DataOut(h) => {
                b[1] = flag(h.final_bit, 0x80);
                put64(b, 8, h.lun);
                put32(b, 16, h.itt);
                put32(b, 20, h.ttt);
                put32(b, 28, h.exp_stat_sn);
                put32(b, 36, h.data_sn);
                put32(b, 40, h.buffer_offset);
            }
            Header::LogoutRequest(h) => {
                b[0] |= flag(h.immediate, 0x40);
                b[1] = 0x80 | (h.reason & 0x7f);
                put32(b, 16, h.itt);
                put16(b, 20, h.cid);
                put32(b, 24, h.cmd_sn);
                put32(b, 28, h.exp_stat_sn);
            }
            Header::Snack(h) => {
                b[1] = 0x80 | (h.kind & 0x0f);
                put64(b, 8, h.lun);
                put32(b, 16, h.itt);
                put32(b, 20, h.ttt);
                put32(b, 28, h.exp_stat_sn);
                put32(b, 40, h.beg_run);
                put32(b, 44, h.run_length);
            }
            Header::NopIn(h) => {
                b[1] = 0x80;
                put64(b, 8, h.lun);
                put32(b, 16, h.itt);
                put32(b, 20, h.ttt);
                put_sns(b, h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn);
            }
            Header::ScsiResponse(h) => {
                b[1] = 0x80
                    | flag(h.bidi_overflow, 0x10)
                    | flag(h.bidi_underflow, 0x08)
                    | flag(h.overflow, 0x04)
                    | flag(h.underflow, 0x02);
                b[2] = h.response;
                b[3] = h.status;
                put32(b, 16, h.itt);
                put32(b, 20, h.snack_tag);
                put_sns(b, h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn);
                put32(b, 36, h.exp_data_sn);
                put32(b, 40, h.bidi_residual);
                put32(b, 44, h.residual);
            }
            Header::TaskMgmtResponse(h) => {
                b[1] = 0x80;
                b[2] = h.response;
                put32(b, 16, h.itt);
                put_sns(b, h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn);
            }
            Header::LoginResponse(h) => {
                b[1] = stages_byte(h.transit, h.cont, h.csg, h.nsg);
                b[2] = h.version_max;
                b[3] = h.version_active;
                b[8..14].copy_from_slice(&h.isid);
                put16(b, 14, h.tsih);
                put32(b, 16, h.itt);
                put_sns(b, h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn);
                b[36] = h.status_class;
                b[37] = h.status_detail;
            }
            Header::TextResponse(h) => {
                b[1] = flag(h.final_bit, 0x80) | flag(h.cont, 0x40);
                put64(b, 8, h.lun);
                put32(b, 16, h.itt);
                put32(b, 20, h.ttt);
                put_sns(b, h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn);
            }
            Header::DataIn(h) => h.encode_fields(b),
            Header::LogoutResponse(h) => {
                b[1] = 0x80;
                b[2] = h.response;
                put32(b, 16, h.itt);
                put_sns(b, h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn);
                put16(b, 40, h.time2wait);
                put16(b, 42, h.time2retain);
            }
            Header::R2t(h) => {
                b[1] = 0x80;
                put64(b, 8, h.lun);
                put32(b, 16, h.itt);
                put32(b, 20, h.ttt);
                put_sns(b, h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn);
                put32(b, 36, h.r2t_sn);
                put32(b, 40, h.buffer_offset);
                put32(b, 44, h.desired_len);
            }
            Header::AsyncMessage(h) => {
                b[1] = 0x80;
                put64(b, 8, h.lun);
                put32(b, 16, RESERVED_TAG);
                put_sns(b, h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn);
                b[36] = h.event;
                b[37] = h.vcode;
                put16(b, 38, h.parameter1);
                put16(b, 40, h.parameter2);
                put16(b, 42, h.parameter3);
            }
            Header::Reject(h) => {
                b[1] = 0x80;
                b[2] = h.reason.to_u8();
                put32(b, 16, RESERVED_TAG);
                put_sns(b, h.stat_sn, h.exp_cmd_sn, h.max_cmd_sn);
                put32(b, 36, h.data_sn);
            }
            Header::Unknown(_) => {}
        }
    }
}

impl DataIn {
    /// Writes this header alone, the hot path of reads: no enum, no copy of
    /// the other variants' code.
    pub fn encode(&self, data_len: u32) -> [u8; BHS_LEN] {
        let mut b = [0u8; BHS_LEN];
        b[0] = Opcode::DataIn.to_u8();
        self.encode_fields(&mut b);
        let len = data_len.min(0x00ff_ffff).to_be_bytes();
        b[5..8].copy_from_slice(&len[1..4]);
        b
    }

    fn encode_fields(&self, b: &mut [u8; BHS_LEN]) {
        b[1] = flag(self.final_bit, 0x80)
            | flag(self.ack, 0x40)
            | flag(self.overflow, 0x04)
            | flag(self.underflow, 0x02)
            | flag(self.has_status, 0x01);
        b[3] = if self.has_status { self.status } else { 0 };
        put64(b, 8, self.lun);
        put32(b, 16, self.itt);
        put32(b, 20, self.ttt);
        put_sns(b, self.stat_sn, self.exp_cmd_sn, self.max_cmd_sn);
        put32(b, 36, self.data_sn);
        put32(b, 40, self.buffer_offset);
        put32(b, 44, self.residual);
    }
}

fn stages_byte(transit: bool, cont: bool, csg: u8, nsg: u8) -> u8 {
    flag(transit, 0x80) | flag(cont, 0x40) | ((csg & 3) << 2) | (nsg & 3)
}

fn put_sns(b: &mut [u8; BHS_LEN], stat_sn: u32, exp_cmd_sn: u32, max_cmd_sn: u32) {
    put32(b, 24, stat_sn);
    put32(b, 28, exp_cmd_sn);
    put32(b, 32, max_cmd_sn);
}
