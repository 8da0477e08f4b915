//! Text key=value pairs of Login and Text PDUs (RFC 7143 §6.1, §6.2).
//!
//! A data segment holds `key=value` strings, each ended by a NUL. [`parse`]
//! borrows them from the segment, checks each key's syntax once and refuses
//! a key sent twice in one negotiation sequence (§6.1). It is liberal where
//! being strict would only break real initiators: a last pair without its
//! NUL is accepted, and empty strings (NUL runs some initiators pad with) are
//! skipped.
//!
//! [`TextBuffer`] joins a text that a peer split across PDUs with the C bit
//! (§6.2), bounded so that a peer cannot grow it without limit.
//!
//! Not done yet: the value-length limits of §6.1 are not checked per key
//! (only the buffer bound applies); values are handed up as text.

use std::collections::HashSet;
use std::fmt;

/// Longest key name (RFC 7143 §6.1: "at most 63 bytes").
pub const MAX_KEY_LEN: usize = 63;

/// Largest text we accept in one negotiation sequence. 64 KiB holds every
/// key set a real initiator sends many times over, and bounds the memory a
/// peer can pin with C-bit continuations.
pub const MAX_TEXT_LEN: usize = 64 * 1024;

/// Why a text data segment is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextError {
    /// A string without `=`.
    MissingSeparator,
    /// Not UTF-8 (keys and values are UTF-8, §6.1).
    NotUtf8,
    /// A key that is empty, too long, or has spaces or control characters.
    BadKey,
    /// The same key twice in one sequence (§6.1).
    Duplicate(String),
    /// Continuations grew beyond [`MAX_TEXT_LEN`].
    TooLong,
}

impl fmt::Display for TextError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TextError::MissingSeparator => f.write_str("text pair without '='"),
            TextError::NotUtf8 => f.write_str("text is not UTF-8"),
            TextError::BadKey => f.write_str("malformed key name"),
            TextError::Duplicate(k) => write!(f, "key {k} sent twice"),
            TextError::TooLong => f.write_str("text longer than the limit"),
        }
    }
}

/// Parses a whole (joined) text into its pairs, in order.
pub fn parse(data: &[u8]) -> Result<Vec<(&str, &str)>, TextError> {
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    // A set, not a scan of `pairs`: a hostile text of thousands of short
    // keys must cost linear time.
    let mut keys = HashSet::new();
    for item in data.split(|&b| b == 0) {
        if item.is_empty() {
            continue;
        }
        let text = std::str::from_utf8(item).map_err(|_| TextError::NotUtf8)?;
        let (key, value) = text.split_once('=').ok_or(TextError::MissingSeparator)?;
        if !valid_key(key) {
            return Err(TextError::BadKey);
        }
        if !keys.insert(key) {
            return Err(TextError::Duplicate(key.to_owned()));
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// Key names use letters, digits and `.-+@_` (RFC 7143 §6.1), and the
/// `X#` prefix of registered extension keys adds `#`. Any other visible
/// ASCII is let through too: an odd key is answered NotUnderstood, which
/// serves interoperability better than failing the login over it.
fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && key.bytes().all(|b| b.is_ascii_graphic())
}

/// Appends `key=value` and its NUL.
pub fn encode(out: &mut Vec<u8>, key: &str, value: &str) {
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    // A NUL inside the value would end it early on the peer; drop them.
    out.extend(value.bytes().filter(|&b| b != 0));
    out.push(0);
}

/// Splits a comma-separated list value (§6.2.1 list negotiation).
pub fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').filter(|v| !v.is_empty())
}

/// Text arriving over several PDUs with the C bit set.
#[derive(Debug, Default)]
pub struct TextBuffer {
    buf: Vec<u8>,
}

impl TextBuffer {
    /// Appends one PDU's data segment.
    pub fn push(&mut self, data: &[u8]) -> Result<(), TextError> {
        if self.buf.len() + data.len() > MAX_TEXT_LEN {
            return Err(TextError::TooLong);
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The joined text so far.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip() {
        let mut out = Vec::new();
        encode(&mut out, "InitiatorName", "iqn.2026-01.example:init");
        encode(&mut out, "HeaderDigest", "None,CRC32C");
        assert_eq!(
            out,
            b"InitiatorName=iqn.2026-01.example:init\0HeaderDigest=None,CRC32C\0"
        );
        let pairs = parse(&out).unwrap();
        assert_eq!(
            pairs,
            vec![
                ("InitiatorName", "iqn.2026-01.example:init"),
                ("HeaderDigest", "None,CRC32C")
            ]
        );
        assert_eq!(
            list("None,CRC32C").collect::<Vec<_>>(),
            vec!["None", "CRC32C"]
        );
    }

    #[test]
    fn missing_last_nul_and_padding_are_tolerated() {
        assert_eq!(parse(b"A=1\0B=2").unwrap(), vec![("A", "1"), ("B", "2")]);
        assert_eq!(parse(b"A=1\0\0\0\0").unwrap(), vec![("A", "1")]);
        assert_eq!(parse(b"").unwrap(), vec![]);
        // Values may contain '=' (CHAP names, base64 values).
        assert_eq!(
            parse(b"CHAP_R=0bAAA=\0").unwrap(),
            vec![("CHAP_R", "0bAAA=")]
        );
        assert_eq!(parse(b"A=\0").unwrap(), vec![("A", "")]);
    }

    #[test]
    fn malformed_text() {
        assert_eq!(parse(b"NoEquals\0"), Err(TextError::MissingSeparator));
        assert_eq!(parse(b"=v\0"), Err(TextError::BadKey));
        assert_eq!(parse(b"Bad Key=v\0"), Err(TextError::BadKey));
        assert_eq!(
            parse(b"X#org.example.k=1\0").unwrap(),
            vec![("X#org.example.k", "1")]
        );
        assert_eq!(parse(b"K=\xff\0"), Err(TextError::NotUtf8));
        let long = format!("{}=1", "K".repeat(64));
        assert_eq!(parse(long.as_bytes()), Err(TextError::BadKey));
        assert_eq!(parse(b"A=1\0A=2\0"), Err(TextError::Duplicate("A".into())));
    }

    #[test]
    fn thousands_of_keys_parse() {
        let mut t = Vec::new();
        for i in 0..10_000 {
            encode(&mut t, &format!("K{i}"), "v");
        }
        assert_eq!(parse(&t).unwrap().len(), 10_000);
        encode(&mut t, "K9999", "again");
        assert_eq!(parse(&t), Err(TextError::Duplicate("K9999".into())));
    }

    #[test]
    fn encode_drops_nul_in_value() {
        let mut out = Vec::new();
        encode(&mut out, "K", "a\0b");
        assert_eq!(out, b"K=ab\0");
    }

    #[test]
    fn continuation_is_bounded() {
        let mut t = TextBuffer::default();
        t.push(b"MaxRecvDataSeg").unwrap();
        t.push(b"mentLength=65536\0").unwrap();
        assert_eq!(
            parse(t.bytes()).unwrap(),
            vec![("MaxRecvDataSegmentLength", "65536")]
        );
        assert_eq!(t.push(&vec![b'x'; MAX_TEXT_LEN]), Err(TextError::TooLong));
        t.clear();
        assert!(t.is_empty());
    }
}
