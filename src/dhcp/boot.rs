//! Boot selection: which file or URL a client gets, and the PXE options
//! around it.
//!
//! The client architecture comes from option 93 (RFC 4578 section 2.1, a list
//! of 16-bit types; the first one with a configured boot value wins) read with
//! the IANA registry's correction (7 is x64 UEFI; 9, registered as EBC, is
//! treated as x64 as firmware in the field sends it). An option 93 of odd
//! length is ignored. Without a usable 93 the type is read from option 60,
//! `PXEClient:Arch:NNNNN:...` (PXE 2.1 section 2.2.5).
//!
//! A client that is already iPXE (option 77 containing "iPXE", in RFC 3004
//! form or as iPXE's bare string, or option 175 present) gets the iPXE script
//! instead of a binary, which breaks the chainload loop (BC-16). HTTP boot
//! clients (arch 15, 16, 19 or vendor class `HTTPClient`) get a URL and
//! vendor class `HTTPClient`.
//!
//! Not done: PXE boot menus and boot server discovery (option 43
//! sub-options 8-10); clients are always told to boot the given file.

use std::net::Ipv4Addr;

use super::config::{is_url, DhcpConfig, HostConfig, Mode};
use super::wire::{code, Request};

/// Option 43 for PXE clients: PXE_DISCOVERY_CONTROL (6) = 8, "the boot file
/// in this offer is the one to use, do not discover boot servers", then END.
pub const PXE_VENDOR_OPTIONS: [u8; 4] = [6, 1, 8, 255];

/// Option 175 for iPXE: sub-option 176 (no-pxedhcp) = 1, so iPXE does not
/// wait for proxyDHCP offers that will never come.
pub const IPXE_NO_PROXYDHCP: [u8; 3] = [176, 1, 1];

/// A client architecture this server has a boot value for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Bios,
    Ia32Efi,
    X64Efi,
    Arm64Efi,
}

/// What the request says about the client, before any configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Vendor class (60) starts with `PXEClient`.
    pub pxe: bool,
    /// Vendor class (60) starts with `HTTPClient` (UEFI HTTP boot).
    pub http_class: bool,
    /// HTTP boot: vendor class `HTTPClient` or an HTTP arch type.
    pub http: bool,
    /// Already running iPXE.
    pub ipxe: bool,
    /// Architecture types in the order sent; empty when unknown.
    pub arch_types: Vec<u16>,
}

/// The boot part of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// The value to send in `file` and option 67 (a TFTP name or a URL).
    pub file: Option<String>,
    /// Option 60 to send back: `PXEClient` or `HTTPClient`.
    pub vendor_class: Option<&'static str>,
    /// Send [`PXE_VENDOR_OPTIONS`] as option 43.
    pub pxe_options: bool,
    /// Send [`IPXE_NO_PROXYDHCP`] as option 175.
    pub ipxe_no_proxydhcp: bool,
}

impl Client {
    pub fn classify(req: &Request) -> Client {
        let class = req.option(code::VENDOR_CLASS).unwrap_or(&[]);
        let mut arch_types = arch_list(req.option(code::CLIENT_ARCH));
        if arch_types.is_empty() {
            arch_types.extend(arch_from_vendor_class(class));
        }
        let http_arch = arch_types
            .first()
            .is_some_and(|t| matches!(t, 15 | 16 | 19));
        Client {
            pxe: class.starts_with(b"PXEClient"),
            http_class: class.starts_with(b"HTTPClient"),
            http: class.starts_with(b"HTTPClient") || http_arch,
            ipxe: req.option(code::IPXE).is_some()
                || is_ipxe_user_class(req.option(code::USER_CLASS)),
            arch_types,
        }
    }

    /// Whether the client asked to boot at all.
    pub fn wants_boot(&self) -> bool {
        self.pxe || self.http || self.ipxe || !self.arch_types.is_empty()
    }
}

/// Option 93 as a list of types; odd lengths are ignored (BC-15).
fn arch_list(value: Option<&[u8]>) -> Vec<u16> {
    match value {
        Some(v) if !v.is_empty() && v.len() % 2 == 0 => v
            .chunks_exact(2)
            .filter_map(|p| p.try_into().ok())
            .map(u16::from_be_bytes)
            .collect(),
        _ => Vec::new(),
    }
}

/// `PXEClient:Arch:00007:UNDI:003016` -> 7.
fn arch_from_vendor_class(class: &[u8]) -> Option<u16> {
    let rest = class
        .strip_prefix(b"PXEClient:Arch:")
        .or_else(|| class.strip_prefix(b"HTTPClient:Arch:"))?;
    let digits = rest.get(..5)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// RFC 3004 user class (length-prefixed items) or iPXE's bare string.
fn is_ipxe_user_class(value: Option<&[u8]>) -> bool {
    let Some(mut v) = value else { return false };
    if v == b"iPXE" {
        return true;
    }
    while let [len, rest @ ..] = v {
        let Some(item) = rest.get(..usize::from(*len)) else {
            return false;
        };
        if item == b"iPXE" {
            return true;
        }
        v = rest.get(usize::from(*len)..).unwrap_or(&[]);
    }
    false
}

/// Maps an option 93 type; the HTTP types map to the firmware they boot.
pub fn arch_of(t: u16) -> Option<Arch> {
    match t {
        0 => Some(Arch::Bios),
        6 | 15 => Some(Arch::Ia32Efi),
        7 | 9 | 16 => Some(Arch::X64Efi),
        11 | 19 => Some(Arch::Arm64Efi),
        _ => None,
    }
}

fn arch_value(config: &DhcpConfig, arch: Arch) -> Option<&str> {
    let b = &config.boot;
    match arch {
        Arch::Bios => b.bios.as_deref(),
        Arch::Ia32Efi => b.uefi_ia32.as_deref(),
        Arch::X64Efi => b.uefi_x64.as_deref(),
        Arch::Arm64Efi => b.uefi_arm64.as_deref(),
    }
}

/// Picks the boot answer for `client`, or `None` if it gets none.
pub fn select(
    client: &Client,
    config: &DhcpConfig,
    host: Option<&HostConfig>,
    server: Ipv4Addr,
) -> Option<Boot> {
    if !client.wants_boot() && host.is_none_or(|h| h.boot.is_none()) {
        return None;
    }
    let by_arch = || {
        client
            .arch_types
            .iter()
            .filter_map(|&t| arch_of(t))
            .find_map(|a| arch_value(config, a))
    };
    let binary = || host.and_then(|h| h.boot.as_deref()).or_else(by_arch);
    let value = if client.ipxe {
        let script = host.and_then(|h| h.ipxe_script.as_deref());
        // Without any script the binary is still better than nothing; the
        // operator chose not to configure the second stage.
        script
            .or(config.boot.ipxe_script.as_deref())
            .or_else(binary)
    } else {
        binary()
    };
    let file = value.map(|v| {
        if client.http && !is_url(v) {
            http_url(config, server, v)
        } else {
            v.to_owned()
        }
    });
    let vendor_class = if client.http {
        Some("HTTPClient")
    } else if client.pxe {
        Some("PXEClient")
    } else {
        None
    };
    Some(Boot {
        file,
        vendor_class,
        pxe_options: client.pxe && !client.http,
        ipxe_no_proxydhcp: client.ipxe && config.mode == Mode::Server,
    })
}

fn http_url(config: &DhcpConfig, server: Ipv4Addr, name: &str) -> String {
    match &config.http_base_url {
        Some(base) if base.ends_with('/') => format!("{base}{name}"),
        Some(base) => format!("{base}/{name}"),
        None => format!("http://{server}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_lists_and_odd_lengths() {
        assert_eq!(arch_list(Some(&[0, 7, 0, 0])), vec![7, 0]);
        assert!(arch_list(Some(&[0])).is_empty());
        assert!(arch_list(Some(&[0, 7, 0])).is_empty());
        assert!(arch_list(Some(&[])).is_empty());
        assert!(arch_list(None).is_empty());
    }

    #[test]
    fn arch_from_class() {
        assert_eq!(
            arch_from_vendor_class(b"PXEClient:Arch:00007:UNDI:003016"),
            Some(7)
        );
        assert_eq!(
            arch_from_vendor_class(b"HTTPClient:Arch:00016:UNDI:003001"),
            Some(16)
        );
        assert_eq!(arch_from_vendor_class(b"PXEClient:Arch:0007"), None);
        assert_eq!(arch_from_vendor_class(b"PXEClient:Arch:+0007"), None);
        assert_eq!(arch_from_vendor_class(b"PXEClient"), None);
    }

    #[test]
    fn user_class_forms() {
        assert!(is_ipxe_user_class(Some(b"iPXE")));
        assert!(is_ipxe_user_class(Some(b"\x04iPXE")));
        assert!(is_ipxe_user_class(Some(b"\x03abc\x04iPXE")));
        assert!(!is_ipxe_user_class(Some(b"\x05iPXE")));
        assert!(!is_ipxe_user_class(Some(b"\xffiPXE")));
        assert!(!is_ipxe_user_class(Some(b"gPXE")));
        assert!(!is_ipxe_user_class(None));
    }

    #[test]
    fn http_url_joins() {
        let mut c = DhcpConfig::new("dls0", Mode::Server);
        let s = Ipv4Addr::new(198, 51, 100, 1);
        assert_eq!(http_url(&c, s, "ipxe.efi"), "http://198.51.100.1/ipxe.efi");
        c.http_base_url = Some("https://boot.example/x".into());
        assert_eq!(
            http_url(&c, s, "ipxe.efi"),
            "https://boot.example/x/ipxe.efi"
        );
    }
}
