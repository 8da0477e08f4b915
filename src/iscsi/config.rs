//! The `[iscsi]` section of the configuration file.
//!
//! Parsed by serde with `deny_unknown_fields` like the rest of the file;
//! [`IscsiConfig::validate`] checks what the types cannot and names the dotted
//! key at fault. Whether each LUN's backing store exists and how large it is
//! are decided when the engine opens it, not here: validation touches no
//! files.
//!
//! ```toml
//! [iscsi]
//! listen = ["127.0.0.1:3260"]
//! [[iscsi.target]]
//! iqn = "iqn.2026-12.org.example:disk1"
//! luns = [{ path = "/dev/zvol/tank/disk1", read_only = false }]
//! chap = { user = "node1", secret = "twelve+bytes" }
//! initiators = ["iqn.2026-12.org.example:node1"]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::chap::Credentials;
use super::login::TargetEntry;
use super::negotiate::{Limits, MAX_DATA_SEGMENT, MIN_DATA_SEGMENT};
use super::session::Timers;

/// `[iscsi]`: the iSCSI target.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IscsiConfig {
    #[serde(default = "IscsiConfig::default_listen")]
    pub listen: Vec<SocketAddr>,
    /// `[[iscsi.target]]`, one per exported target.
    #[serde(default)]
    pub target: Vec<TargetConfig>,
    /// Idle time after which the target pings the initiator with a NOP-In.
    #[serde(
        default = "IscsiConfig::default_nop_interval",
        with = "humantime_serde"
    )]
    pub nop_interval: Duration,
    /// How long a ping may go unanswered before the connection is dropped.
    #[serde(default = "IscsiConfig::default_nop_timeout", with = "humantime_serde")]
    pub nop_timeout: Duration,
    /// How long a login may take from the first PDU to full feature phase.
    #[serde(
        default = "IscsiConfig::default_login_timeout",
        with = "humantime_serde"
    )]
    pub login_timeout: Duration,
    /// Longest data segment the target accepts (declared, RFC 7143 §13.12).
    #[serde(default = "IscsiConfig::default_mrdsl")]
    pub max_recv_data_segment_length: u32,
    /// Largest burst the target grants (RFC 7143 §13.13).
    #[serde(default = "IscsiConfig::default_max_burst")]
    pub max_burst_length: u32,
    /// Largest unsolicited burst accepted (RFC 7143 §13.14).
    #[serde(default = "IscsiConfig::default_first_burst")]
    pub first_burst_length: u32,
    /// Whether data may ride in the SCSI Command PDU (RFC 7143 §13.11).
    #[serde(default = "IscsiConfig::yes")]
    pub immediate_data: bool,
    /// Whether writes wait for an R2T before any Data-Out (RFC 7143 §13.10).
    #[serde(default = "IscsiConfig::yes")]
    pub initial_r2t: bool,
    /// R2Ts outstanding per command (RFC 7143 §13.17).
    #[serde(default = "IscsiConfig::default_max_outstanding_r2t")]
    pub max_outstanding_r2t: u16,
    /// Commands in flight per session (the CmdSN window).
    #[serde(default = "IscsiConfig::default_queue_depth")]
    pub queue_depth: u32,
    /// How Data-In bytes leave: `sendfile` (in the kernel, where the OS can
    /// send from the store) or `pread` (through a buffer; also what data
    /// digests use). Both send the same bytes.
    #[serde(default)]
    pub read_path: ReadPath,
}

/// See [`IscsiConfig::read_path`].
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReadPath {
    #[default]
    Sendfile,
    Pread,
}

/// `[[iscsi.target]]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub iqn: String,
    /// LUN 0, 1, ... in order.
    pub luns: Vec<LunConfig>,
    /// Initiators must authenticate with these (one-way CHAP).
    pub chap: Option<ChapConfig>,
    /// The target proves itself with these when the initiator asks.
    pub mutual_chap: Option<ChapConfig>,
    /// Initiator names allowed to log in; empty allows all.
    #[serde(default)]
    pub initiators: Vec<String>,
}

/// One logical unit.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LunConfig {
    /// Image file or block device.
    pub path: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

/// CHAP user and secret.
#[derive(Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChapConfig {
    pub user: String,
    /// Never printed: `dlsd check-config` shows it as `<redacted>`.
    #[serde(serialize_with = "redact")]
    pub secret: String,
}

fn redact<S: serde::Serializer>(_: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("<redacted>")
}

impl std::fmt::Debug for ChapConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChapConfig")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl IscsiConfig {
    fn default_listen() -> Vec<SocketAddr> {
        vec![SocketAddr::from(([0, 0, 0, 0], 3260))]
    }
    fn default_nop_interval() -> Duration {
        Duration::from_secs(15)
    }
    fn default_nop_timeout() -> Duration {
        Duration::from_secs(15)
    }
    fn default_login_timeout() -> Duration {
        Duration::from_secs(15)
    }
    fn default_mrdsl() -> u32 {
        262_144
    }
    fn default_max_burst() -> u32 {
        1_048_576
    }
    fn default_first_burst() -> u32 {
        65_536
    }
    fn yes() -> bool {
        true
    }
    fn default_max_outstanding_r2t() -> u16 {
        1
    }
    fn default_queue_depth() -> u32 {
        128
    }

    /// The negotiation limits these settings describe.
    pub fn limits(&self) -> Limits {
        Limits {
            max_recv_data_segment_length: self.max_recv_data_segment_length,
            max_burst_length: self.max_burst_length,
            first_burst_length: self.first_burst_length,
            immediate_data: self.immediate_data,
            initial_r2t: self.initial_r2t,
            max_outstanding_r2t: self.max_outstanding_r2t,
            queue_depth: self.queue_depth,
        }
    }

    /// The keepalive settings of every session.
    pub fn timers(&self) -> Timers {
        Timers {
            nop_interval: self.nop_interval,
            nop_timeout: self.nop_timeout,
        }
    }

    /// The targets as the login sees them.
    pub fn targets(&self) -> Vec<TargetEntry> {
        let creds = |c: &Option<ChapConfig>| {
            c.as_ref().map(|c| Credentials {
                user: c.user.clone(),
                secret: c.secret.as_bytes().to_vec(),
            })
        };
        self.target
            .iter()
            .map(|t| TargetEntry {
                iqn: t.iqn.clone(),
                chap: creds(&t.chap),
                mutual_chap: creds(&t.mutual_chap),
                initiators: t.initiators.clone(),
            })
            .collect()
    }

    /// Checks what serde's types cannot; the error is (dotted key, reason).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: String, reason: &str| Err((key, reason.to_owned()));
        if self.listen.is_empty() {
            return err("iscsi.listen".into(), "needs at least one address");
        }
        let lengths = [
            (
                "max_recv_data_segment_length",
                self.max_recv_data_segment_length,
            ),
            ("max_burst_length", self.max_burst_length),
            ("first_burst_length", self.first_burst_length),
        ];
        for (key, v) in lengths {
            if !(MIN_DATA_SEGMENT..=MAX_DATA_SEGMENT).contains(&v) {
                return err(format!("iscsi.{key}"), "must be within 512..=16777215");
            }
        }
        if self.first_burst_length > self.max_burst_length {
            return err(
                "iscsi.first_burst_length".into(),
                "must not exceed max_burst_length",
            );
        }
        if self.max_outstanding_r2t == 0 {
            return err(
                "iscsi.max_outstanding_r2t".into(),
                "must be within 1..=65535",
            );
        }
        // The window must fit serial arithmetic (RFC 1982: below 2^31) and
        // stay a sane amount of per-session memory.
        if !(1..=4096).contains(&self.queue_depth) {
            return err("iscsi.queue_depth".into(), "must be within 1..=4096");
        }
        let times = [
            ("nop_interval", self.nop_interval),
            ("nop_timeout", self.nop_timeout),
            ("login_timeout", self.login_timeout),
        ];
        for (key, t) in times {
            if t < Duration::from_millis(100) || t > Duration::from_secs(3600) {
                return err(format!("iscsi.{key}"), "must be within 100ms..=1h");
            }
        }
        for (i, t) in self.target.iter().enumerate() {
            t.validate(&format!("iscsi.target[{i}]"))?;
            if self.target[..i]
                .iter()
                .any(|o| o.iqn.eq_ignore_ascii_case(&t.iqn))
            {
                return err(format!("iscsi.target[{i}].iqn"), "names a target twice");
            }
        }
        Ok(())
    }
}

impl TargetConfig {
    fn validate(&self, at: &str) -> Result<(), (String, String)> {
        let err = |key: &str, reason: &str| Err((format!("{at}.{key}"), reason.to_owned()));
        if let Err(reason) = check_name(&self.iqn) {
            return err("iqn", reason);
        }
        if self.luns.is_empty() {
            return err("luns", "needs at least one LUN");
        }
        // Flat LUN addressing (SAM-5) numbers LUNs up to 16383.
        if self.luns.len() > 16384 {
            return err("luns", "at most 16384 LUNs");
        }
        for (i, name) in self.initiators.iter().enumerate() {
            if let Err(reason) = check_name(name) {
                return err(&format!("initiators[{i}]"), reason);
            }
        }
        for (key, chap) in [("chap", &self.chap), ("mutual_chap", &self.mutual_chap)] {
            if let Some(c) = chap {
                if c.user.is_empty() || c.user.contains('\0') {
                    return err(&format!("{key}.user"), "must be non-empty text");
                }
                // RFC 7143 §12.1.3: at least 96 bits; Windows insists on 12..=16.
                if c.secret.len() < 12 || c.secret.len() > 255 {
                    return err(&format!("{key}.secret"), "must be 12..=255 bytes");
                }
            }
        }
        if let (Some(one), Some(mutual)) = (&self.chap, &self.mutual_chap) {
            // The same secret in both directions lets a man in the middle
            // reflect challenges (RFC 7143 §12.1.3).
            if one.secret == mutual.secret {
                return err("mutual_chap.secret", "must differ from chap.secret");
            }
        }
        if self.mutual_chap.is_some() && self.chap.is_none() {
            return err("mutual_chap", "needs chap as well");
        }
        Ok(())
    }
}

/// iSCSI names (RFC 7143 §4.2.7): `iqn.`, `eui.` or `naa.` form, at most
/// 223 bytes, in the normalised (lower-case) form for `iqn.`.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.len() > 223 {
        return Err("longer than 223 bytes");
    }
    let (kind, rest) = name
        .split_at_checked(4)
        .ok_or("not an iqn., eui. or naa. name")?;
    match kind {
        "iqn." => {
            let ok = rest
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b".-:".contains(&b));
            if rest.is_empty() || !ok {
                return Err("iqn. names are lower-case letters, digits, '.', '-' and ':'");
            }
        }
        "eui." | "naa." => {
            if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err("eui. and naa. names are hexadecimal");
            }
        }
        _ => return Err("not an iqn., eui. or naa. name"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        iscsi: IscsiConfig,
    }

    fn parse(text: &str) -> Result<IscsiConfig, String> {
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        f.iscsi.validate().map_err(|(k, _)| k)?;
        Ok(f.iscsi)
    }

    const MINIMAL: &str = r#"
[iscsi]
listen = ["127.0.0.1:3260", "[::1]:3260"]
[[iscsi.target]]
iqn = "iqn.2026-12.org.example:disk1"
luns = [{ path = "/dev/zvol/tank/disk1", read_only = false }, { path = "/srv/b.img" }]
"#;

    #[test]
    fn issue_example_parses_with_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.target[0].luns.len(), 2);
        assert!(!c.target[0].luns[1].read_only);
        assert_eq!(c.queue_depth, 128);
        assert_eq!(c.limits().max_recv_data_segment_length, 262_144);
        assert_eq!(c.timers().nop_timeout, Duration::from_secs(15));
        let entries = c.targets();
        assert_eq!(entries[0].iqn, "iqn.2026-12.org.example:disk1");
        assert!(entries[0].chap.is_none());
    }

    #[test]
    fn default_listen() {
        let c = parse("[iscsi]\n").unwrap();
        assert_eq!(c.listen, vec!["0.0.0.0:3260".parse().unwrap()]);
    }

    #[test]
    fn chap_and_acl() {
        let text = format!(
            "{MINIMAL}chap = {{ user = \"u\", secret = \"twelve+bytes\" }}\n\
             mutual_chap = {{ user = \"t\", secret = \"other+secret\" }}\n\
             initiators = [\"iqn.2026-12.org.example:node1\"]\n"
        );
        let c = parse(&text).unwrap();
        let e = &c.targets()[0];
        assert_eq!(e.chap.as_ref().unwrap().secret, b"twelve+bytes");
        assert!(!format!("{:?}", c.target[0].chap).contains("twelve"));
    }

    #[test]
    fn errors_name_the_key() {
        let bad = [
            (format!("{MINIMAL}chap = {{ user = \"u\", secret = \"short\" }}\n"), "iscsi.target[0].chap.secret"),
            (format!("{MINIMAL}mutual_chap = {{ user = \"u\", secret = \"twelve+bytes\" }}\n"), "iscsi.target[0].mutual_chap"),
            (MINIMAL.replace("iqn.2026-12.org.example:disk1", "IQN.Bad"), "iscsi.target[0].iqn"),
            (MINIMAL.replace("listen = [", "max_burst_length = 100\nlisten = ["), "iscsi.max_burst_length"),
            (MINIMAL.replace("listen = [", "first_burst_length = 1048576\nmax_burst_length = 65536\nlisten = ["), "iscsi.first_burst_length"),
            (format!("{MINIMAL}[[iscsi.target]]\niqn = \"iqn.2026-12.org.example:disk1\"\nluns = [{{ path = \"/x\" }}]\n"), "iscsi.target[1].iqn"),
            (MINIMAL.replace("luns = [{ path = \"/dev/zvol/tank/disk1\", read_only = false }, { path = \"/srv/b.img\" }]", "luns = []"), "iscsi.target[0].luns"),
        ];
        for (text, key) in bad {
            assert_eq!(parse(&text).unwrap_err(), key);
        }
        assert!(parse("[iscsi]\nlistne = []\n")
            .unwrap_err()
            .contains("listne"));
    }

    #[test]
    fn names() {
        assert!(check_name("iqn.2026-01.example:disk0").is_ok());
        assert!(check_name("eui.02004567A425678D").is_ok());
        assert!(check_name("naa.52004567BA64678D").is_ok());
        assert!(check_name("iqn.").is_err());
        assert!(check_name("iq").is_err());
        assert!(check_name(&format!("iqn.{}", "a".repeat(230))).is_err());
    }
}
