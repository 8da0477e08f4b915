//! Option negotiation for a read request: RFC 2347 (the OACK), RFC 2348
//! (blksize), RFC 2349 (timeout, tsize) and RFC 7440 (windowsize).
//!
//! The rule that firmware is strict about: the OACK carries exactly the options
//! the client asked for and this server accepts, nothing else (RFC 2347,
//! "Negotiation Protocol"). An option we cannot honour is left out, not
//! answered with an error, so the transfer still runs with the RFC 1350
//! defaults. Names and the mode are compared without regard to case.

use std::time::Duration;

use super::wire::Request;

/// RFC 1350's block size, used when blksize is not negotiated.
pub const DEFAULT_BLKSIZE: u16 = 512;
/// RFC 2348's range.
pub const MIN_BLKSIZE: u16 = 8;
pub const MAX_BLKSIZE: u16 = 65464;
/// Largest window granted whatever the limits say: the transfer maps a
/// 16-bit ACK to one block of the window, which needs the window (plus the
/// last acknowledged block) to stay far below 65536 blocks.
pub const MAX_WINDOWSIZE: u64 = 1024;

/// Default of [`Limits::max_window_bytes`]: well inside a default client
/// socket buffer, and above what real firmware asks (UEFI: 4 x 1468, iPXE
/// and PXE ROMs: lock-step; 64 x 1468 = 94 KiB still fits).
pub const DEFAULT_MAX_WINDOW_BYTES: u32 = 128 << 10;

/// Server-side limits that bound what a client may negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_blksize: u16,
    pub max_windowsize: u16,
    /// Largest window in payload bytes: windowsize is granted only up to
    /// this divided by blksize (at least 1). A window leaves as one burst,
    /// and a client's socket buffer (Linux's default is 208 KiB) drops what
    /// does not fit; 64 blocks of 65464 bytes would be 4 MiB.
    pub max_window_bytes: u32,
    /// Retransmission timeout when the client sends no `timeout` option.
    pub timeout: Duration,
    pub retries: u32,
    /// The block number after 65535: 0 or 1.
    pub rollover: u8,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_blksize: MAX_BLKSIZE,
            max_windowsize: 64,
            max_window_bytes: DEFAULT_MAX_WINDOW_BYTES,
            timeout: Duration::from_secs(1),
            retries: 5,
            rollover: 0,
        }
    }
}

/// Transfer mode of RFC 1350 section 5 ("mail" is obsolete and refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Octet,
    Netascii,
}

impl Mode {
    /// Parses the mode string, ignoring case; `None` for anything else.
    pub fn parse(raw: &[u8]) -> Option<Mode> {
        if raw.eq_ignore_ascii_case(b"octet") {
            Some(Mode::Octet)
        } else if raw.eq_ignore_ascii_case(b"netascii") {
            Some(Mode::Netascii)
        } else {
            None
        }
    }
}

/// The outcome of negotiation: the parameters of the transfer and, when any
/// option was accepted, the pairs the OACK must carry, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: u16,
    pub windowsize: u16,
    pub timeout: Duration,
    pub oack: Vec<(&'static str, String)>,
}

/// Negotiates `req` against `limits`; `size` is the length in bytes the
/// client will receive (after any netascii conversion), reported for tsize.
pub fn negotiate(req: &Request<'_>, size: u64, limits: &Limits) -> Negotiated {
    let mut n = Negotiated {
        blksize: DEFAULT_BLKSIZE.min(limits.max_blksize),
        windowsize: 1,
        timeout: limits.timeout,
        oack: Vec::new(),
    };
    for (name, value) in &req.options {
        // A repeated option is answered once, from its first occurrence.
        let Some(key) = known_option(name) else {
            continue;
        };
        if n.oack.iter().any(|(k, _)| *k == key) {
            continue;
        }
        let number = parse_decimal(value);
        match key {
            "blksize" => {
                // Below 8 is invalid (RFC 2348); above the cap is clamped,
                // which the RFC allows since the OACK value is <= the request.
                let Some(v) = number.filter(|&v| v >= u64::from(MIN_BLKSIZE)) else {
                    continue;
                };
                n.blksize = v
                    .min(u64::from(MAX_BLKSIZE))
                    .min(u64::from(limits.max_blksize)) as u16;
                n.oack.push((key, n.blksize.to_string()));
            }
            "tsize" => {
                // RFC 2349 says a read request carries 0; clients also send
                // other values (atftp: the word "enable"). Any of them asks
                // for the size.
                n.oack.push((key, size.to_string()));
            }
            "timeout" => {
                let Some(v) = number.filter(|v| (1..=255).contains(v)) else {
                    continue;
                };
                n.timeout = Duration::from_secs(v);
                n.oack.push((key, v.to_string()));
            }
            "windowsize" => {
                let Some(v) = number.filter(|v| (1..=65535).contains(v)) else {
                    continue;
                };
                n.windowsize = v.min(u64::from(limits.max_windowsize)).min(MAX_WINDOWSIZE) as u16;
                n.oack.push((key, n.windowsize.to_string()));
            }
            _ => {}
        }
    }
    // The byte bound needs the final blksize, whatever order options came in.
    let by_bytes = (limits.max_window_bytes / u32::from(n.blksize)).max(1);
    if u32::from(n.windowsize) > by_bytes {
        n.windowsize = by_bytes as u16;
        if let Some(entry) = n.oack.iter_mut().find(|(k, _)| *k == "windowsize") {
            entry.1 = n.windowsize.to_string();
        }
    }
    n
}

fn known_option(name: &[u8]) -> Option<&'static str> {
    ["blksize", "tsize", "timeout", "windowsize"]
        .into_iter()
        .find(|k| name.eq_ignore_ascii_case(k.as_bytes()))
}

/// A plain decimal number of at most 10 digits; anything else is `None`.
fn parse_decimal(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() || raw.len() > 10 || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    raw.iter().try_fold(0u64, |acc, d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req<'a>(options: &[(&'a str, &'a str)]) -> Request<'a> {
        Request {
            filename: b"f",
            mode: b"octet",
            options: options
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
                .collect(),
        }
    }

    fn oack(n: &Negotiated) -> Vec<(&str, &str)> {
        n.oack.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }

    #[test]
    fn bc_03_a_only_requested_option_is_echoed() {
        let n = negotiate(&req(&[("blksize", "1432")]), 1000, &Limits::default());
        assert_eq!(oack(&n), vec![("blksize", "1432")]);
        assert_eq!(n.blksize, 1432);
    }

    #[test]
    fn bc_03_b_no_options_no_oack() {
        let n = negotiate(&req(&[]), 1000, &Limits::default());
        assert!(n.oack.is_empty());
        assert_eq!((n.blksize, n.windowsize), (512, 1));
    }

    #[test]
    fn bc_03_c_tsize_of_empty_file() {
        let n = negotiate(&req(&[("tsize", "0")]), 0, &Limits::default());
        assert_eq!(oack(&n), vec![("tsize", "0")]);
    }

    #[test]
    fn bc_03_d_case_insensitive_names() {
        let n = negotiate(
            &req(&[("BLKSIZE", "1432"), ("TSize", "0")]),
            77,
            &Limits::default(),
        );
        assert_eq!(oack(&n), vec![("blksize", "1432"), ("tsize", "77")]);
        assert_eq!(Mode::parse(b"OCTET"), Some(Mode::Octet));
        assert_eq!(Mode::parse(b"NetAscii"), Some(Mode::Netascii));
        assert_eq!(Mode::parse(b"mail"), None);
    }

    #[test]
    fn bc_03_e_unknown_option_ignored() {
        let n = negotiate(
            &req(&[("foo", "bar"), ("blksize", "1432")]),
            1,
            &Limits::default(),
        );
        assert_eq!(oack(&n), vec![("blksize", "1432")]);
    }

    #[test]
    fn bc_09_blksize_clamped_and_invalid_values_omitted() {
        let limits = Limits {
            max_blksize: 1468,
            ..Limits::default()
        };
        let n = negotiate(&req(&[("blksize", "65464")]), 1, &limits);
        assert_eq!(oack(&n), vec![("blksize", "1468")]);
        for v in ["1024", "1432", "1456"] {
            let n = negotiate(&req(&[("blksize", v)]), 1, &limits);
            assert_eq!(oack(&n), vec![("blksize", v)]);
        }
        for v in ["7", "0", "abc", "", "-1", "99999999999"] {
            let n = negotiate(&req(&[("blksize", v)]), 1, &limits);
            assert!(n.oack.is_empty(), "{v}");
            assert_eq!(n.blksize, 512);
        }
        let n = negotiate(&req(&[("blksize", "65465")]), 1, &Limits::default());
        assert_eq!(oack(&n), vec![("blksize", "65464")]);
    }

    #[test]
    fn tsize_with_word_value() {
        // atftp's `--option "tsize enable"`.
        let n = negotiate(&req(&[("tsize", "enable")]), 5, &Limits::default());
        assert_eq!(oack(&n), vec![("tsize", "5")]);
    }

    #[test]
    fn bc_06_c_windowsize_capped_never_refused() {
        let n = negotiate(&req(&[("windowsize", "128")]), 1, &Limits::default());
        assert_eq!(oack(&n), vec![("windowsize", "64")]);
        let n = negotiate(&req(&[("windowsize", "0")]), 1, &Limits::default());
        assert!(n.oack.is_empty());
        assert_eq!(n.windowsize, 1);
    }

    #[test]
    fn timeout_and_duplicates() {
        let n = negotiate(
            &req(&[("timeout", "3"), ("timeout", "9"), ("timeout", "0")]),
            1,
            &Limits::default(),
        );
        assert_eq!(oack(&n), vec![("timeout", "3")]);
        assert_eq!(n.timeout, Duration::from_secs(3));
        let n = negotiate(&req(&[("timeout", "256")]), 1, &Limits::default());
        assert!(n.oack.is_empty());
    }

    #[test]
    fn window_bytes_bound_windowsize_in_either_order() {
        for opts in [
            [("blksize", "65464"), ("windowsize", "64")],
            [("windowsize", "64"), ("blksize", "65464")],
        ] {
            let n = negotiate(&req(&opts), 1 << 30, &Limits::default());
            assert_eq!((n.blksize, n.windowsize), (65464, 2), "{opts:?}");
            assert!(oack(&n).contains(&("windowsize", "2")), "{opts:?}");
        }
        // What firmware asks stays as asked.
        let n = negotiate(
            &req(&[("blksize", "1468"), ("windowsize", "64")]),
            1,
            &Limits::default(),
        );
        assert_eq!(n.windowsize, 64);
        // Never below lock-step.
        let tight = Limits {
            max_window_bytes: 100,
            ..Limits::default()
        };
        let n = negotiate(&req(&[("blksize", "1468"), ("windowsize", "8")]), 1, &tight);
        assert_eq!(n.windowsize, 1);
    }
}
