//! The two messages `dls-bench dhcp` sends and the three it reads.
//!
//! Requests are built with `dhcproto` as a relay agent forwards them (RFC
//! 2131 section 4.1, RFC 1542 section 4.1.1): giaddr set to the agent's
//! address, hops 1, broadcast flag clear, so every server answers to
//! giaddr:67 and no raw socket is needed. Replies are read by
//! [`Reply::parse`], which checks the header once and walks only options 53
//! and 54; it is safe on any bytes (a peer under load may send anything).

use std::net::Ipv4Addr;

use dhcproto::v4::{self, DhcpOption, Encodable, Encoder, MessageType, OptionCode};

const HEADER_LEN: usize = 240;
const MAGIC: [u8; 4] = [99, 130, 83, 99];
const OP_BOOTREPLY: u8 = 2;
const OPT_PAD: u8 = 0;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_END: u8 = 255;

/// The DHCP message types a client sees (RFC 2132 section 9.6).
pub const OFFER: u8 = 2;
pub const ACK: u8 = 5;
pub const NAK: u8 = 6;

/// A simulated client's hardware address: locally administered (02), a
/// per-run byte so parallel runs do not share MACs, then the client number.
pub fn mac(prefix: u8, client: u32) -> [u8; 6] {
    let [a, b, c, d] = client.to_be_bytes();
    [0x02, prefix, a, b, c, d]
}

/// A relayed DHCPDISCOVER.
pub fn discover(xid: u32, chaddr: [u8; 6], giaddr: Ipv4Addr) -> Vec<u8> {
    encode(xid, chaddr, giaddr, MessageType::Discover, &[])
}

/// A relayed DHCPREQUEST in SELECTING state (RFC 2131 section 4.3.2): the
/// OFFER's xid, server identifier and address.
pub fn request(
    xid: u32,
    chaddr: [u8; 6],
    giaddr: Ipv4Addr,
    server_id: Ipv4Addr,
    yiaddr: Ipv4Addr,
) -> Vec<u8> {
    let extra = [
        DhcpOption::ServerIdentifier(server_id),
        DhcpOption::RequestedIpAddress(yiaddr),
    ];
    encode(xid, chaddr, giaddr, MessageType::Request, &extra)
}

/// A relayed message of `kind` with the parameter request list and `extra`
/// options (the boot storm adds a PXE client's class and architecture).
pub fn encode(
    xid: u32,
    chaddr: [u8; 6],
    giaddr: Ipv4Addr,
    kind: MessageType,
    extra: &[DhcpOption],
) -> Vec<u8> {
    let zero = Ipv4Addr::UNSPECIFIED;
    let mut msg = v4::Message::new_with_id(xid, zero, zero, zero, giaddr, &chaddr);
    msg.set_hops(1);
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::DomainNameServer,
        OptionCode::AddressLeaseTime,
        OptionCode::ServerIdentifier,
    ]));
    for o in extra {
        opts.insert(o.clone());
    }
    let mut out = Vec::with_capacity(300);
    // Encoding into a Vec fails only on option values too long for one
    // option, which these fixed ones are not; an empty datagram would be
    // ignored by the server and counted as a drop, never sent silently.
    let _ = msg.encode(&mut Encoder::new(&mut out));
    out
}

/// The fields of a BOOTREPLY the exchange needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub xid: u32,
    pub yiaddr: Ipv4Addr,
    /// Option 53, if present and one byte long.
    pub message_type: Option<u8>,
    /// Option 54, if present and four bytes long.
    pub server_id: Option<Ipv4Addr>,
}

impl Reply {
    /// `None` for anything that is not a well-formed BOOTREPLY header with
    /// the magic cookie; options past a truncated one are not read.
    pub fn parse(buf: &[u8]) -> Option<Reply> {
        let head = buf.get(..HEADER_LEN)?;
        if head.first() != Some(&OP_BOOTREPLY) || head.get(236..240) != Some(&MAGIC[..]) {
            return None;
        }
        let word = |at: usize| -> Option<[u8; 4]> { head.get(at..at + 4)?.try_into().ok() };
        let mut reply = Reply {
            xid: u32::from_be_bytes(word(4)?),
            yiaddr: Ipv4Addr::from(word(16)?),
            message_type: None,
            server_id: None,
        };
        let mut rest = buf.get(HEADER_LEN..)?;
        while let Some((&code, tail)) = rest.split_first() {
            if code == OPT_END {
                break;
            }
            if code == OPT_PAD {
                rest = tail;
                continue;
            }
            let (&len, tail) = tail.split_first()?;
            let (value, tail) = tail.split_at_checked(usize::from(len))?;
            match (code, value) {
                (OPT_MESSAGE_TYPE, [t]) => reply.message_type = Some(*t),
                (OPT_SERVER_ID, [a, b, c, d]) => {
                    reply.server_id = Some(Ipv4Addr::new(*a, *b, *c, *d))
                }
                _ => {}
            }
            rest = tail;
        }
        Some(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELAY: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 2);

    #[test]
    fn discover_is_relayed_and_parses_as_a_request() {
        let bytes = discover(0x0102_0304, mac(7, 42), RELAY);
        let req = dls::dhcp::wire::Request::parse(&bytes).expect("our own parser reads it");
        assert_eq!(req.xid, 0x0102_0304);
        assert_eq!(req.giaddr, RELAY);
        assert_eq!(req.hops, 1);
        assert!(!req.broadcast());
        assert_eq!(req.chaddr(), &[2, 7, 0, 0, 0, 42]);
        assert_eq!(req.message_type, Some(MessageType::Discover));
    }

    #[test]
    fn request_carries_server_id_and_requested_address() {
        let sid = Ipv4Addr::new(10, 9, 0, 1);
        let ip = Ipv4Addr::new(10, 9, 1, 5);
        let bytes = request(9, mac(1, 1), RELAY, sid, ip);
        let req = dls::dhcp::wire::Request::parse(&bytes).expect("parses");
        assert_eq!(req.message_type, Some(MessageType::Request));
        assert_eq!(req.option(54), Some(&sid.octets()[..]));
        assert_eq!(req.option(50), Some(&ip.octets()[..]));
    }

    fn reply_bytes(options: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_LEN];
        b[0] = OP_BOOTREPLY;
        b[4..8].copy_from_slice(&7u32.to_be_bytes());
        b[16..20].copy_from_slice(&[10, 9, 1, 5]);
        b[236..240].copy_from_slice(&MAGIC);
        b.extend_from_slice(options);
        b
    }

    #[test]
    fn reply_fields_are_read() {
        let r = Reply::parse(&reply_bytes(&[0, 53, 1, ACK, 54, 4, 10, 9, 0, 1, 255])).unwrap();
        assert_eq!(r.xid, 7);
        assert_eq!(r.yiaddr, Ipv4Addr::new(10, 9, 1, 5));
        assert_eq!(r.message_type, Some(ACK));
        assert_eq!(r.server_id, Some(Ipv4Addr::new(10, 9, 0, 1)));
    }

    #[test]
    fn hostile_replies_do_not_panic() {
        assert_eq!(Reply::parse(&[2; 100]), None);
        let mut request = reply_bytes(&[]);
        request[0] = 1;
        assert_eq!(Reply::parse(&request), None);
        // A truncated option: the header is still rejected as a whole.
        assert_eq!(Reply::parse(&reply_bytes(&[53, 9, 5])), None);
        // Wrong lengths are treated as absent.
        let r = Reply::parse(&reply_bytes(&[53, 2, 5, 5, 54, 3, 1, 2, 3])).unwrap();
        assert_eq!((r.message_type, r.server_id), (None, None));
    }
}
