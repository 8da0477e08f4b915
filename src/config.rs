//! The TOML configuration: its schema, its defaults and its validation.
//!
//! Loading is two steps. serde parses the file with `deny_unknown_fields`, so a
//! misspelt key is an error that names the key and its line, never a silently
//! ignored setting. Then [`Config::validate`] checks what the types cannot say
//! (ranges, that the TFTP root is a directory). Both failures come back as a
//! [`ConfigError`] carrying the file and the dotted key, which is what an
//! operator needs to fix it.
//!
//! Each service section is optional: a section that is present turns the
//! service on. Every key and default is listed in README.md.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub engine: EngineConfig,
    pub tftp: Option<TftpConfig>,
    pub dhcp: Option<crate::dhcp::config::DhcpConfig>,
    pub iscsi: Option<crate::iscsi::config::IscsiConfig>,
    #[serde(default)]
    pub http: HttpConfig,
}

/// `[http]`: the control thread's endpoint (/metrics, /health, status).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub enabled: bool,
    /// Port 0 picks a free port (logged at start), for tests.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9100)),
        }
    }
}

/// Upper bound of `engine.busy_poll`: a few round trips of a LAN.
pub const MAX_BUSY_POLL: Duration = Duration::from_millis(1);

/// `[engine]`: the worker threads that own every dataplane socket.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Worker threads; 0 (the default) means one per online core.
    pub workers: usize,
    /// Pin worker N to core N (modulo the cores this process may run on).
    pub pin_workers: bool,
    /// How long transfers in flight may run on after SIGINT/SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// File that `dlsd serve` writes its PID to and `dlsd reload` reads.
    pub pid_file: Option<PathBuf>,
    /// After a wakeup that found work, how long a worker keeps polling
    /// without sleeping before it blocks again; 0 turns it off. See
    /// `engine::worker::next_timeout`.
    #[serde(with = "humantime_serde")]
    pub busy_poll: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: 0,
            pin_workers: true,
            shutdown_grace: Duration::from_secs(10),
            pid_file: None,
            busy_poll: Duration::from_micros(50),
        }
    }
}

/// `[tftp]`: the read-only TFTP service.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TftpConfig {
    #[serde(default = "TftpConfig::default_listen")]
    pub listen: Vec<SocketAddr>,
    /// Directory served; nothing outside it is ever read.
    pub root: PathBuf,
    /// Largest blksize granted (RFC 2348); larger requests are clamped to it.
    #[serde(default = "TftpConfig::default_max_blksize")]
    pub max_blksize: u16,
    /// Largest windowsize granted (RFC 7440).
    #[serde(default = "TftpConfig::default_max_windowsize")]
    pub max_windowsize: u16,
    /// Largest window in bytes (windowsize x blksize); see
    /// `tftp::negotiate::Limits::max_window_bytes`.
    #[serde(default = "TftpConfig::default_max_window_bytes")]
    pub max_window_bytes: u32,
    /// Retransmission timeout when the client does not ask for one (RFC 2349).
    #[serde(default = "TftpConfig::default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Retransmissions of one window before the transfer is abandoned.
    #[serde(default = "TftpConfig::default_retries")]
    pub retries: u32,
    /// Transfers in flight across all workers; requests over it get an ERROR.
    #[serde(default = "TftpConfig::default_max_transfers")]
    pub max_transfers: usize,
    /// Block number that follows 65535: 0 (what tftp-hpa, curl, atftp and
    /// U-Boot expect) or 1 (some old firmware).
    #[serde(default)]
    pub rollover: u8,
    /// How DATA leaves the worker: `auto` picks the fastest the kernel offers.
    #[serde(default)]
    pub send_path: SendPath,
}

impl TftpConfig {
    fn default_listen() -> Vec<SocketAddr> {
        vec![SocketAddr::from(([0, 0, 0, 0], 69))]
    }
    fn default_max_blksize() -> u16 {
        65464
    }
    fn default_max_windowsize() -> u16 {
        64
    }
    fn default_max_window_bytes() -> u32 {
        crate::tftp::negotiate::DEFAULT_MAX_WINDOW_BYTES
    }
    fn default_timeout() -> Duration {
        Duration::from_secs(1)
    }
    fn default_retries() -> u32 {
        5
    }
    fn default_max_transfers() -> usize {
        4096
    }
}

/// The DATA send paths. All serve identical bytes; `auto` is the fastest one
/// the kernel supports, the others exist to compare and to test each path.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SendPath {
    /// UDP GSO where the kernel has it, else `sendmmsg`.
    #[default]
    Auto,
    /// One `sendmsg` with `UDP_SEGMENT` per window (Linux >= 4.18).
    Gso,
    /// One `sendmmsg` per window, each message a header plus a slice of the map.
    Sendmmsg,
    /// One `sendmsg` per DATA packet, header plus a slice of the map.
    Sendmsg,
    /// `pread` into a buffer, then `sendto`; no mapping at all.
    Pread,
}

/// A configuration that could not be used, with where and why.
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted key (`tftp.max_blksize`), or empty when the file itself failed.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(
                f,
                "{}: key `{}`: {}",
                self.file.display(),
                self.key,
                self.reason
            )
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads, parses and validates `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            key: String::new(),
            reason: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates `text`; `path` only labels errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError {
            file: path.to_owned(),
            key: String::new(),
            // toml's message already names the key and shows the line.
            reason: e.to_string().trim_end().to_owned(),
        })?;
        config.validate().map_err(|(key, reason)| ConfigError {
            file: path.to_owned(),
            key,
            reason,
        })?;
        Ok(config)
    }

    /// Checks what serde's types cannot; the error is (dotted key, reason).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: &str, reason: String| Err((key.to_owned(), reason));
        if let Some(dhcp) = &self.dhcp {
            dhcp.validate()?;
            if dhcp.boot.generate_ipxe_script && self.tftp.is_none() {
                return err(
                    "dhcp.boot.generate_ipxe_script",
                    "needs a [tftp] section to serve the script".into(),
                );
            }
        }
        if let Some(iscsi) = &self.iscsi {
            iscsi.validate()?;
        }
        if self.engine.workers > 1024 {
            return err("engine.workers", "must be at most 1024".into());
        }
        // A worker spins for this long after every turn with work: a long
        // spin would keep a core busy on an idle server.
        if self.engine.busy_poll > MAX_BUSY_POLL {
            return err(
                "engine.busy_poll",
                format!("must be at most {MAX_BUSY_POLL:?} (0s turns it off)"),
            );
        }
        if let Some(tftp) = &self.tftp {
            if tftp.listen.is_empty() {
                return err("tftp.listen", "needs at least one address".into());
            }
            match std::fs::metadata(&tftp.root) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return err(
                        "tftp.root",
                        format!("{} is not a directory", tftp.root.display()),
                    )
                }
                Err(e) => return err("tftp.root", format!("{}: {e}", tftp.root.display())),
            }
            if tftp.max_blksize < 8 {
                return err("tftp.max_blksize", "must be within 8..=65464".into());
            }
            if tftp.max_blksize > 65464 {
                return err("tftp.max_blksize", "must be within 8..=65464".into());
            }
            // A window must stay well below 65536 blocks so that a 16-bit ACK
            // maps to exactly one block of the window.
            if tftp.max_windowsize == 0 || tftp.max_windowsize > 1024 {
                return err("tftp.max_windowsize", "must be within 1..=1024".into());
            }
            if tftp.max_window_bytes < 512 || tftp.max_window_bytes > 64 << 20 {
                return err("tftp.max_window_bytes", "must be within 512..=64MiB".into());
            }
            if tftp.timeout < Duration::from_millis(10) || tftp.timeout > Duration::from_secs(255) {
                return err("tftp.timeout", "must be within 10ms..=255s".into());
            }
            if tftp.retries == 0 || tftp.retries > 100 {
                return err("tftp.retries", "must be within 1..=100".into());
            }
            if tftp.max_transfers == 0 {
                return err("tftp.max_transfers", "must be at least 1".into());
            }
            if tftp.rollover > 1 {
                return err("tftp.rollover", "must be 0 or 1".into());
            }
        }
        Ok(())
    }

    /// True when at least one service section is present.
    pub fn has_service(&self) -> bool {
        self.tftp.is_some() || self.dhcp.is_some() || self.iscsi.is_some()
    }

    /// Worker threads to start: the configured count, or one per online core.
    pub fn worker_count(&self) -> usize {
        match self.engine.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// The effective configuration, defaults filled in, as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn minimal_tftp_gets_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let c = parse(&format!("[tftp]\nroot = {:?}\n", dir.path())).unwrap();
        let t = c.tftp.unwrap();
        assert_eq!(t.listen, vec!["0.0.0.0:69".parse().unwrap()]);
        assert_eq!(t.max_windowsize, 64);
        assert_eq!(t.send_path, SendPath::Auto);
        assert_eq!(c.engine.workers, 0);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("[engine]\nworkerz = 2\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("test.toml"), "{msg}");
        assert!(msg.contains("workerz"), "{msg}");
    }

    #[test]
    fn range_error_names_key() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("[tftp]\nroot = {:?}\nmax_blksize = 4\n", dir.path());
        let e = parse(&text).unwrap_err();
        assert_eq!(e.key, "tftp.max_blksize");
    }

    #[test]
    fn missing_root_is_refused() {
        let e = parse("[tftp]\nroot = \"/nonexistent/dls-test\"\n").unwrap_err();
        assert_eq!(e.key, "tftp.root");
    }

    #[test]
    fn ipv6_listen_and_durations() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[engine]\nshutdown_grace = \"2s\"\n[tftp]\nlisten = [\"[::1]:6969\"]\nroot = {:?}\ntimeout = \"500ms\"\n",
            dir.path()
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.engine.shutdown_grace, Duration::from_secs(2));
        assert_eq!(c.tftp.unwrap().timeout, Duration::from_millis(500));
    }

    #[test]
    fn busy_poll_is_bounded() {
        let c = parse("[engine]\nbusy_poll = \"200us\"\n").unwrap();
        assert_eq!(c.engine.busy_poll, Duration::from_micros(200));
        assert_eq!(
            parse("").unwrap().engine.busy_poll,
            Duration::from_micros(50)
        );
        assert!(parse("[engine]\nbusy_poll = \"0s\"\n").is_ok());
        let e = parse("[engine]\nbusy_poll = \"5s\"\n").unwrap_err();
        assert_eq!(e.key, "engine.busy_poll");
    }
}
