//! Byte vectors for the Basic Header Segment, parsed and re-encoded.

use super::*;

fn hex(s: &str) -> [u8; BHS_LEN] {
    let clean: Vec<u8> = s
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    clean.try_into().unwrap()
}

#[test]
fn bc_22_a_nop_out_ping_bytes() {
    // NOP-Out I=1, ITT 0x10, TTT 0xffffffff, LUN 0, 16 bytes of data.
    let b = hex("40 80 00 00 00 00 00 10  00 00 00 00 00 00 00 00
         00 00 00 10 ff ff ff ff  00 00 00 05 00 00 00 07
         00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00");
    let h = Header::parse(&b);
    let want = NopOut {
        immediate: true,
        lun: 0,
        itt: 0x10,
        ttt: RESERVED_TAG,
        cmd_sn: 5,
        exp_stat_sn: 7,
    };
    assert_eq!(h, Header::NopOut(want));
    assert_eq!(data_len(&b), 16);
    assert_eq!(h.encode(0, 16), b);
}

#[test]
fn read10_command_bytes() {
    // READ(10) LBA 0 x 128 blocks, R and F bits, simple attribute, LUN 1.
    let b = hex("01 c1 00 00 00 00 00 00  00 01 00 00 00 00 00 00
         12 34 56 78 00 01 00 00  ff ff ff f0 00 00 00 01
         28 00 00 00 00 00 00 00  80 00 00 00 00 00 00 00");
    let Header::ScsiCommand(c) = Header::parse(&b) else {
        panic!()
    };
    assert!(c.final_bit && c.read && !c.write && !c.immediate);
    assert_eq!(c.attr, 1);
    assert_eq!(c.lun, 0x0001_0000_0000_0000);
    assert_eq!(c.itt, 0x1234_5678);
    assert_eq!(c.expected_len, 65536);
    assert_eq!(c.cmd_sn, 0xffff_fff0);
    assert_eq!(c.cdb[0], 0x28);
    assert_eq!(c.cdb[8], 0x80);
    assert_eq!(Header::ScsiCommand(c).encode(0, 0), b);
}

#[test]
fn login_request_bytes() {
    // CSG=1 NSG=3 T=1, ISID from libiscsi's default range, TSIH 0, CID 0.
    let b = hex("43 87 00 00 00 00 01 2c  80 00 12 34 56 78 00 00
         00 00 00 01 00 00 00 00  00 00 00 00 00 00 00 00
         00 00 00 00 00 00 00 00  00 00 00 00 00 00 00 00");
    let Header::LoginRequest(l) = Header::parse(&b) else {
        panic!()
    };
    assert!(l.transit && !l.cont);
    assert_eq!((l.csg, l.nsg), (1, 3));
    assert_eq!(l.isid, [0x80, 0, 0x12, 0x34, 0x56, 0x78]);
    assert_eq!(data_len(&b), 300);
    assert!(is_immediate(&b));
    assert_eq!(Header::LoginRequest(l).encode(0, 300), b);
}

#[test]
fn data_in_with_status_bytes() {
    let d = DataIn {
        final_bit: true,
        has_status: true,
        underflow: true,
        status: 0,
        itt: 7,
        ttt: RESERVED_TAG,
        stat_sn: 0x10,
        exp_cmd_sn: 0x20,
        max_cmd_sn: 0x9f,
        data_sn: 15,
        buffer_offset: 61440,
        residual: 4,
        ..DataIn::default()
    };
    let b = d.encode(4096);
    assert_eq!(&b[..8], &[0x25, 0x83, 0, 0, 0, 0, 0x10, 0]);
    assert_eq!(&b[36..48], &[0, 0, 0, 15, 0, 0, 0xf0, 0, 0, 0, 0, 4]);
    assert_eq!(Header::parse(&b), Header::DataIn(d));
    assert_eq!(Header::DataIn(d).encode(0, 4096), b);
}

#[test]
fn every_opcode_round_trips() {
    let headers = [
        Header::NopOut(NopOut {
            immediate: true,
            lun: 3,
            itt: 1,
            ttt: 2,
            cmd_sn: 3,
            exp_stat_sn: 4,
        }),
        Header::ScsiCommand(ScsiCommand {
            write: true,
            final_bit: true,
            expected_len: 512,
            cdb: [0x2a; 16],
            ..ScsiCommand::default()
        }),
        Header::TaskMgmtRequest(TaskMgmtRequest {
            immediate: true,
            function: 1,
            lun: 1 << 48,
            itt: 5,
            referenced_tag: 6,
            cmd_sn: 7,
            exp_stat_sn: 8,
            ref_cmd_sn: 9,
            exp_data_sn: 10,
        }),
        Header::LoginRequest(LoginRequest {
            transit: true,
            cont: true,
            csg: 0,
            nsg: 1,
            isid: [1, 2, 3, 4, 5, 6],
            tsih: 9,
            cid: 3,
            ..LoginRequest::default()
        }),
        Header::TextRequest(TextRequest {
            final_bit: true,
            cont: false,
            ttt: RESERVED_TAG,
            ..TextRequest::default()
        }),
        Header::DataOut(DataOut {
            final_bit: true,
            data_sn: 3,
            buffer_offset: 8192,
            ..DataOut::default()
        }),
        Header::LogoutRequest(LogoutRequest {
            immediate: true,
            reason: 1,
            cid: 2,
            ..LogoutRequest::default()
        }),
        Header::Snack(Snack {
            kind: 1,
            beg_run: 4,
            run_length: 5,
            ..Snack::default()
        }),
        Header::NopIn(NopIn {
            itt: RESERVED_TAG,
            ttt: 0x123,
            stat_sn: 1,
            exp_cmd_sn: 2,
            max_cmd_sn: 3,
            lun: 0,
        }),
        Header::ScsiResponse(ScsiResponse {
            overflow: true,
            bidi_underflow: true,
            status: 2,
            residual: 496,
            exp_data_sn: 2,
            ..ScsiResponse::default()
        }),
        Header::TaskMgmtResponse(TaskMgmtResponse {
            response: 5,
            itt: 9,
            stat_sn: 1,
            exp_cmd_sn: 2,
            max_cmd_sn: 3,
        }),
        Header::LoginResponse(LoginResponse {
            transit: true,
            csg: 1,
            nsg: 3,
            tsih: 1,
            status_class: 2,
            status_detail: 3,
            ..LoginResponse::default()
        }),
        Header::TextResponse(TextResponse {
            final_bit: false,
            cont: true,
            ttt: 44,
            ..TextResponse::default()
        }),
        Header::DataIn(DataIn {
            ack: true,
            overflow: true,
            data_sn: 1,
            ..DataIn::default()
        }),
        Header::LogoutResponse(LogoutResponse {
            response: 2,
            time2wait: 2,
            time2retain: 20,
            ..LogoutResponse::default()
        }),
        Header::R2t(R2t {
            ttt: 1,
            r2t_sn: 2,
            buffer_offset: 3,
            desired_len: 4,
            ..R2t::default()
        }),
        Header::AsyncMessage(AsyncMessage {
            event: 1,
            parameter3: 7,
            ..AsyncMessage::default()
        }),
        Header::Reject(Reject {
            reason: RejectReason::InvalidPduField,
            stat_sn: 1,
            exp_cmd_sn: 2,
            max_cmd_sn: 3,
            data_sn: 0,
        }),
    ];
    for h in headers {
        let b = h.encode(0, 0);
        let back = Header::parse(&b);
        // Async Messages always carry the reserved ITT; nothing to compare.
        assert_eq!(back, h, "{:?}", h.opcode());
        assert_eq!(back.encode(0, 0), b);
    }
}

#[test]
fn unknown_opcode_is_a_value() {
    let mut b = [0u8; BHS_LEN];
    b[0] = 0x1c;
    b[20] = 0xaa;
    let h = Header::parse(&b);
    assert_eq!(h, Header::Unknown(b));
    assert_eq!(h.opcode(), Opcode::Unknown(0x1c));
    assert_eq!(h.encode(0, 0), b);
    assert_eq!(RejectReason::from_u8(0x42), RejectReason::Unknown(0x42));
}

#[test]
fn any_header_bytes_decode() {
    // Every opcode value with junk in every field decodes without panicking.
    for op in 0..=255u8 {
        let mut b = [0xa5u8; BHS_LEN];
        b[0] = op;
        let h = Header::parse(&b);
        assert_eq!(h.opcode().to_u8(), op & 0x3f);
        let _ = h.encode(1020, u32::MAX);
    }
}

#[test]
fn fuzz_unknown_opcode_keeps_reserved_and_immediate_bits() {
    // Found by fuzz/iscsi_pdu: byte 0 = 0xba (reserved bit 7, opcode 0x3a)
    // came back as 0x3a, so the Reject would have quoted a different header.
    let mut b = [0u8; BHS_LEN];
    b[0] = 0xba;
    b[2] = 1;
    b[7] = 1;
    b[8] = 8;
    b[23] = 1;
    b[24] = 0xa1;
    let h = Header::parse(&b);
    assert_eq!(h.encode(0, 1), b);
    assert_eq!(Header::parse(&h.encode(0, 1)), h);
    b[0] = 0x7c;
    assert_eq!(Header::parse(&b).encode(0, 1), b);
}

#[test]
fn fuzz_data_in_status_byte_is_reserved_without_s_bit() {
    // Found by fuzz/iscsi_pdu: a status byte without the S bit decoded as a
    // status, then vanished on re-encoding.
    let mut b = [0u8; BHS_LEN];
    b[0] = 0x25;
    b[3] = 0x27;
    let Header::DataIn(d) = Header::parse(&b) else {
        panic!()
    };
    assert!(!d.has_status);
    assert_eq!(d.status, 0);
    assert_eq!(
        Header::parse(&Header::DataIn(d).encode(0, 0)),
        Header::DataIn(d)
    );
}
