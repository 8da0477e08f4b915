//! `[dhcp]`: the DHCP and proxyDHCP service, its schema, defaults and checks.
//!
//! Parsing follows src/config.rs: serde with `deny_unknown_fields`, then
//! [`DhcpConfig::validate`] for what types cannot say, reporting a dotted key
//! and a reason. Boot values are either file names on the TFTP root (sent in
//! the BOOTP `file` field and option 67, with siaddr pointing at this server)
//! or `http://`/`https://` URLs (sent as they are).
//!
//! One subnet per server for now: relayed requests are answered only when
//! giaddr falls in `subnet`. Several subnets are not supported yet.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest boot value: it must fit the 128-byte BOOTP `file` field with its
/// NUL, because some firmware reads only that field (RFC 2131 section 2).
pub const MAX_BOOT_VALUE_LEN: usize = 127;

/// Largest pool; the allocator scans it linearly on a DISCOVER.
pub const MAX_RANGE_LEN: u32 = 65536;

/// `[dhcp]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DhcpConfig {
    /// The only interface listened on; nothing is answered anywhere else.
    pub interface: String,
    #[serde(default)]
    pub mode: Mode,
    /// First and last address handed out (inclusive). Required in `server` mode.
    #[serde(default)]
    pub range: Option<[Ipv4Addr; 2]>,
    /// The served subnet: local requests and relays (giaddr) must fall in it.
    #[serde(default)]
    pub subnet: Option<Ipv4Net>,
    /// Option 3.
    #[serde(default)]
    pub router: Option<Ipv4Addr>,
    /// Option 6.
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// Option 15.
    #[serde(default)]
    pub domain: Option<String>,
    /// Option 51; T1 (58) and T2 (59) are 1/2 and 7/8 of it (RFC 2131 4.4.5).
    #[serde(default = "DhcpConfig::default_lease_time", with = "humantime_serde")]
    pub lease_time: Duration,
    /// The lease journal file (its directory must exist).
    #[serde(default = "DhcpConfig::default_lease_store")]
    pub lease_store: PathBuf,
    /// Server identifier (option 54); defaults to the address of the
    /// interface the request came in on.
    #[serde(default)]
    pub server_address: Option<Ipv4Addr>,
    /// siaddr (next-server) for TFTP boot files; defaults to the server identifier.
    #[serde(default)]
    pub next_server: Option<Ipv4Addr>,
    /// Prefix for HTTP-boot clients (arch 15/16/19) whose boot value is a
    /// file name: the URL is this plus the name. Defaults to
    /// `http://<server identifier>/`.
    #[serde(default)]
    pub http_base_url: Option<String>,
    /// How long an OFFERed address stays reserved for its client.
    #[serde(
        default = "DhcpConfig::default_offer_timeout",
        with = "humantime_serde"
    )]
    pub offer_timeout: Duration,
    /// How long a DECLINEd address is kept out of the pool (RFC 2131 4.3.3).
    #[serde(
        default = "DhcpConfig::default_decline_quarantine",
        with = "humantime_serde"
    )]
    pub decline_quarantine: Duration,
    #[serde(default)]
    pub boot: BootConfig,
    #[serde(default, rename = "host")]
    pub hosts: Vec<HostConfig>,
}

/// What the service does with addresses.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Assign addresses from `range` and reservations, plus boot information.
    #[default]
    Server,
    /// Assign nothing; give PXE clients boot information beside another
    /// DHCP server (PXE 2.1 proxyDHCP, ports 67 and 4011).
    Proxy,
}

/// `[dhcp.boot]`: boot values by client architecture (option 93).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BootConfig {
    /// Arch 0, x86 BIOS.
    pub bios: Option<String>,
    /// Arch 6, ia32 UEFI; such clients get nothing when unset.
    pub uefi_ia32: Option<String>,
    /// Arch 7 and 9 (x64 UEFI; 9 is EBC in the registry but x64 in the field).
    pub uefi_x64: Option<String>,
    /// Arch 11, arm64 UEFI.
    pub uefi_arm64: Option<String>,
    /// What a client that is already iPXE gets instead of an iPXE binary.
    pub ipxe_script: Option<String>,
    /// Serve, under the `ipxe_script` name, a script dlsd generates from
    /// `[[dhcp.host]]` root paths (src/ipxe.rs) instead of a file on the root.
    pub generate_ipxe_script: bool,
}

/// `[[dhcp.host]]`: a reservation and per-host boot overrides.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    pub mac: Mac,
    /// Reserved address; must lie in `subnet` (it may lie outside `range`).
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// Option 12.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Option 17, e.g. `iscsi:SERVER::::IQN` for iPXE `sanboot`.
    #[serde(default)]
    pub root_path: Option<String>,
    /// Boot value for this host whatever its architecture.
    #[serde(default)]
    pub boot: Option<String>,
    /// iPXE script for this host.
    #[serde(default)]
    pub ipxe_script: Option<String>,
}

/// An Ethernet hardware address, written `52:54:00:00:00:01`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Mac {
    type Err = String;

    fn from_str(s: &str) -> Result<Mac, String> {
        let mut mac = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut mac {
            let part = parts
                .next()
                .ok_or_else(|| format!("`{s}`: too few bytes"))?;
            if part.len() != 2 {
                return Err(format!("`{s}`: each byte is two hex digits"));
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| format!("`{s}`: not hex"))?;
        }
        if parts.next().is_some() {
            return Err(format!("`{s}`: too many bytes"));
        }
        Ok(Mac(mac))
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Mac, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl DhcpConfig {
    fn default_lease_time() -> Duration {
        Duration::from_secs(3600)
    }
    fn default_lease_store() -> PathBuf {
        PathBuf::from("/var/lib/dls/leases")
    }
    fn default_offer_timeout() -> Duration {
        Duration::from_secs(30)
    }
    fn default_decline_quarantine() -> Duration {
        Duration::from_secs(600)
    }

    /// A minimal configuration for `interface`, every default filled in.
    pub fn new(interface: &str, mode: Mode) -> DhcpConfig {
        DhcpConfig {
            interface: interface.to_owned(),
            mode,
            range: None,
            subnet: None,
            router: None,
            dns: Vec::new(),
            domain: None,
            lease_time: Self::default_lease_time(),
            lease_store: Self::default_lease_store(),
            server_address: None,
            next_server: None,
            http_base_url: None,
            offer_timeout: Self::default_offer_timeout(),
            decline_quarantine: Self::default_decline_quarantine(),
            boot: BootConfig::default(),
            hosts: Vec::new(),
        }
    }

    /// Checks what serde's types cannot; the error is (dotted key, reason).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: &str, reason: &str| Err((format!("dhcp.{key}"), reason.to_owned()));
        if self.interface.is_empty() || self.interface.len() > 15 {
            return err("interface", "must be an interface name of 1..=15 bytes");
        }
        if self.mode == Mode::Server {
            let Some(subnet) = self.subnet else {
                return err("subnet", "is required in server mode");
            };
            let Some([first, last]) = self.range else {
                return err("range", "is required in server mode");
            };
            if u32::from(first) > u32::from(last) {
                return err("range", "first address is above the last");
            }
            if !subnet.contains(&first) || !subnet.contains(&last) {
                return err("range", "must lie inside `subnet`");
            }
            if u32::from(last) - u32::from(first) >= MAX_RANGE_LEN {
                return err("range", "must hold at most 65536 addresses");
            }
        }
        if let Some(router) = self.router {
            if self.subnet.is_some_and(|s| !s.contains(&router)) {
                return err("router", "must lie inside `subnet`");
            }
        }
        if self.lease_time < Duration::from_secs(60) || self.lease_time.as_secs() > u32::MAX.into()
        {
            return err("lease_time", "must be within 1m..=136y");
        }
        if self.offer_timeout.is_zero() || self.offer_timeout > Duration::from_secs(300) {
            return err("offer_timeout", "must be within 1s..=5m");
        }
        if self.decline_quarantine.as_secs() > u32::MAX.into() {
            return err("decline_quarantine", "is too long");
        }
        if self.dns.len() > 8 {
            return err("dns", "at most 8 servers");
        }
        if self
            .domain
            .as_ref()
            .is_some_and(|d| d.is_empty() || d.len() > 253)
        {
            return err("domain", "must be 1..=253 bytes");
        }
        if let Some(url) = &self.http_base_url {
            if !is_url(url) {
                return err("http_base_url", "must start with http:// or https://");
            }
        }
        validate_boot(&self.boot).map_err(|(k, r)| (format!("dhcp.boot.{k}"), r))?;
        self.validate_hosts()
    }

    fn validate_hosts(&self) -> Result<(), (String, String)> {
        for (i, host) in self.hosts.iter().enumerate() {
            let err =
                |key: &str, reason: &str| Err((format!("dhcp.host[{i}].{key}"), reason.into()));
            if self.hosts[..i].iter().any(|h| h.mac == host.mac) {
                return err("mac", "appears in two hosts");
            }
            if let Some(ip) = host.ip {
                if self.hosts[..i].iter().any(|h| h.ip == Some(ip)) {
                    return err("ip", "is reserved for two hosts");
                }
                if self.subnet.is_some_and(|s| !s.contains(&ip)) {
                    return err("ip", "must lie inside `subnet`");
                }
            }
            if host
                .hostname
                .as_ref()
                .is_some_and(|h| h.is_empty() || h.len() > 63)
            {
                return err("hostname", "must be 1..=63 bytes");
            }
            if host
                .hostname
                .as_ref()
                .is_some_and(|h| h.bytes().any(|b| b.is_ascii_control()))
            {
                return err("hostname", "must not contain control characters");
            }
            if host
                .root_path
                .as_ref()
                .is_some_and(|p| p.is_empty() || p.len() > 255)
            {
                return err("root_path", "must be 1..=255 bytes");
            }
            // The generated iPXE script puts the root path on a `sanboot`
            // line; a space or newline would split it into other commands.
            if host.root_path.as_ref().is_some_and(|p| {
                p.bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            }) {
                return err("root_path", "must not contain spaces or control characters");
            }
            for (key, value) in [("boot", &host.boot), ("ipxe_script", &host.ipxe_script)] {
                if let Some(v) = value {
                    check_boot_value(v).or_else(|r| err(key, &r))?;
                }
            }
        }
        Ok(())
    }

    /// The reservation and overrides for `mac`, if configured.
    pub fn host(&self, mac: &Mac) -> Option<&HostConfig> {
        self.hosts.iter().find(|h| &h.mac == mac)
    }
}

fn validate_boot(boot: &BootConfig) -> Result<(), (String, String)> {
    let fields = [
        ("bios", &boot.bios),
        ("uefi_ia32", &boot.uefi_ia32),
        ("uefi_x64", &boot.uefi_x64),
        ("uefi_arm64", &boot.uefi_arm64),
        ("ipxe_script", &boot.ipxe_script),
    ];
    for (key, value) in fields {
        if let Some(v) = value {
            check_boot_value(v).map_err(|r| (key.to_owned(), r))?;
        }
    }
    if boot.generate_ipxe_script {
        let reason = match &boot.ipxe_script {
            None => Some("needs `ipxe_script`, the name the generated script is served under"),
            Some(v) if is_url(v) => Some("needs `ipxe_script` to be a TFTP file name, not a URL"),
            Some(v) if crate::tftp::path::resolve(v.as_bytes()).is_err() => {
                Some("needs `ipxe_script` to be a plain name below the TFTP root")
            }
            Some(_) => None,
        };
        if let Some(reason) = reason {
            return Err(("generate_ipxe_script".to_owned(), reason.to_owned()));
        }
    }
    Ok(())
}

fn check_boot_value(v: &str) -> Result<(), String> {
    if v.is_empty() || v.len() > MAX_BOOT_VALUE_LEN {
        return Err(format!("must be 1..={MAX_BOOT_VALUE_LEN} bytes"));
    }
    if v.bytes().any(|b| b == 0 || b.is_ascii_control()) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// Whether a boot value is a URL rather than a name on the TFTP root.
pub fn is_url(v: &str) -> bool {
    v.starts_with("http://") || v.starts_with("https://")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Wrapper {
        dhcp: DhcpConfig,
    }

    const ISSUE_EXAMPLE: &str = r#"
[dhcp]
interface = "dls0"
mode = "server"
range = ["10.77.0.100", "10.77.0.199"]
subnet = "10.77.0.0/24"
router = "10.77.0.1"
dns = ["10.77.0.1"]
lease_time = "1h"
lease_store = "/var/lib/dls/leases"
[dhcp.boot]
bios = "undionly.kpxe"
uefi_x64 = "ipxe.efi"
uefi_arm64 = "ipxe-arm64.efi"
ipxe_script = "boot.ipxe"
[[dhcp.host]]
mac = "52:54:00:00:00:01"
ip = "10.77.0.10"
hostname = "node01"
root_path = "iscsi:10.77.0.1::::iqn.2026-12.org.example:node01"
"#;

    fn parse(text: &str) -> Result<DhcpConfig, String> {
        let w: Wrapper = toml::from_str(text).map_err(|e| e.to_string())?;
        w.dhcp.validate().map_err(|(k, r)| format!("{k}: {r}"))?;
        Ok(w.dhcp)
    }

    #[test]
    fn issue_example_parses() {
        let c = parse(ISSUE_EXAMPLE).unwrap();
        assert_eq!(c.mode, Mode::Server);
        assert_eq!(c.lease_time, Duration::from_secs(3600));
        assert_eq!(c.offer_timeout, Duration::from_secs(30));
        assert_eq!(c.hosts[0].mac, Mac([0x52, 0x54, 0, 0, 0, 1]));
        assert_eq!(c.boot.ipxe_script.as_deref(), Some("boot.ipxe"));
        let toml = toml::to_string(&c).unwrap();
        assert!(toml.contains("52:54:00:00:00:01"), "{toml}");
    }

    #[test]
    fn unknown_key_is_refused() {
        let text = ISSUE_EXAMPLE.replace("bios =", "bioz =");
        assert!(parse(&text).unwrap_err().contains("bioz"));
    }

    #[test]
    fn range_outside_subnet_names_key() {
        let text = ISSUE_EXAMPLE.replace("10.77.0.199", "10.78.0.199");
        assert!(parse(&text).unwrap_err().starts_with("dhcp.range:"));
    }

    #[test]
    fn proxy_needs_no_range() {
        let c = parse("[dhcp]\ninterface = \"dls0\"\nmode = \"proxy\"\n").unwrap();
        assert_eq!(c.mode, Mode::Proxy);
    }

    #[test]
    fn duplicate_reservation_names_host() {
        let text = format!(
            "{ISSUE_EXAMPLE}[[dhcp.host]]\nmac = \"52:54:00:00:00:02\"\nip = \"10.77.0.10\"\n"
        );
        assert_eq!(
            parse(&text).unwrap_err(),
            "dhcp.host[1].ip: is reserved for two hosts"
        );
    }

    #[test]
    fn mac_forms() {
        assert_eq!(
            "52-54-00-AA-00-01".parse::<Mac>(),
            Ok(Mac([0x52, 0x54, 0, 0xaa, 0, 1]))
        );
        assert!("52:54:00:00:00".parse::<Mac>().is_err());
        assert!("52:54:00:00:00:01:02".parse::<Mac>().is_err());
        assert!("5:54:00:00:00:01".parse::<Mac>().is_err());
    }

    #[test]
    fn boot_value_too_long_for_file_field() {
        let long = "a".repeat(128);
        let text = ISSUE_EXAMPLE.replace("\"undionly.kpxe\"", &format!("\"{long}\""));
        assert!(parse(&text).unwrap_err().starts_with("dhcp.boot.bios:"));
    }

    #[test]
    fn generated_script_needs_a_plain_name() {
        let on = ISSUE_EXAMPLE.replace(
            "ipxe_script = \"boot.ipxe\"",
            "ipxe_script = \"boot.ipxe\"\ngenerate_ipxe_script = true",
        );
        assert!(parse(&on).unwrap().boot.generate_ipxe_script);
        for (name, reason) in [
            ("http://10.77.0.1/boot.ipxe", "not a URL"),
            ("../boot.ipxe", "plain name below the TFTP root"),
        ] {
            let text = on.replace("\"boot.ipxe\"", &format!("{name:?}"));
            let e = parse(&text).unwrap_err();
            assert!(e.starts_with("dhcp.boot.generate_ipxe_script:"), "{e}");
            assert!(e.contains(reason), "{e}");
        }
        let unnamed = on.replace("ipxe_script = \"boot.ipxe\"\n", "");
        assert!(parse(&unnamed).unwrap_err().contains("needs `ipxe_script`"));
    }

    #[test]
    fn root_path_cannot_carry_script_lines() {
        for bad in ["iscsi:a b", "iscsi:a\\nshell", "iscsi:a\\tb"] {
            let text = ISSUE_EXAMPLE.replace(
                "\"iscsi:10.77.0.1::::iqn.2026-12.org.example:node01\"",
                &format!("\"{bad}\""),
            );
            let e = parse(&text).unwrap_err();
            assert!(e.starts_with("dhcp.host[0].root_path:"), "{bad}: {e}");
        }
    }
}
