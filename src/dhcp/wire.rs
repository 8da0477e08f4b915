//! DHCP messages on the wire (RFC 2131 section 2, RFC 2132, RFC 3396), over
//! the `dhcproto` crate.
//!
//! [`Request::parse`] is safe on any bytes a peer sends. It checks the fixed
//! header once (length, op, htype/hlen, magic cookie), then walks the options
//! itself rather than through `dhcproto`'s option decoder, because that
//! decoder stops silently at the first option it cannot type (an odd-length
//! option 93 would hide every option after it) and asserts on some lengths.
//! Every malformed input is a [`ParseError`] value naming the reason, for the
//! caller's debug log and counter. Option values stay raw bytes; typed
//! accessors return `None` for a value of the wrong length, which the server
//! treats as "option absent" (RFC 4578 section 2: absence must not be fatal).
//!
//! [`Reply::encode`] writes the header with `dhcproto` and the options in a
//! fixed order, `dhcproto` encoding the typed ones. Two things `dhcproto`
//! cannot do are done here: a PAD right after option 67 (some firmware reads
//! past the counted length, BC-12) and the 300-byte BOOTP minimum.
//!
//! Not supported: BOOTP replies (requests without option 53 are parsed, the
//! server ignores them), and encoding with option overload (52) when a reply
//! would not fit.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use dhcproto::v4::{self, DhcpOption, Encodable, Encoder, MessageType, OptionCode};

use super::config::Mac;

/// UDP ports: server, client, and the PXE boot server (PXE 2.1 section 2.2).
pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
pub const PXE_PORT: u16 = 4011;

/// The fixed BOOTP header plus the magic cookie.
pub const HEADER_LEN: usize = 240;

/// Largest request parsed. A DHCP message is never fragmented in practice, so
/// anything past a jumbo-ish 4 KiB is not a client and not worth walking.
pub const MAX_LEN: usize = 4096;

/// BOOTP minimum message length (RFC 1542 section 2.1); relays and old
/// firmware drop shorter replies.
pub const BOOTP_MIN_LEN: usize = 300;

const MAGIC: [u8; 4] = [99, 130, 83, 99];
const OP_BOOTREQUEST: u8 = 1;
const HTYPE_ETHERNET: u8 = 1;

/// Option codes used by the server (RFC 2132 unless noted).
pub mod code {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const ROOT_PATH: u8 = 17;
    pub const VENDOR_SPECIFIC: u8 = 43;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_LIST: u8 = 55;
    pub const MESSAGE: u8 = 56;
    pub const RENEWAL_TIME: u8 = 58;
    pub const REBINDING_TIME: u8 = 59;
    pub const VENDOR_CLASS: u8 = 60;
    pub const CLIENT_ID: u8 = 61;
    pub const TFTP_SERVER: u8 = 66;
    pub const BOOTFILE: u8 = 67;
    /// RFC 3004.
    pub const USER_CLASS: u8 = 77;
    /// RFC 3046.
    pub const RELAY_AGENT: u8 = 82;
    /// RFC 4578.
    pub const CLIENT_ARCH: u8 = 93;
    /// RFC 4578.
    pub const CLIENT_UUID: u8 = 97;
    /// iPXE's encapsulated options.
    pub const IPXE: u8 = 175;
    pub const END: u8 = 255;
}

/// Why a datagram is not a DHCP request this server can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than the fixed header and magic cookie.
    TooShort(usize),
    /// Longer than [`MAX_LEN`].
    TooLong(usize),
    /// op is not BOOTREQUEST (a BOOTREPLY from another server, or noise).
    NotRequest(u8),
    /// hlen above 16, or an Ethernet htype without a 6-byte address.
    BadHardware { htype: u8, hlen: u8 },
    /// The four bytes after the header are not 99.130.83.99.
    BadCookie,
    /// An option's length runs past the end of its area.
    TruncatedOption(u8),
    /// Option 52 with a length other than 1 or a value outside 1..=3.
    BadOverload,
    /// Option 53 with a length other than 1.
    BadMessageType,
}

impl ParseError {
    /// A short fixed label, for a counter.
    pub fn label(self) -> &'static str {
        match self {
            ParseError::TooShort(_) => "too_short",
            ParseError::TooLong(_) => "too_long",
            ParseError::NotRequest(_) => "not_request",
            ParseError::BadHardware { .. } => "bad_hardware",
            ParseError::BadCookie => "bad_cookie",
            ParseError::TruncatedOption(_) => "truncated_option",
            ParseError::BadOverload => "bad_overload",
            ParseError::BadMessageType => "bad_message_type",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::TooShort(n) => write!(f, "{n} bytes, shorter than a DHCP header"),
            ParseError::TooLong(n) => write!(f, "{n} bytes, over {MAX_LEN}"),
            ParseError::NotRequest(op) => write!(f, "op {op} is not BOOTREQUEST"),
            ParseError::BadHardware { htype, hlen } => write!(f, "htype {htype} with hlen {hlen}"),
            ParseError::BadCookie => f.write_str("bad magic cookie"),
            ParseError::TruncatedOption(c) => write!(f, "option {c} runs past its area"),
            ParseError::BadOverload => f.write_str("malformed option overload (52)"),
            ParseError::BadMessageType => f.write_str("malformed message type (53)"),
        }
    }
}

impl std::error::Error for ParseError {}

/// A parsed BOOTREQUEST. Options are raw values keyed by code, with split
/// options already joined (RFC 3396) and overloaded areas already read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub htype: u8,
    pub hlen: u8,
    pub hops: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    chaddr: [u8; 16],
    /// Option 53; `None` for a plain BOOTP request.
    pub message_type: Option<MessageType>,
    options: BTreeMap<u8, Vec<u8>>,
}

impl Request {
    /// Parses one datagram received on a server port.
    pub fn parse(buf: &[u8]) -> Result<Request, ParseError> {
        if buf.len() < HEADER_LEN {
            return Err(ParseError::TooShort(buf.len()));
        }
        if buf.len() > MAX_LEN {
            return Err(ParseError::TooLong(buf.len()));
        }
        // The length check above makes every accessor of the borrowed view
        // in bounds; its chaddr() is not called (it trusts hlen).
        let header =
            v4::borrowed::Message::new(buf).map_err(|_| ParseError::TooShort(buf.len()))?;
        let op = u8::from(header.opcode());
        if op != OP_BOOTREQUEST {
            return Err(ParseError::NotRequest(op));
        }
        let (htype, hlen) = (u8::from(header.htype()), header.hlen());
        if hlen > 16 || (htype == HTYPE_ETHERNET && hlen != 6) {
            return Err(ParseError::BadHardware { htype, hlen });
        }
        let (head, options_area) = buf
            .split_at_checked(HEADER_LEN)
            .ok_or(ParseError::TooShort(buf.len()))?;
        if head.get(236..240) != Some(&MAGIC[..]) {
            return Err(ParseError::BadCookie);
        }
        let mut chaddr = [0u8; 16];
        chaddr.copy_from_slice(head.get(28..44).unwrap_or(&[0; 16]));

        let options = parse_option_areas(
            options_area,
            head.get(108..236).unwrap_or(&[]),
            head.get(44..108).unwrap_or(&[]),
        )?;
        let message_type = match options.get(&code::MESSAGE_TYPE) {
            None => None,
            Some(v) => match v.as_slice() {
                [t] => Some(MessageType::from(*t)),
                _ => return Err(ParseError::BadMessageType),
            },
        };
        Ok(Request {
            htype,
            hlen,
            hops: header.hops(),
            xid: header.xid(),
            secs: header.secs(),
            flags: header.flags().into(),
            ciaddr: header.ciaddr(),
            yiaddr: header.yiaddr(),
            siaddr: header.siaddr(),
            giaddr: header.giaddr(),
            chaddr,
            message_type,
            options,
        })
    }

    /// The client hardware address, `hlen` bytes (at most 16 by parse).
    pub fn chaddr(&self) -> &[u8] {
        self.chaddr
            .get(..usize::from(self.hlen))
            .unwrap_or(&self.chaddr)
    }

    /// The Ethernet address, when htype says Ethernet.
    pub fn mac(&self) -> Option<Mac> {
        if self.htype != HTYPE_ETHERNET {
            return None;
        }
        <[u8; 6]>::try_from(self.chaddr()).ok().map(Mac)
    }

    /// The broadcast bit of `flags` (RFC 2131 section 2, figure 2).
    pub fn broadcast(&self) -> bool {
        self.flags & 0x8000 != 0
    }

    /// The raw value of an option.
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options.get(&code).map(Vec::as_slice)
    }

    fn option_ip(&self, code: u8) -> Option<Ipv4Addr> {
        let v: [u8; 4] = self.option(code)?.try_into().ok()?;
        Some(Ipv4Addr::from(v))
    }

    /// Option 50.
    pub fn requested_ip(&self) -> Option<Ipv4Addr> {
        self.option_ip(code::REQUESTED_IP)
    }

    /// Option 54.
    pub fn server_id(&self) -> Option<Ipv4Addr> {
        self.option_ip(code::SERVER_ID)
    }

    /// The key that identifies the client (RFC 2131 section 4.2): option 61
    /// when sent and non-empty, else htype followed by chaddr.
    pub fn client_key(&self) -> Vec<u8> {
        match self.option(code::CLIENT_ID) {
            Some(id) if !id.is_empty() => id.to_vec(),
            _ => std::iter::once(self.htype)
                .chain(self.chaddr().iter().copied())
                .collect(),
        }
    }
}

/// Reads the options area, then `file` and `sname` when option 52 says they
/// hold options too (RFC 2131 section 4.1: in that order).
fn parse_option_areas(
    options: &[u8],
    file: &[u8],
    sname: &[u8],
) -> Result<BTreeMap<u8, Vec<u8>>, ParseError> {
    let mut map = BTreeMap::new();
    walk_options(options, &mut map)?;
    let overload = match map.get(&code::OVERLOAD).map(Vec::as_slice) {
        None => 0,
        Some([v @ 1..=3]) => *v,
        Some(_) => return Err(ParseError::BadOverload),
    };
    if overload & 1 != 0 {
        walk_options(file, &mut map)?;
    }
    if overload & 2 != 0 {
        walk_options(sname, &mut map)?;
    }
    Ok(map)
}

/// Walks one area of code/length/value triples up to END or its end. A code
/// seen again is appended to the earlier value (RFC 3396 section 6).
fn walk_options(mut area: &[u8], map: &mut BTreeMap<u8, Vec<u8>>) -> Result<(), ParseError> {
    loop {
        match area {
            [] | [code::END, ..] => return Ok(()),
            [code::PAD, rest @ ..] => area = rest,
            [c, len, rest @ ..] if usize::from(*len) <= rest.len() => {
                let (value, rest) = rest.split_at(usize::from(*len));
                map.entry(*c).or_default().extend_from_slice(value);
                area = rest;
            }
            [c, ..] => return Err(ParseError::TruncatedOption(*c)),
        }
    }
}

/// One option of a reply, in the order it is to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyOption {
    /// An option `dhcproto` knows how to encode.
    Typed(DhcpOption),
    /// Raw bytes, split into 255-byte pieces when longer (RFC 3396).
    Raw(u8, Vec<u8>),
    /// Option 67, followed by a PAD so that the byte after the counted value
    /// is 0x00 for firmware that reads it as a C string (BC-12).
    BootFile(Vec<u8>),
}

/// A BOOTREPLY to encode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub htype: u8,
    pub hlen: u8,
    pub xid: u32,
    /// Copied from the request (RFC 2131 table 3).
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 16],
    /// BOOTP `file`, at most 128 bytes, written NUL-padded.
    pub file: Vec<u8>,
    pub options: Vec<ReplyOption>,
}

impl Reply {
    /// A reply to `req` with the header fields copied as RFC 2131 table 3 says.
    pub fn to(req: &Request) -> Reply {
        Reply {
            htype: req.htype,
            hlen: req.hlen,
            xid: req.xid,
            flags: req.flags,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: req.giaddr,
            chaddr: req.chaddr,
            file: Vec::new(),
            options: Vec::new(),
        }
    }

    /// Encodes the reply: header, cookie, options, END, zero padding to
    /// [`BOOTP_MIN_LEN`].
    pub fn encode(&self) -> Vec<u8> {
        let mut header = v4::Message::new_with_id(
            self.xid,
            self.ciaddr,
            self.yiaddr,
            self.siaddr,
            self.giaddr,
            self.chaddr
                .get(..usize::from(self.hlen))
                .unwrap_or(&self.chaddr),
        );
        header
            .set_opcode(v4::Opcode::BootReply)
            .set_htype(self.htype.into())
            .set_flags(self.flags.into());
        // dhcproto asserts on a longer `file`; the field is cut instead (the
        // config keeps boot values shorter, so this never happens in practice).
        header.set_fname(self.file.get(..128).unwrap_or(&self.file));

        let mut buf = Vec::with_capacity(512);
        let mut e = Encoder::new(&mut buf);
        // Encoding into a Vec cannot fail: the encoder only grows the buffer.
        let _ = header.encode(&mut e);
        for opt in &self.options {
            let _ = encode_option(opt, &mut e);
        }
        let _ = e.write_u8(code::END);
        while buf.len() < BOOTP_MIN_LEN {
            buf.push(code::PAD);
        }
        buf
    }
}

fn encode_option(opt: &ReplyOption, e: &mut Encoder<'_>) -> v4::EncodeResult<()> {
    match opt {
        ReplyOption::Typed(o) => o.encode(e),
        ReplyOption::Raw(c, value) => v4::encode_long_opt_bytes(OptionCode::from(*c), value, e),
        ReplyOption::BootFile(name) => {
            v4::encode_long_opt_bytes(OptionCode::BootfileName, name, e)?;
            e.write_u8(code::PAD)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a request: the header from the arguments, options raw.
    pub(crate) fn request_bytes(
        mac: [u8; 6],
        flags: u16,
        ciaddr: Ipv4Addr,
        giaddr: Ipv4Addr,
        options: &[(u8, &[u8])],
    ) -> Vec<u8> {
        let mut msg = v4::Message::new_with_id(
            0x1234_5678,
            ciaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            giaddr,
            &mac,
        );
        msg.set_flags(flags.into());
        let mut buf = msg.to_vec().unwrap();
        for (c, v) in options {
            buf.push(*c);
            buf.push(v.len() as u8);
            buf.extend_from_slice(v);
        }
        buf.push(code::END);
        buf
    }

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
    const ZERO: Ipv4Addr = Ipv4Addr::UNSPECIFIED;

    fn discover(extra: &[(u8, &[u8])]) -> Vec<u8> {
        let mut opts: Vec<(u8, &[u8])> = vec![(code::MESSAGE_TYPE, &[1])];
        opts.extend_from_slice(extra);
        request_bytes(MAC, 0x8000, ZERO, ZERO, &opts)
    }

    #[test]
    fn parses_a_discover() {
        let r = Request::parse(&discover(&[(code::CLIENT_ARCH, &[0, 7])])).unwrap();
        assert_eq!(r.message_type, Some(MessageType::Discover));
        assert_eq!(r.mac(), Some(Mac(MAC)));
        assert!(r.broadcast());
        assert_eq!(r.xid, 0x1234_5678);
        assert_eq!(r.option(code::CLIENT_ARCH), Some(&[0u8, 7][..]));
        assert_eq!(r.client_key(), vec![1, 0x52, 0x54, 0, 0, 0, 1]);
    }

    #[test]
    fn malformed_inputs_are_values() {
        let good = discover(&[]);
        assert_eq!(Request::parse(&good[..239]), Err(ParseError::TooShort(239)));
        assert_eq!(
            Request::parse(&vec![1; MAX_LEN + 1]),
            Err(ParseError::TooLong(MAX_LEN + 1))
        );

        let mut reply = good.clone();
        reply[0] = 2;
        assert_eq!(Request::parse(&reply), Err(ParseError::NotRequest(2)));

        let mut hlen = good.clone();
        hlen[2] = 17;
        assert_eq!(
            Request::parse(&hlen),
            Err(ParseError::BadHardware { htype: 1, hlen: 17 })
        );
        hlen[2] = 5;
        assert!(matches!(
            Request::parse(&hlen),
            Err(ParseError::BadHardware { .. })
        ));

        let mut cookie = good.clone();
        cookie[239] = 0;
        assert_eq!(Request::parse(&cookie), Err(ParseError::BadCookie));

        let mut truncated = good[..good.len() - 1].to_vec();
        truncated.extend_from_slice(&[code::CLIENT_UUID, 17, 0, 1, 2]);
        assert_eq!(
            Request::parse(&truncated),
            Err(ParseError::TruncatedOption(97))
        );

        let bad53 = request_bytes(MAC, 0, ZERO, ZERO, &[(code::MESSAGE_TYPE, &[1, 1])]);
        assert_eq!(Request::parse(&bad53), Err(ParseError::BadMessageType));

        let bad52 = discover(&[(code::OVERLOAD, &[4])]);
        assert_eq!(Request::parse(&bad52), Err(ParseError::BadOverload));
    }

    #[test]
    fn non_ethernet_htype_keeps_its_hlen() {
        let mut ib = discover(&[]);
        ib[1] = 32;
        ib[2] = 0;
        let r = Request::parse(&ib).unwrap();
        assert_eq!(r.mac(), None);
        assert_eq!(r.chaddr(), &[] as &[u8]);
    }

    #[test]
    fn overloaded_file_and_sname_are_read() {
        let mut buf = discover(&[(code::OVERLOAD, &[3])]);
        // file field: option 60, then END; sname: option 97.
        buf[108..108 + 11]
            .copy_from_slice(&[60, 9, b'P', b'X', b'E', b'C', b'l', b'i', b'e', b'n', b't']);
        buf[108 + 11] = code::END;
        buf[44..48].copy_from_slice(&[97, 2, 0, 1]);
        let r = Request::parse(&buf).unwrap();
        assert_eq!(r.option(code::VENDOR_CLASS), Some(&b"PXEClient"[..]));
        assert_eq!(r.option(code::CLIENT_UUID), Some(&[0u8, 1][..]));
    }

    #[test]
    fn split_options_are_joined_rfc3396() {
        let r = Request::parse(&discover(&[(60, b"PXE"), (60, b"Client")])).unwrap();
        assert_eq!(r.option(code::VENDOR_CLASS), Some(&b"PXEClient"[..]));
    }

    #[test]
    fn missing_end_and_trailing_pad_are_tolerated() {
        let mut buf = discover(&[]);
        buf.pop();
        assert!(Request::parse(&buf).is_ok());
        buf.extend_from_slice(&[0; 40]);
        assert!(Request::parse(&buf).is_ok());
    }

    #[test]
    fn wrong_length_address_options_read_as_absent() {
        let r = Request::parse(&discover(&[(code::REQUESTED_IP, &[10, 0, 0])])).unwrap();
        assert_eq!(r.requested_ip(), None);
    }

    #[test]
    fn reply_layout() {
        let req = Request::parse(&discover(&[])).unwrap();
        let mut reply = Reply::to(&req);
        reply.yiaddr = Ipv4Addr::new(10, 77, 0, 100);
        reply.siaddr = Ipv4Addr::new(10, 77, 0, 1);
        reply.file = b"undionly.kpxe".to_vec();
        reply.options = vec![
            ReplyOption::Typed(DhcpOption::MessageType(MessageType::Offer)),
            ReplyOption::BootFile(b"undionly.kpxe".to_vec()),
            ReplyOption::Raw(code::VENDOR_SPECIFIC, vec![6, 1, 8, 255]),
        ];
        let bytes = reply.encode();
        assert_eq!(bytes.len(), BOOTP_MIN_LEN);
        assert_eq!(bytes[0], 2);
        assert_eq!(&bytes[10..12], &[0x80, 0]);
        assert_eq!(&bytes[16..20], &[10, 77, 0, 100]);
        assert_eq!(&bytes[20..24], &[10, 77, 0, 1]);
        assert_eq!(&bytes[28..34], &MAC);
        assert_eq!(&bytes[108..121], b"undionly.kpxe");
        assert!(bytes[121..236].iter().all(|&b| b == 0));
        assert_eq!(&bytes[236..240], &MAGIC);
        let opts = &bytes[240..];
        assert_eq!(&opts[..3], &[53, 1, 2]);
        assert_eq!(&opts[3..5], &[67, 13]);
        assert_eq!(&opts[5..18], b"undionly.kpxe");
        assert_eq!(opts[18], 0, "byte after option 67 must be NUL");
        assert_eq!(&opts[19..25], &[43, 4, 6, 1, 8, 255]);
        assert_eq!(opts[25], code::END);
    }

    #[test]
    fn long_raw_option_is_split() {
        let req = Request::parse(&discover(&[])).unwrap();
        let mut reply = Reply::to(&req);
        reply.options = vec![ReplyOption::Raw(17, vec![b'x'; 300])];
        let bytes = reply.encode();
        assert_eq!(&bytes[240..242], &[17, 255]);
        assert_eq!(&bytes[240 + 257..240 + 259], &[17, 45]);
        // And it reads back joined.
        let mut back = bytes.clone();
        back[0] = 1;
        assert_eq!(
            Request::parse(&back).unwrap().option(17).map(<[u8]>::len),
            Some(300)
        );
    }
}
