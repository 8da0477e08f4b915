//! Operational text keys: their defaults, ranges and result functions
//! (RFC 7143 §6.2, §13; iSCSIProtocolLevel from RFC 7144 §2.1).
//!
//! [`Params`] starts at the RFC defaults and [`Params::answer`] applies one
//! key the initiator sent, returning what the target replies:
//! - list keys (digests, TaskReporting): the first offered value we support;
//! - Yes/No keys: OR for InitialR2T, DataPDUInOrder, DataSequenceInOrder;
//!   AND for ImmediateData;
//! - numbers: the minimum (or the maximum, DefaultTime2Wait) of the offer and
//!   the target's own value;
//! - declarative keys (MaxRecvDataSegmentLength): taken as sent, no reply;
//! - malformed or out-of-range values: `Reject`, and the default stays (§6.2);
//! - unknown and private (`X-`, `X#`) keys: `NotUnderstood`.
//!
//! This side never offers a key itself: a key the initiator leaves out keeps
//! its RFC default. Session-wide keys (names, SessionType, AuthMethod, CHAP)
//! are the login's business and are answered there.
//!
//! Not done yet: negotiation of operational keys in full feature phase Text
//! requests (the keys that allow it are answered `Reject` there).

use super::frame::Digests;

/// Smallest and largest data segment lengths a side may declare (§13.12).
pub const MIN_DATA_SEGMENT: u32 = 512;
pub const MAX_DATA_SEGMENT: u32 = 0x00ff_ffff;
/// MaxRecvDataSegmentLength of a side that declared nothing (§13.12).
pub const DEFAULT_DATA_SEGMENT: u32 = 8192;

/// The target's own values: what it accepts and prefers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Declared to the initiator: the longest data segment we accept.
    pub max_recv_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub immediate_data: bool,
    pub initial_r2t: bool,
    pub max_outstanding_r2t: u16,
    /// Commands in flight per session: the width of the CmdSN window.
    pub queue_depth: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_recv_data_segment_length: 262_144,
            max_burst_length: 1_048_576,
            first_burst_length: 65_536,
            immediate_data: true,
            initial_r2t: true,
            max_outstanding_r2t: 1,
            queue_depth: 128,
        }
    }
}

/// Operational parameters of one session, defaults per RFC 7143 §13.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub digests: Digests,
    pub initial_r2t: bool,
    pub immediate_data: bool,
    /// The initiator's MaxRecvDataSegmentLength: the longest data segment
    /// the target may send.
    pub initiator_mrdsl: u32,
    /// The target's declared MaxRecvDataSegmentLength: the longest it takes.
    pub target_mrdsl: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    pub max_outstanding_r2t: u16,
    pub data_pdu_in_order: bool,
    pub data_sequence_in_order: bool,
    pub error_recovery_level: u8,
}

impl Default for Params {
    fn default() -> Self {
        Params::new()
    }
}

impl Params {
    /// The RFC defaults.
    pub fn new() -> Params {
        Params {
            digests: Digests::default(),
            initial_r2t: true,
            immediate_data: true,
            initiator_mrdsl: DEFAULT_DATA_SEGMENT,
            // Until the login declares our own value, the initiator assumes
            // the default; see `declare_mrdsl`.
            target_mrdsl: DEFAULT_DATA_SEGMENT,
            max_burst_length: 262_144,
            first_burst_length: 65_536,
            default_time2wait: 2,
            default_time2retain: 20,
            max_outstanding_r2t: 1,
            data_pdu_in_order: true,
            data_sequence_in_order: true,
            error_recovery_level: 0,
        }
    }

    /// Adopts the target's own MaxRecvDataSegmentLength once the login has
    /// declared it; returns the value to declare.
    pub fn declare_mrdsl(&mut self, limits: &Limits) -> u32 {
        self.target_mrdsl = limits.max_recv_data_segment_length;
        self.target_mrdsl
    }

    /// Applies one operational key; returns the reply value, if one is owed.
    ///
    /// `discovery` makes digest choice prefer None (BC-21.1): a discovery
    /// session moves a few hundred bytes and gains nothing from CRCs.
    pub fn answer(&mut self, limits: &Limits, key: &str, value: &str, discovery: bool) -> Reply {
        if matches!(value, "NotUnderstood" | "Irrelevant" | "Reject") {
            // An answer to something we declared; nothing to reply.
            return Reply::None;
        }
        match key {
            "HeaderDigest" => reply_digest(&mut self.digests.header, value, discovery),
            "DataDigest" => reply_digest(&mut self.digests.data, value, discovery),
            "MaxConnections" => reply_number(value, 1, 65535, |_| 1),
            "InitialR2T" => reply_bool(&mut self.initial_r2t, value, |v| v || limits.initial_r2t),
            "ImmediateData" => reply_bool(&mut self.immediate_data, value, |v| {
                v && limits.immediate_data
            }),
            "MaxRecvDataSegmentLength" => {
                match number(value, MIN_DATA_SEGMENT, MAX_DATA_SEGMENT) {
                    // Declarative: taken exactly as sent, never rounded (BC-20.2).
                    Some(v) => {
                        self.initiator_mrdsl = v;
                        Reply::None
                    }
                    None => Reply::Reject,
                }
            }
            "MaxBurstLength" => {
                let max = limits.max_burst_length;
                let r = reply_number(value, MIN_DATA_SEGMENT, MAX_DATA_SEGMENT, |v| v.min(max));
                set_if_value(&r, &mut self.max_burst_length);
                // FirstBurstLength may not exceed MaxBurstLength (§13.14).
                self.first_burst_length = self.first_burst_length.min(self.max_burst_length);
                r
            }
            "FirstBurstLength" => {
                let max = limits.first_burst_length.min(self.max_burst_length);
                let r = reply_number(value, MIN_DATA_SEGMENT, MAX_DATA_SEGMENT, |v| v.min(max));
                set_if_value(&r, &mut self.first_burst_length);
                r
            }
            "DefaultTime2Wait" => {
                let r = reply_number(value, 0, 3600, |v| v.max(2));
                set_if_value(&r, &mut self.default_time2wait);
                r
            }
            "DefaultTime2Retain" => {
                // At ERL 0 nothing survives a connection: our value is 0.
                let r = reply_number(value, 0, 3600, |_| 0);
                set_if_value(&r, &mut self.default_time2retain);
                r
            }
            "MaxOutstandingR2T" => {
                let max = u32::from(limits.max_outstanding_r2t.max(1));
                let r = reply_number(value, 1, 65535, |v| v.min(max));
                set_if_value(&r, &mut self.max_outstanding_r2t);
                r
            }
            "DataPDUInOrder" => reply_bool(&mut self.data_pdu_in_order, value, |_| true),
            "DataSequenceInOrder" => reply_bool(&mut self.data_sequence_in_order, value, |_| true),
            "ErrorRecoveryLevel" => {
                let r = reply_number(value, 0, 2, |_| 0);
                set_if_value(&r, &mut self.error_recovery_level);
                r
            }
            // Markers were removed by RFC 7143 but RFC 3720 initiators
            // (Windows, libiscsi) still offer them; turning them off is
            // what every target answers.
            "IFMarker" | "OFMarker" => reply_bool(&mut false, value, |_| false),
            "IFMarkInt" | "OFMarkInt" => Reply::Value("Irrelevant".into()),
            "TaskReporting" => match super::text::list(value).find(|v| *v == "RFC3720") {
                Some(v) => Reply::Value(v.into()),
                None => Reply::Reject,
            },
            "iSCSIProtocolLevel" => reply_number(value, 0, 31, |v| v.min(1)),
            // Keys only the target declares.
            "TargetAlias" | "TargetAddress" | "TargetPortalGroupTag" => Reply::Reject,
            "SendTargets" => Reply::Value("Irrelevant".into()),
            _ => Reply::NotUnderstood,
        }
    }
}

/// What the target answers to one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Nothing (declarative key, or an answer to our own declaration).
    None,
    Value(String),
    /// `key=Reject`: the value was malformed or out of range.
    Reject,
    /// `key=NotUnderstood`.
    NotUnderstood,
}

impl Reply {
    /// The value to send back, if any.
    pub fn text(&self) -> Option<&str> {
        match self {
            Reply::None => None,
            Reply::Value(v) => Some(v),
            Reply::Reject => Some("Reject"),
            Reply::NotUnderstood => Some("NotUnderstood"),
        }
    }
}

fn set_if_value<T: TryFrom<u32>>(reply: &Reply, field: &mut T) {
    if let Reply::Value(v) = reply {
        if let Some(n) = v.parse::<u32>().ok().and_then(|n| T::try_from(n).ok()) {
            *field = n;
        }
    }
}

fn reply_digest(field: &mut bool, value: &str, discovery: bool) -> Reply {
    let offered: Vec<&str> = super::text::list(value).collect();
    let wants_none = offered.contains(&"None");
    let choice = if discovery && wants_none {
        Some("None")
    } else {
        offered
            .into_iter()
            .find(|v| matches!(*v, "None" | "CRC32C"))
    };
    match choice {
        Some(v) => {
            *field = v == "CRC32C";
            Reply::Value(v.into())
        }
        None => Reply::Reject,
    }
}

fn reply_bool(field: &mut bool, value: &str, result: impl Fn(bool) -> bool) -> Reply {
    let offered = match value {
        "Yes" => true,
        "No" => false,
        _ => return Reply::Reject,
    };
    *field = result(offered);
    Reply::Value(if *field { "Yes" } else { "No" }.into())
}

fn reply_number(value: &str, min: u32, max: u32, result: impl Fn(u32) -> u32) -> Reply {
    match number(value, min, max) {
        Some(v) => Reply::Value(result(v).to_string()),
        None => Reply::Reject,
    }
}

/// A numerical value in decimal or `0x` hex (§6.1), within `min..=max`.
pub fn number(value: &str, min: u32, max: u32) -> Option<u32> {
    let n = match value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        Some(hex) => u64::from_str_radix(hex, 16).ok()?,
        None if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
            value.parse::<u64>().ok()?
        }
        None => return None,
    };
    let n = u32::try_from(n).ok()?;
    (min..=max).contains(&n).then_some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(p: &mut Params, key: &str, value: &str) -> Option<String> {
        p.answer(&Limits::default(), key, value, false)
            .text()
            .map(str::to_owned)
    }

    #[test]
    fn ipxe_key_set() {
        let mut p = Params::new();
        let keys = [
            ("HeaderDigest", "None", Some("None")),
            ("DataDigest", "None", Some("None")),
            ("MaxConnections", "1", Some("1")),
            ("InitialR2T", "Yes", Some("Yes")),
            ("ImmediateData", "No", Some("No")),
            ("MaxRecvDataSegmentLength", "8192", None),
            ("MaxBurstLength", "262144", Some("262144")),
            ("FirstBurstLength", "65536", Some("65536")),
            ("DefaultTime2Wait", "0", Some("2")),
            ("DefaultTime2Retain", "0", Some("0")),
            ("MaxOutstandingR2T", "1", Some("1")),
            ("DataPDUInOrder", "Yes", Some("Yes")),
            ("DataSequenceInOrder", "Yes", Some("Yes")),
            ("ErrorRecoveryLevel", "0", Some("0")),
        ];
        for (k, v, want) in keys {
            assert_eq!(answer(&mut p, k, v).as_deref(), want, "{k}");
        }
        assert!(!p.immediate_data);
        assert_eq!(p.initiator_mrdsl, 8192);
    }

    #[test]
    fn windows_and_libiscsi_extras() {
        let mut p = Params::new();
        assert_eq!(answer(&mut p, "IFMarker", "No").as_deref(), Some("No"));
        assert_eq!(answer(&mut p, "OFMarker", "No").as_deref(), Some("No"));
        assert_eq!(
            answer(&mut p, "OFMarkInt", "2048~65535").as_deref(),
            Some("Irrelevant")
        );
        assert_eq!(
            answer(&mut p, "HeaderDigest", "None,CRC32C").as_deref(),
            Some("None")
        );
        assert_eq!(
            answer(&mut p, "DataDigest", "CRC32C,None").as_deref(),
            Some("CRC32C")
        );
        assert!(p.digests.data && !p.digests.header);
        assert_eq!(
            answer(&mut p, "iSCSIProtocolLevel", "2").as_deref(),
            Some("1")
        );
        assert_eq!(
            answer(&mut p, "TaskReporting", "RFC3720").as_deref(),
            Some("RFC3720")
        );
    }

    #[test]
    fn bc_20_2_mrdsl_maximum_is_not_rounded() {
        let mut p = Params::new();
        assert_eq!(answer(&mut p, "MaxRecvDataSegmentLength", "16777215"), None);
        assert_eq!(p.initiator_mrdsl, 16_777_215);
        assert_eq!(
            answer(&mut p, "MaxRecvDataSegmentLength", "16777216").as_deref(),
            Some("Reject")
        );
        assert_eq!(
            answer(&mut p, "MaxRecvDataSegmentLength", "511").as_deref(),
            Some("Reject")
        );
        assert_eq!(p.initiator_mrdsl, 16_777_215);
    }

    #[test]
    fn bc_28_c_invalid_value_is_rejected_and_default_kept() {
        let mut p = Params::new();
        assert_eq!(
            answer(&mut p, "ImmediateData", "Maybe").as_deref(),
            Some("Reject")
        );
        assert!(p.immediate_data);
        assert_eq!(
            answer(&mut p, "MaxBurstLength", "lots").as_deref(),
            Some("Reject")
        );
        assert_eq!(p.max_burst_length, 262_144);
    }

    #[test]
    fn bc_28_a_unknown_and_private_keys() {
        let mut p = Params::new();
        assert_eq!(
            answer(&mut p, "FooBar", "1").as_deref(),
            Some("NotUnderstood")
        );
        assert_eq!(
            answer(&mut p, "X-com.example.Tweak", "on").as_deref(),
            Some("NotUnderstood")
        );
        assert_eq!(
            answer(&mut p, "X#org.example", "on").as_deref(),
            Some("NotUnderstood")
        );
    }

    #[test]
    fn bc_21_1_discovery_prefers_no_digest() {
        let mut p = Params::new();
        let r = p.answer(&Limits::default(), "HeaderDigest", "CRC32C,None", true);
        assert_eq!(r, Reply::Value("None".into()));
        let r = p.answer(&Limits::default(), "HeaderDigest", "CRC32C", true);
        assert_eq!(r, Reply::Value("CRC32C".into()));
        assert_eq!(
            p.answer(&Limits::default(), "DataDigest", "MD5", false),
            Reply::Reject
        );
    }

    #[test]
    fn min_max_and_or_rules() {
        let limits = Limits {
            max_burst_length: 65536,
            first_burst_length: 8192,
            initial_r2t: false,
            immediate_data: false,
            max_outstanding_r2t: 4,
            ..Limits::default()
        };
        let mut p = Params::new();
        let mut a = |k: &str, v: &str| p.answer(&limits, k, v, false);
        assert_eq!(a("MaxBurstLength", "1048576"), Reply::Value("65536".into()));
        assert_eq!(a("FirstBurstLength", "262144"), Reply::Value("8192".into()));
        assert_eq!(a("InitialR2T", "No"), Reply::Value("No".into()));
        assert_eq!(a("ImmediateData", "Yes"), Reply::Value("No".into()));
        assert_eq!(a("MaxOutstandingR2T", "16"), Reply::Value("4".into()));
        assert_eq!(a("MaxConnections", "8"), Reply::Value("1".into()));
        assert_eq!(a("ErrorRecoveryLevel", "2"), Reply::Value("0".into()));
        assert_eq!(a("DefaultTime2Wait", "10"), Reply::Value("10".into()));
        assert_eq!(a("MaxConnections", "0"), Reply::Reject);
        assert_eq!(p.max_outstanding_r2t, 4);
        assert_eq!(number("0x200", 512, 1024), Some(512));
        assert_eq!(number("", 0, 1), None);
        assert_eq!(number("99999999999999999999", 0, u32::MAX), None);
    }
}
