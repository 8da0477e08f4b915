//! SendTargets answers (RFC 7143 §13.3 and Appendix C).
//!
//! Only targets the initiator may log in to are listed, each followed by
//! one `TargetAddress` per portal in the form `address:port,tag` (IPv6
//! addresses in brackets). `All` is for discovery sessions only; a Normal
//! session may ask for its own target (empty value) or one by name.
//!
//! Not done yet: TargetAlias; per-target portal lists (every target is
//! reachable on every portal).

use std::net::SocketAddr;

use super::login::{find_target, SessionType, TargetEntry, PORTAL_GROUP_TAG};
use super::text;

/// Who is asking, for SendTargets.
#[derive(Debug, Clone, Copy)]
pub struct Asker<'a> {
    pub session_type: SessionType,
    pub initiator: &'a str,
    /// The session's own target (Normal sessions).
    pub target: Option<usize>,
}

/// Appends the answer to `SendTargets=value`.
pub fn send_targets(
    out: &mut Vec<u8>,
    value: &str,
    asker: Asker<'_>,
    targets: &[TargetEntry],
    portals: &[SocketAddr],
) {
    let chosen: Vec<&TargetEntry> = match (value, asker.session_type) {
        ("All", SessionType::Discovery) => targets.iter().collect(),
        ("All", SessionType::Normal) => {
            // §13.3: "All" is only meaningful in a discovery session.
            text::encode(out, "SendTargets", "Reject");
            return;
        }
        ("", SessionType::Normal) => asker
            .target
            .and_then(|i| targets.get(i))
            .into_iter()
            .collect(),
        ("", SessionType::Discovery) => Vec::new(),
        (name, _) => find_target(targets, name)
            .and_then(|i| targets.get(i))
            .into_iter()
            .collect(),
    };
    for target in chosen.into_iter().filter(|t| t.admits(asker.initiator)) {
        text::encode(out, "TargetName", &target.iqn);
        for portal in portals {
            text::encode(
                out,
                "TargetAddress",
                &format!("{portal},{PORTAL_GROUP_TAG}"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(iqn: &str, initiators: &[&str]) -> TargetEntry {
        TargetEntry {
            iqn: iqn.into(),
            chap: None,
            mutual_chap: None,
            initiators: initiators.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn answer(value: &str, asker: Asker<'_>) -> Vec<(String, String)> {
        let targets = [
            entry("iqn.2026-01.example:disk0", &[]),
            entry(
                "iqn.2026-01.example:private",
                &["iqn.2026-01.example:other"],
            ),
        ];
        let portals: [SocketAddr; 2] = [
            "127.0.0.1:3260".parse().unwrap(),
            "[::1]:3260".parse().unwrap(),
        ];
        let mut out = Vec::new();
        send_targets(&mut out, value, asker, &targets, &portals);
        // Several TargetName keys are legal in one answer, so no text::parse.
        out.split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| {
                let s = String::from_utf8_lossy(s);
                let (k, v) = s.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    const DISCOVERY: Asker<'static> = Asker {
        session_type: SessionType::Discovery,
        initiator: "iqn.2026-01.example:init",
        target: None,
    };

    #[test]
    fn bc_21_1_send_targets_all_lists_visible_targets_only() {
        let got = answer("All", DISCOVERY);
        assert_eq!(
            got,
            vec![
                ("TargetName".into(), "iqn.2026-01.example:disk0".into()),
                ("TargetAddress".into(), "127.0.0.1:3260,1".into()),
                ("TargetAddress".into(), "[::1]:3260,1".into()),
            ]
        );
        let other = Asker {
            initiator: "iqn.2026-01.example:other",
            ..DISCOVERY
        };
        assert_eq!(
            answer("All", other)
                .iter()
                .filter(|(k, _)| k == "TargetName")
                .count(),
            2
        );
    }

    #[test]
    fn normal_session_forms() {
        let normal = Asker {
            session_type: SessionType::Normal,
            initiator: "iqn.2026-01.example:init",
            target: Some(0),
        };
        assert_eq!(
            answer("All", normal),
            vec![("SendTargets".into(), "Reject".into())]
        );
        assert_eq!(answer("", normal)[0].1, "iqn.2026-01.example:disk0");
        assert!(answer("iqn.2026-01.example:private", normal).is_empty());
        assert!(answer("", DISCOVERY).is_empty());
    }
}
