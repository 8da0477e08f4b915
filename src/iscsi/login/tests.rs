//! Scripted logins: the key sets real initiators send, refusals, CHAP.

use std::time::{Duration, Instant};

use super::*;
use crate::iscsi::pdu::{NopOut, BHS_LEN};

const TARGET: &str = "iqn.2026-01.example:disk0";
const INITIATOR: &str = "iqn.2026-01.example:init";
const SECRET: &str = "twelve-bytes!";
const RANDOM: [u8; 17] = [3, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6];

fn targets() -> Vec<TargetEntry> {
    vec![
        TargetEntry {
            iqn: TARGET.into(),
            chap: None,
            mutual_chap: None,
            initiators: vec![],
        },
        TargetEntry {
            iqn: "iqn.2026-01.example:secure".into(),
            chap: Some(Credentials {
                user: "alice".into(),
                secret: SECRET.as_bytes().to_vec(),
            }),
            mutual_chap: Some(Credentials {
                user: "target".into(),
                secret: b"target-secret".to_vec(),
            }),
            initiators: vec![INITIATOR.into()],
        },
    ]
}

fn login() -> Login {
    Login::new(
        Limits::default(),
        7,
        RANDOM,
        Instant::now() + Duration::from_secs(15),
    )
}

struct Req {
    csg: u8,
    nsg: u8,
    transit: bool,
    cont: bool,
    cmd_sn: u32,
}

const SEC_TO_OP: Req = Req {
    csg: 0,
    nsg: 1,
    transit: true,
    cont: false,
    cmd_sn: 1,
};
const SEC_STAY: Req = Req {
    csg: 0,
    nsg: 0,
    transit: false,
    cont: false,
    cmd_sn: 1,
};
const OP_TO_FF: Req = Req {
    csg: 1,
    nsg: 3,
    transit: true,
    cont: false,
    cmd_sn: 1,
};
const OP_STAY: Req = Req {
    csg: 1,
    nsg: 0,
    transit: false,
    cont: false,
    cmd_sn: 1,
};

fn pdu_bytes(r: &Req, data: &[u8]) -> Vec<u8> {
    let h = Header::LoginRequest(LoginRequest {
        transit: r.transit,
        cont: r.cont,
        csg: r.csg,
        nsg: r.nsg,
        isid: [0x80, 0, 0, 0, 0, 1],
        itt: 0x42,
        cmd_sn: r.cmd_sn,
        ..LoginRequest::default()
    });
    let mut out = Vec::new();
    frame::encode_pdu(
        &mut out,
        h.encode(0, data.len() as u32),
        data,
        Digests::default(),
    );
    out
}

fn keys(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut data = Vec::new();
    for (k, v) in pairs {
        text::encode(&mut data, k, v);
    }
    data
}

fn feed_raw(l: Login, r: &Req, data: &[u8]) -> Step {
    let bytes = pdu_bytes(r, data);
    let (pdu, _) = Pdu::parse(&bytes, Digests::default(), LOGIN_MAX_DATA).unwrap();
    l.handle(&pdu, &targets())
}

fn feed(l: Login, r: &Req, pairs: &[(&str, &str)]) -> Step {
    feed_raw(l, r, &keys(pairs))
}

fn replies(resp: &Response) -> Vec<(String, String)> {
    text::parse(&resp.data)
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
}

fn reply(resp: &Response, key: &str) -> Option<String> {
    replies(resp)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn cont(step: Step) -> (Login, Response) {
    match step {
        Step::Continue(l, r) => {
            assert_eq!(r.header.status_class, 0);
            (*l, r)
        }
        other => panic!("expected Continue, got {other:?}"),
    }
}

fn established(step: Step) -> (Established, Response) {
    match step {
        Step::FullFeature(e, r) => (*e, r),
        other => panic!("expected FullFeature, got {other:?}"),
    }
}

fn refused(step: Step) -> (u8, u8) {
    match step {
        Step::Refused(r, status) => {
            assert_eq!(
                (r.header.status_class, r.header.status_detail),
                status.code()
            );
            assert!(!r.header.transit);
            status.code()
        }
        other => panic!("expected Refused, got {other:?}"),
    }
}

fn names() -> Vec<(&'static str, &'static str)> {
    vec![
        ("InitiatorName", INITIATOR),
        ("TargetName", TARGET),
        ("SessionType", "Normal"),
    ]
}

#[test]
fn bc_28_a_unknown_and_private_keys_answered() {
    let mut pairs = names();
    pairs.extend([
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("MaxRecvDataSegmentLength", "65536"),
        ("FooBar", "1"),
        ("X-com.example.Tweak", "on"),
        ("X#org.example.Registered", "1"),
        ("ErrorRecoveryLevel", "0"),
    ]);
    let (e, r) = established(feed(login(), &OP_TO_FF, &pairs));
    assert_eq!((r.header.status_class, r.header.status_detail), (0, 0));
    assert!(r.header.transit);
    assert_eq!((r.header.csg, r.header.nsg), (1, 3));
    assert_eq!(r.header.tsih, 7);
    assert_eq!(reply(&r, "FooBar").as_deref(), Some("NotUnderstood"));
    assert_eq!(
        reply(&r, "X-com.example.Tweak").as_deref(),
        Some("NotUnderstood")
    );
    assert_eq!(
        reply(&r, "X#org.example.Registered").as_deref(),
        Some("NotUnderstood")
    );
    assert_eq!(reply(&r, "TargetPortalGroupTag").as_deref(), Some("1"));
    assert_eq!(
        reply(&r, "MaxRecvDataSegmentLength").as_deref(),
        Some("262144")
    );
    assert_eq!(e.params.initiator_mrdsl, 65536);
    assert_eq!(e.params.target_mrdsl, 262_144);
    assert_eq!(e.target, Some(0));
    // The response is a well-formed PDU.
    let bytes = r.encode();
    let (pdu, _) = Pdu::parse(&bytes, Digests::default(), 8192).unwrap();
    assert!(matches!(pdu.header, Header::LoginResponse(_)));
}

#[test]
fn bc_28_b_redeclared_key_in_split_login() {
    let mut pairs = names();
    pairs.push(("MaxRecvDataSegmentLength", "65536"));
    let (l, _) = cont(feed(login(), &OP_STAY, &pairs));
    let step = feed(l, &OP_TO_FF, &[("MaxRecvDataSegmentLength", "65536")]);
    assert_eq!(refused(step), (2, 0));
}

#[test]
fn bc_28_c_invalid_value_rejected_and_login_continues() {
    let mut pairs = names();
    pairs.push(("ImmediateData", "Maybe"));
    let (e, r) = established(feed(login(), &OP_TO_FF, &pairs));
    assert_eq!(reply(&r, "ImmediateData").as_deref(), Some("Reject"));
    assert!(e.params.immediate_data);
}

#[test]
fn refusals_carry_the_right_status() {
    let only_init = [("InitiatorName", INITIATOR)];
    assert_eq!(refused(feed(login(), &SEC_TO_OP, &only_init)), (2, 7));
    assert_eq!(
        refused(feed(login(), &SEC_TO_OP, &[("TargetName", TARGET)])),
        (2, 7)
    );
    let unknown = [
        ("InitiatorName", INITIATOR),
        ("TargetName", "iqn.2026-01.example:nope"),
    ];
    assert_eq!(refused(feed(login(), &SEC_TO_OP, &unknown)), (2, 3));
    let outsider = [
        ("InitiatorName", "iqn.2026-01.example:other"),
        ("TargetName", "iqn.2026-01.example:secure"),
        ("AuthMethod", "CHAP"),
    ];
    assert_eq!(refused(feed(login(), &SEC_TO_OP, &outsider)), (2, 2));
    let bad_type = [("InitiatorName", INITIATOR), ("SessionType", "Bogus")];
    assert_eq!(refused(feed(login(), &SEC_TO_OP, &bad_type)), (2, 9));
    assert_eq!(refused(feed_raw(login(), &SEC_TO_OP, b"garbage")), (2, 0));
    // NSG=2 does not exist; T with C is forbidden.
    let bad_nsg = Req {
        nsg: 2,
        ..SEC_TO_OP
    };
    assert_eq!(refused(feed(login(), &bad_nsg, &names())), (2, 0));
    let both = Req {
        cont: true,
        ..SEC_TO_OP
    };
    assert_eq!(refused(feed(login(), &both, &names())), (2, 0));
}

#[test]
fn version_tsih_and_non_login_pdus() {
    let mut bytes = pdu_bytes(&SEC_TO_OP, &keys(&names()));
    bytes[3] = 1; // Version-min 1.
    let (pdu, _) = Pdu::parse(&bytes, Digests::default(), 8192).unwrap();
    assert_eq!(refused(login().handle(&pdu, &targets())), (2, 5));
    let mut bytes = pdu_bytes(&SEC_TO_OP, &keys(&names()));
    bytes[15] = 9; // TSIH 9: reinstatement is not supported.
    let (pdu, _) = Pdu::parse(&bytes, Digests::default(), 8192).unwrap();
    assert_eq!(refused(login().handle(&pdu, &targets())), (2, 0x0a));
    let nop = Header::NopOut(NopOut::default()).encode(0, 0);
    let (pdu, _) = Pdu::parse(&nop, Digests::default(), 8192).unwrap();
    assert_eq!(refused(login().handle(&pdu, &targets())), (2, 0x0b));
    let _ = BHS_LEN;
}

#[test]
fn ipxe_login() {
    let mut first = names();
    first.push(("AuthMethod", "None"));
    let (l, r) = cont(feed(login(), &SEC_TO_OP, &first));
    assert_eq!(reply(&r, "AuthMethod").as_deref(), Some("None"));
    assert!(r.header.transit);
    assert_eq!((r.header.csg, r.header.nsg), (0, 1));
    assert_eq!(r.header.tsih, 0);
    let op = [
        ("HeaderDigest", "None"),
        ("DataDigest", "None"),
        ("MaxConnections", "1"),
        ("InitialR2T", "Yes"),
        ("ImmediateData", "No"),
        ("MaxRecvDataSegmentLength", "8192"),
        ("MaxBurstLength", "262144"),
        ("FirstBurstLength", "65536"),
        ("DefaultTime2Wait", "0"),
        ("DefaultTime2Retain", "0"),
        ("MaxOutstandingR2T", "1"),
        ("DataPDUInOrder", "Yes"),
        ("DataSequenceInOrder", "Yes"),
        ("ErrorRecoveryLevel", "0"),
    ];
    let (e, r) = established(feed(l, &OP_TO_FF, &op));
    assert_eq!(r.header.tsih, 7);
    assert_eq!(r.header.stat_sn, 1);
    assert_eq!(e.stat_sn, 2);
    assert!(!e.params.immediate_data);
    assert_eq!(e.params.max_burst_length, 262_144);
}

#[test]
fn libiscsi_and_open_iscsi_login() {
    let mut first = names();
    first.extend([("InitiatorAlias", "host"), ("AuthMethod", "None,CHAP")]);
    let (l, _) = cont(feed(login(), &SEC_TO_OP, &first));
    let op = [
        ("HeaderDigest", "None,CRC32C"),
        ("DataDigest", "None"),
        ("DefaultTime2Wait", "2"),
        ("DefaultTime2Retain", "0"),
        ("IFMarker", "No"),
        ("OFMarker", "No"),
        ("ErrorRecoveryLevel", "0"),
        ("InitialR2T", "No"),
        ("ImmediateData", "Yes"),
        ("MaxBurstLength", "16776192"),
        ("FirstBurstLength", "262144"),
        ("MaxOutstandingR2T", "1"),
        ("MaxConnections", "1"),
        ("DataPDUInOrder", "Yes"),
        ("DataSequenceInOrder", "Yes"),
        ("MaxRecvDataSegmentLength", "262144"),
    ];
    let (e, r) = established(feed(l, &OP_TO_FF, &op));
    assert_eq!(reply(&r, "IFMarker").as_deref(), Some("No"));
    // Our InitialR2T=Yes wins the OR.
    assert_eq!(reply(&r, "InitialR2T").as_deref(), Some("Yes"));
    assert_eq!(e.params.max_burst_length, 1_048_576);
    assert_eq!(e.params.first_burst_length, 65_536);
    assert_eq!(e.params.digests, Digests::default());
}

#[test]
fn windows_login_with_operational_keys_in_two_requests() {
    let mut first = names();
    first.extend([("InitiatorAlias", "WIN-HOST"), ("AuthMethod", "None")]);
    let (l, _) = cont(feed(login(), &SEC_TO_OP, &first));
    let (l, r) = cont(feed(
        l,
        &OP_STAY,
        &[("HeaderDigest", "None"), ("DataDigest", "None")],
    ));
    assert_eq!(
        reply(&r, "MaxRecvDataSegmentLength").as_deref(),
        Some("262144")
    );
    let (_, r) = established(feed(
        l,
        &OP_TO_FF,
        &[("MaxRecvDataSegmentLength", "65536"), ("OFMarker", "No")],
    ));
    // Declared once only.
    assert_eq!(reply(&r, "MaxRecvDataSegmentLength"), None);
}

#[test]
fn discovery_login_skipping_security() {
    let pairs = [
        ("InitiatorName", INITIATOR),
        ("SessionType", "Discovery"),
        ("HeaderDigest", "CRC32C,None"),
        ("DataDigest", "None"),
    ];
    let (e, r) = established(feed(login(), &OP_TO_FF, &pairs));
    assert_eq!(e.session_type, SessionType::Discovery);
    assert_eq!(e.target, None);
    assert_eq!(reply(&r, "HeaderDigest").as_deref(), Some("None"));
    assert_eq!(reply(&r, "TargetPortalGroupTag"), None);
}

#[test]
fn bc_23_initial_cmdsn_near_wrap() {
    let r = Req {
        cmd_sn: 0xffff_fff0,
        ..OP_TO_FF
    };
    let (e, resp) = established(feed(login(), &r, &names()));
    assert_eq!(e.exp_cmd_sn, 0xffff_fff0);
    assert_eq!(resp.header.exp_cmd_sn, 0xffff_fff0);
    assert_eq!(resp.header.max_cmd_sn, 0xffff_fff0u32.wrapping_add(127));
}

#[test]
fn continuation_is_joined_and_acknowledged() {
    let data = keys(&names());
    let (head, tail) = data.split_at(20);
    let part = Req {
        cont: true,
        transit: false,
        ..OP_TO_FF
    };
    let (l, r) = cont(feed_raw(login(), &part, head));
    assert!(r.data.is_empty());
    assert!(!r.header.transit);
    let (e, _) = established(feed_raw(l, &OP_TO_FF, tail));
    assert_eq!(e.initiator_name, INITIATOR);
}

fn chap_names() -> Vec<(&'static str, &'static str)> {
    vec![
        ("InitiatorName", INITIATOR),
        ("TargetName", "iqn.2026-01.example:secure"),
        ("AuthMethod", "CHAP,None"),
    ]
}

fn chap_response(secret: &str) -> String {
    chap::encode_hex(&chap::response(RANDOM[0], secret.as_bytes(), &RANDOM[1..]))
}

#[test]
fn chap_one_way() {
    let (l, r) = cont(feed(login(), &SEC_TO_OP, &chap_names()));
    assert_eq!(reply(&r, "AuthMethod").as_deref(), Some("CHAP"));
    assert!(!r.header.transit, "no transition before authentication");
    let (l, r) = cont(feed(l, &SEC_STAY, &[("CHAP_A", "5")]));
    assert_eq!(reply(&r, "CHAP_I").as_deref(), Some("3"));
    assert_eq!(reply(&r, "CHAP_C"), Some(chap::encode_hex(&RANDOM[1..])));
    let resp = chap_response(SECRET);
    let (l, r) = cont(feed(
        l,
        &SEC_TO_OP,
        &[("CHAP_N", "alice"), ("CHAP_R", &resp)],
    ));
    assert!(r.header.transit);
    established(feed(l, &OP_TO_FF, &[]));
}

#[test]
fn chap_mutual_and_failures() {
    let (l, _) = cont(feed(login(), &SEC_TO_OP, &chap_names()));
    let (l, _) = cont(feed(l, &SEC_STAY, &[("CHAP_A", "5")]));
    let resp = chap_response(SECRET);
    let mutual = [
        ("CHAP_N", "alice"),
        ("CHAP_R", resp.as_str()),
        ("CHAP_I", "1"),
        ("CHAP_C", "0x0102030405"),
    ];
    let (_, r) = cont(feed(l, &SEC_TO_OP, &mutual));
    assert_eq!(reply(&r, "CHAP_N").as_deref(), Some("target"));
    let want = chap::encode_hex(&chap::response(1, b"target-secret", &[1, 2, 3, 4, 5]));
    assert_eq!(reply(&r, "CHAP_R"), Some(want));

    let (l, _) = cont(feed(login(), &SEC_TO_OP, &chap_names()));
    let (l, _) = cont(feed(l, &SEC_STAY, &[("CHAP_A", "5")]));
    let wrong = chap_response("not-the-secret");
    assert_eq!(
        refused(feed(
            l,
            &SEC_TO_OP,
            &[("CHAP_N", "alice"), ("CHAP_R", &wrong)]
        )),
        (2, 1)
    );

    // The initiator offers only None to a CHAP target.
    let mut none_only = chap_names();
    none_only[2] = ("AuthMethod", "None");
    assert_eq!(refused(feed(login(), &SEC_TO_OP, &none_only)), (2, 1));
    // It skips the security stage of a CHAP target.
    let skip = [
        ("InitiatorName", INITIATOR),
        ("TargetName", "iqn.2026-01.example:secure"),
    ];
    assert_eq!(refused(feed(login(), &OP_TO_FF, &skip)), (2, 1));
    // CHAP keys in the operational stage are out of phase.
    let mut first = names();
    first.push(("AuthMethod", "None"));
    let (l, _) = cont(feed(login(), &SEC_TO_OP, &first));
    assert_eq!(refused(feed(l, &OP_TO_FF, &[("CHAP_A", "5")])), (2, 0));
}

#[test]
fn stage_must_match() {
    let mut first = names();
    first.push(("AuthMethod", "None"));
    let (l, _) = cont(feed(login(), &SEC_TO_OP, &first));
    // The initiator claims to still be in the security stage.
    assert_eq!(refused(feed(l, &SEC_TO_OP, &[])), (2, 0));
}
