//! CHAP with MD5 for the login security stage (RFC 1994 §4.1, RFC 7143
//! §12.1.3), one-way and mutual.
//!
//! The target challenges: CHAP_A=5, CHAP_I=id, CHAP_C=challenge. The
//! initiator answers CHAP_N=name, CHAP_R=MD5(id || secret || challenge) and,
//! for mutual authentication, sends its own CHAP_I and CHAP_C, which the
//! target answers with its name and response. A challenge equal to the one the
//! target sent is refused (RFC 7143 §12.1.3: a reflected challenge would let
//! an attacker use the target as an oracle for its own secret).
//!
//! The challenge bytes and identifier are passed in: no randomness is drawn
//! here. Responses are compared in constant time.
//!
//! Not done yet: CHAP algorithms other than MD5 (SHA-1, SHA-256 of RFC 7143
//! updates) are answered `CHAP_A=Reject`.

use md5::{Digest, Md5};

/// Length of the challenge this target sends.
pub const CHALLENGE_LEN: usize = 16;

/// Longest initiator challenge accepted. RFC 7143 §12.1.3 bounds binary
/// values at 1024 bytes for CHAP_C.
pub const MAX_PEER_CHALLENGE: usize = 1024;

/// A CHAP user name and secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs.
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The MD5 CHAP response: MD5(id || secret || challenge).
pub fn response(id: u8, secret: &[u8], challenge: &[u8]) -> [u8; 16] {
    let mut h = Md5::new();
    h.update([id]);
    h.update(secret);
    h.update(challenge);
    h.finalize().into()
}

/// Decodes a binary value: `0x` hex or `0b` base64 (RFC 7143 §6.1).
pub fn decode_binary(value: &str) -> Option<Vec<u8>> {
    if let Some(hex) = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        decode_hex(hex)
    } else if let Some(b64) = value
        .strip_prefix("0b")
        .or_else(|| value.strip_prefix("0B"))
    {
        decode_base64(b64)
    } else {
        None
    }
}

/// Encodes bytes as a `0x` hex value.
pub fn encode_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 2);
    s.push_str("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = hex.bytes().map(hex_digit).collect::<Option<_>>()?;
    // An odd count means a leading zero nibble was left out.
    let mut out = Vec::with_capacity(digits.len().div_ceil(2));
    let mut iter = digits.iter();
    if digits.len() % 2 == 1 {
        out.push(*iter.next()?);
    }
    while let (Some(hi), Some(lo)) = (iter.next(), iter.next()) {
        out.push(hi << 4 | lo);
    }
    Some(out)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let body = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in body.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why CHAP failed; every case is login status 0x0201.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChapError {
    /// The initiator offered no algorithm we support.
    NoAlgorithm,
    /// A key is missing or malformed.
    Malformed,
    /// Wrong user name or wrong response.
    BadResponse,
    /// The initiator's challenge equals ours.
    Reflected,
    /// Mutual CHAP asked for but no target credentials are configured.
    NoMutualCredentials,
}

/// The target's side of one CHAP exchange.
#[derive(Debug)]
pub enum Chap {
    /// AuthMethod=CHAP agreed; CHAP_A expected.
    AwaitAlgorithm,
    /// Challenge sent; CHAP_N and CHAP_R expected.
    AwaitResponse {
        id: u8,
        challenge: [u8; CHALLENGE_LEN],
    },
    /// The initiator proved its identity.
    Done,
}

/// The text keys this side sends back.
pub type Replies = Vec<(&'static str, String)>;

impl Chap {
    /// Feeds the CHAP keys of one Login Request; returns the keys to reply.
    ///
    /// `random` supplies the identifier (first byte) and the challenge.
    pub fn handle(
        &mut self,
        keys: &[(&str, &str)],
        creds: &Credentials,
        mutual: Option<&Credentials>,
        random: &[u8; CHALLENGE_LEN + 1],
    ) -> Result<Replies, ChapError> {
        let find = |name: &str| keys.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        match self {
            Chap::AwaitAlgorithm => {
                let offered = find("CHAP_A").ok_or(ChapError::Malformed)?;
                if !super::text::list(offered).any(|a| a == "5") {
                    return Err(ChapError::NoAlgorithm);
                }
                let id = random[0];
                let mut challenge = [0u8; CHALLENGE_LEN];
                challenge.copy_from_slice(&random[1..]);
                *self = Chap::AwaitResponse { id, challenge };
                Ok(vec![
                    ("CHAP_A", "5".into()),
                    ("CHAP_I", id.to_string()),
                    ("CHAP_C", encode_hex(&challenge)),
                ])
            }
            Chap::AwaitResponse { id, challenge } => {
                let name = find("CHAP_N").ok_or(ChapError::Malformed)?;
                let resp = find("CHAP_R")
                    .and_then(decode_binary)
                    .ok_or(ChapError::Malformed)?;
                let expected = response(*id, &creds.secret, challenge);
                let name_ok = constant_time_eq(name.as_bytes(), creds.user.as_bytes());
                if !(constant_time_eq(&resp, &expected) & name_ok) {
                    return Err(ChapError::BadResponse);
                }
                let replies = mutual_reply(find("CHAP_I"), find("CHAP_C"), challenge, mutual)?;
                *self = Chap::Done;
                Ok(replies)
            }
            Chap::Done => Ok(Vec::new()),
        }
    }

    pub fn is_done(&self) -> bool {
        matches!(self, Chap::Done)
    }
}

/// Answers the initiator's own challenge, when it sent one.
fn mutual_reply(
    id: Option<&str>,
    challenge: Option<&str>,
    ours: &[u8],
    mutual: Option<&Credentials>,
) -> Result<Replies, ChapError> {
    let (id, challenge) = match (id, challenge) {
        (None, None) => return Ok(Vec::new()),
        (Some(i), Some(c)) => (i, c),
        _ => return Err(ChapError::Malformed),
    };
    let id = super::negotiate::number(id, 0, 255).ok_or(ChapError::Malformed)? as u8;
    let challenge = decode_binary(challenge).ok_or(ChapError::Malformed)?;
    if challenge.is_empty() || challenge.len() > MAX_PEER_CHALLENGE {
        return Err(ChapError::Malformed);
    }
    if challenge == ours {
        return Err(ChapError::Reflected);
    }
    let creds = mutual.ok_or(ChapError::NoMutualCredentials)?;
    Ok(vec![
        ("CHAP_N", creds.user.clone()),
        (
            "CHAP_R",
            encode_hex(&response(id, &creds.secret, &challenge)),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(user: &str, secret: &str) -> Credentials {
        Credentials {
            user: user.into(),
            secret: secret.as_bytes().to_vec(),
        }
    }

    const RANDOM: [u8; 17] = [7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

    #[test]
    fn md5_response_vector() {
        // MD5 of 0x01 || "secret" || 0x02 0x03, computed independently.
        let r = response(1, b"secret", &[2, 3]);
        assert_eq!(encode_hex(&r).len(), 34);
        assert_eq!(r, response(1, b"secret", &[2, 3]));
        assert_ne!(r, response(2, b"secret", &[2, 3]));
        // RFC 1321 test suite: MD5("abc").
        assert_eq!(
            encode_hex(&response(b'a', b"bc", b"")),
            "0x900150983cd24fb0d6963f7d28e17f72"
        );
    }

    #[test]
    fn binary_encodings() {
        assert_eq!(decode_binary("0x0102ff"), Some(vec![1, 2, 255]));
        assert_eq!(decode_binary("0xABC"), Some(vec![0x0a, 0xbc]));
        assert_eq!(decode_binary("0bAQL/"), Some(vec![1, 2, 255]));
        assert_eq!(decode_binary("0bAQI="), Some(vec![1, 2]));
        assert_eq!(decode_binary("0xzz"), None);
        assert_eq!(decode_binary("1234"), None);
    }

    #[test]
    fn one_way_exchange() {
        let c = creds("alice", "twelve-bytes!");
        let mut chap = Chap::AwaitAlgorithm;
        let r = chap
            .handle(&[("CHAP_A", "7,5")], &c, None, &RANDOM)
            .unwrap();
        assert_eq!(r[0], ("CHAP_A", "5".into()));
        assert_eq!(r[1], ("CHAP_I", "7".into()));
        let resp = encode_hex(&response(7, b"twelve-bytes!", &RANDOM[1..]));
        let keys = [("CHAP_N", "alice"), ("CHAP_R", resp.as_str())];
        assert_eq!(chap.handle(&keys, &c, None, &RANDOM), Ok(vec![]));
        assert!(chap.is_done());
    }

    #[test]
    fn wrong_secret_or_name_fails() {
        let c = creds("alice", "twelve-bytes!");
        for (name, secret) in [("alice", "wrong-secret"), ("bob", "twelve-bytes!")] {
            let mut chap = Chap::AwaitAlgorithm;
            chap.handle(&[("CHAP_A", "5")], &c, None, &RANDOM).unwrap();
            let resp = encode_hex(&response(7, secret.as_bytes(), &RANDOM[1..]));
            let keys = [("CHAP_N", name), ("CHAP_R", resp.as_str())];
            assert_eq!(
                chap.handle(&keys, &c, None, &RANDOM),
                Err(ChapError::BadResponse)
            );
        }
        let mut chap = Chap::AwaitAlgorithm;
        assert_eq!(
            chap.handle(&[("CHAP_A", "6")], &c, None, &RANDOM),
            Err(ChapError::NoAlgorithm)
        );
    }

    #[test]
    fn mutual_and_reflection() {
        let c = creds("alice", "twelve-bytes!");
        let t = creds("target", "another-secret");
        let resp = encode_hex(&response(7, b"twelve-bytes!", &RANDOM[1..]));
        let mut chap = Chap::AwaitAlgorithm;
        chap.handle(&[("CHAP_A", "5")], &c, Some(&t), &RANDOM)
            .unwrap();
        let keys = [
            ("CHAP_N", "alice"),
            ("CHAP_R", resp.as_str()),
            ("CHAP_I", "9"),
            ("CHAP_C", "0xaabbcc"),
        ];
        let r = chap.handle(&keys, &c, Some(&t), &RANDOM).unwrap();
        assert_eq!(r[0], ("CHAP_N", "target".into()));
        assert_eq!(
            r[1].1,
            encode_hex(&response(9, b"another-secret", &[0xaa, 0xbb, 0xcc]))
        );

        let mut chap = Chap::AwaitAlgorithm;
        chap.handle(&[("CHAP_A", "5")], &c, Some(&t), &RANDOM)
            .unwrap();
        let reflected = encode_hex(&RANDOM[1..]);
        let keys = [
            ("CHAP_N", "alice"),
            ("CHAP_R", resp.as_str()),
            ("CHAP_I", "7"),
            ("CHAP_C", reflected.as_str()),
        ];
        assert_eq!(
            chap.handle(&keys, &c, Some(&t), &RANDOM),
            Err(ChapError::Reflected)
        );

        let mut chap = Chap::AwaitAlgorithm;
        chap.handle(&[("CHAP_A", "5")], &c, None, &RANDOM).unwrap();
        let keys = [
            ("CHAP_N", "alice"),
            ("CHAP_R", resp.as_str()),
            ("CHAP_I", "9"),
            ("CHAP_C", "0x01"),
        ];
        assert_eq!(
            chap.handle(&keys, &c, None, &RANDOM),
            Err(ChapError::NoMutualCredentials)
        );
    }
}
