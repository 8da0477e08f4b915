//! The DHCP decision logic, sans IO: one datagram in, at most one reply and
//! some journal records out.
//!
//! Call order, for the control thread:
//! 1. Open the [`Store`](super::store::Store); build [`Server::new`] from its
//!    bindings.
//! 2. For each datagram received on port 67 (or 4011): [`Server::handle`]
//!    with the bytes, the [`Arrival`] (our address on the interface it came
//!    in on, the port, the peer) and the wall-clock time.
//! 3. `Ok(decision)`: first `store.append(&decision.journal, now)`; only
//!    when that succeeded send `decision.reply` (if any) to its
//!    `destination`, as an L2 broadcast when `broadcast_l2`. If the append
//!    failed, drop the reply: the client retries and nothing was promised.
//!    `Err(ignored)`: count `ignored.label()`; it is already logged at debug.
//! 4. On reload, [`Server::reconfigure`]; bindings and offers carry over.
//!
//! Implemented: RFC 2131 sections 3.1-3.2 and 4.3 (DISCOVER, REQUEST in the
//! SELECTING, INIT-REBOOT, RENEWING and REBINDING states, DECLINE, RELEASE,
//! INFORM, NAK), reply addressing of section 4.1, relay agents (RFC 1542,
//! option 82 echoed per RFC 3046), option 61 echoed (RFC 6842), PXE 2.1
//! proxyDHCP on 67 and the boot server leg on 4011.
//!
//! Not done: BOOTP clients (no option 53) are ignored; unicast to an
//! unconfigured client (flags 0, no ciaddr, no relay) is sent as a broadcast
//! instead, which RFC 2131 section 4.1 allows when the server cannot unicast
//! before ARP; one subnet only; rapid commit (RFC 4039) and client FQDN
//! (RFC 4702) are not implemented; the requested lease time (option 51) is
//! not honoured, every lease gets `lease_time`.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, SystemTime};

use dhcproto::v4::{DhcpOption, MessageType};
use log::{debug, info, trace};

use super::boot::{self, Boot, Client};
use super::config::{is_url, DhcpConfig, Mode};
use super::lease::{Bindings, ClientId, Pool, Record, Secs, Verdict};
use super::wire::{self, code, ParseError, Reply, ReplyOption, Request};

/// Where a datagram came from and where it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Our address on the interface it arrived on (`ipi_spec_dst` of
    /// IP_PKTINFO); the default server identifier.
    pub local_addr: Ipv4Addr,
    /// The port it was sent to: 67, or 4011 for the PXE boot server.
    pub local_port: u16,
    /// The sender, as the IP and UDP headers say.
    pub source: SocketAddrV4,
}

/// What to do after a datagram was handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Records to make durable before the reply is sent.
    pub journal: Vec<Record>,
    pub reply: Option<Outgoing>,
}

/// A reply ready for the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub message_type: MessageType,
    pub bytes: Vec<u8>,
    pub destination: SocketAddrV4,
    /// Send as an Ethernet broadcast (destination is 255.255.255.255).
    pub broadcast_l2: bool,
}

/// Why a datagram got no reply and changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    Malformed(ParseError),
    /// No option 53: a BOOTP client, not served.
    Bootp,
    /// A message type a server does not act on (OFFER, ACK, ...).
    MessageType(u8),
    /// giaddr, or our interface address, is outside the configured subnet.
    WrongSubnet,
    /// proxy mode, or port 4011, and the vendor class is neither
    /// `PXEClient` nor `HTTPClient`.
    NotPxe,
    /// Nothing configured to boot this client (proxy mode has nothing else).
    NoBootFile,
    /// Addressed to another server (option 54), or a REQUEST for a lease
    /// that proxy mode does not hand out.
    OtherServer,
    /// INIT-REBOOT, RENEWING or REBINDING from a client this server has no
    /// record of: RFC 2131 section 4.3.2 says stay silent.
    NoRecord,
    /// No free address.
    PoolExhausted,
    /// A REQUEST, DECLINE or INFORM lacking the address it must carry.
    MissingAddress,
}

impl Ignored {
    /// A short fixed label, for a counter.
    pub fn label(self) -> &'static str {
        match self {
            Ignored::Malformed(e) => e.label(),
            Ignored::Bootp => "bootp",
            Ignored::MessageType(_) => "message_type",
            Ignored::WrongSubnet => "wrong_subnet",
            Ignored::NotPxe => "not_pxe",
            Ignored::NoBootFile => "no_boot_file",
            Ignored::OtherServer => "other_server",
            Ignored::NoRecord => "no_record",
            Ignored::PoolExhausted => "pool_exhausted",
            Ignored::MissingAddress => "missing_address",
        }
    }
}

impl fmt::Display for Ignored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ignored::Malformed(e) => write!(f, "malformed: {e}"),
            Ignored::MessageType(t) => write!(f, "message type {t} is not for a server"),
            other => f.write_str(other.label()),
        }
    }
}

/// The DHCP server of one interface.
#[derive(Debug, Clone)]
pub struct Server {
    config: DhcpConfig,
    pool: Pool,
}

/// Seconds since the Unix epoch; a clock before 1970 reads as 0.
pub fn unix_secs(t: SystemTime) -> Secs {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn secs(d: Duration) -> Secs {
    d.as_secs()
}

impl Server {
    /// A server for a validated `config`, starting from the replayed bindings.
    pub fn new(config: DhcpConfig, bindings: Bindings) -> Server {
        let pool = build_pool(&config, bindings);
        Server { config, pool }
    }

    /// Applies a new validated configuration; leases and offers are kept.
    pub fn reconfigure(&mut self, config: DhcpConfig) {
        let fresh = build_pool(&config, Bindings::default());
        let old = std::mem::replace(&mut self.pool, fresh.clone());
        self.pool = old.reconfigure(fresh);
        self.config = config;
    }

    pub fn config(&self) -> &DhcpConfig {
        &self.config
    }

    /// The current lease state (for metrics and status).
    pub fn bindings(&self) -> &Bindings {
        self.pool.bindings()
    }

    /// Handles one datagram; see the module documentation for what the
    /// caller does with the result.
    pub fn handle(
        &mut self,
        packet: &[u8],
        arrival: &Arrival,
        now: SystemTime,
    ) -> Result<Decision, Ignored> {
        let result = Request::parse(packet)
            .map_err(Ignored::Malformed)
            .and_then(|req| self.decide(&req, arrival, unix_secs(now)));
        match &result {
            Err(why) => debug!("dhcp: ignored datagram from {}: {why}", arrival.source),
            Ok(d) => {
                if let Some(r) = &d.reply {
                    trace!(
                        "dhcp: {:?} to {} for {}",
                        r.message_type,
                        r.destination,
                        arrival.source
                    );
                }
            }
        }
        result
    }

    fn decide(&mut self, req: &Request, arrival: &Arrival, now: Secs) -> Result<Decision, Ignored> {
        let msg_type = req.message_type.ok_or(Ignored::Bootp)?;
        if !self.subnet_ok(req, arrival) {
            return Err(Ignored::WrongSubnet);
        }
        // Never hand out our own address, whatever the range says.
        self.pool.exclude(arrival.local_addr);
        let ctx = Ctx {
            req,
            arrival,
            now,
            server_id: self.config.server_address.unwrap_or(arrival.local_addr),
            client: ClientId(req.client_key()),
        };
        if arrival.local_port == wire::PXE_PORT {
            return self.boot_server(&ctx, msg_type);
        }
        match (self.config.mode, msg_type) {
            (Mode::Proxy, t) => self.proxy(&ctx, t),
            (Mode::Server, MessageType::Discover) => self.discover(&ctx),
            (Mode::Server, MessageType::Request) => self.request(&ctx),
            (Mode::Server, MessageType::Decline) => self.decline(&ctx),
            (Mode::Server, MessageType::Release) => self.release(&ctx),
            (Mode::Server, MessageType::Inform) => self.inform(&ctx),
            (_, other) => Err(Ignored::MessageType(other.into())),
        }
    }

    /// Local requests are answered when our interface is in the subnet,
    /// relayed ones when the relay is (RFC 2131 section 4.3.1).
    fn subnet_ok(&self, req: &Request, arrival: &Arrival) -> bool {
        let relayed = !req.giaddr.is_unspecified();
        let addr = if relayed {
            req.giaddr
        } else {
            arrival.local_addr
        };
        match self.config.subnet {
            Some(subnet) => subnet.contains(&addr),
            None => self.config.mode == Mode::Proxy && !relayed,
        }
    }

    fn discover(&mut self, ctx: &Ctx<'_>) -> Result<Decision, Ignored> {
        let hold = ctx.now + secs(self.config.offer_timeout);
        let mac = ctx.req.mac();
        let ip = self
            .pool
            .offer(&ctx.client, mac, ctx.req.requested_ip(), ctx.now, hold)
            .ok_or(Ignored::PoolExhausted)?;
        let reply = self.lease_reply(ctx, MessageType::Offer, ip);
        Ok(Decision {
            journal: Vec::new(),
            reply: Some(self.finish(ctx, MessageType::Offer, reply)),
        })
    }

    /// RFC 2131 section 4.3.2: the client state follows from which of
    /// server identifier, requested address and ciaddr are present.
    fn request(&mut self, ctx: &Ctx<'_>) -> Result<Decision, Ignored> {
        let req = ctx.req;
        let mac = req.mac();
        if let Some(sid) = req.server_id() {
            // SELECTING.
            if sid != ctx.server_id {
                self.pool.withdraw_offer(&ctx.client);
                return Err(Ignored::OtherServer);
            }
            let ip = req
                .requested_ip()
                .or_else(|| nonzero(req.ciaddr))
                .ok_or(Ignored::MissingAddress)?;
            return match self.pool.verdict(&ctx.client, mac, ip, ctx.now) {
                Verdict::Grant => Ok(self.ack(ctx, ip)),
                Verdict::Refuse | Verdict::WrongAddress => {
                    Ok(self.nak(ctx, "address not available"))
                }
            };
        }
        // INIT-REBOOT (option 50) or RENEWING/REBINDING (ciaddr).
        let ip = req
            .requested_ip()
            .or_else(|| nonzero(req.ciaddr))
            .ok_or(Ignored::MissingAddress)?;
        if self.config.subnet.is_some_and(|s| !s.contains(&ip)) {
            return Ok(self.nak(ctx, "address not on this network"));
        }
        let known = self.pool.bindings().address_of(&ctx.client);
        let reserved = self.pool.reservation(mac);
        let taken_by_other = self
            .pool
            .bindings()
            .lease(ip)
            .is_some_and(|l| l.client != ctx.client && l.expires > ctx.now);
        match self.pool.verdict(&ctx.client, mac, ip, ctx.now) {
            Verdict::Grant if known == Some(ip) || reserved == Some(ip) => Ok(self.ack(ctx, ip)),
            Verdict::WrongAddress => Ok(self.nak(ctx, "address reserved for another client")),
            _ if taken_by_other || self.pool.bindings().quarantined(ip, ctx.now) => {
                Ok(self.nak(ctx, "address in use"))
            }
            _ if known.is_some() => Ok(self.nak(ctx, "not the address bound to this client")),
            _ => Err(Ignored::NoRecord),
        }
    }

    fn ack(&mut self, ctx: &Ctx<'_>, ip: Ipv4Addr) -> Decision {
        let expires = ctx.now + secs(self.config.lease_time);
        let record = self.pool.grant(&ctx.client, ip, expires);
        let reply = self.lease_reply(ctx, MessageType::Ack, ip);
        // One line per grant: the lab's boot timeline starts here.
        info!(
            "dhcp: ACK {ip} to {} ({}) boot {:?}",
            ctx.hardware(),
            ctx.arrival.source,
            String::from_utf8_lossy(&reply.file)
        );
        Decision {
            journal: vec![record],
            reply: Some(self.finish(ctx, MessageType::Ack, reply)),
        }
    }

    fn nak(&mut self, ctx: &Ctx<'_>, why: &str) -> Decision {
        debug!(
            "dhcp: NAK to {} ({}): {why}",
            ctx.client, ctx.arrival.source
        );
        let mut reply = Reply::to(ctx.req);
        reply.options = vec![
            ReplyOption::Typed(DhcpOption::MessageType(MessageType::Nak)),
            ReplyOption::Typed(DhcpOption::ServerIdentifier(ctx.server_id)),
            ReplyOption::Raw(code::MESSAGE, why.as_bytes().to_vec()),
        ];
        Decision {
            journal: Vec::new(),
            reply: Some(self.finish(ctx, MessageType::Nak, reply)),
        }
    }

    fn decline(&mut self, ctx: &Ctx<'_>) -> Result<Decision, Ignored> {
        if ctx.req.server_id().is_some_and(|s| s != ctx.server_id) {
            return Err(Ignored::OtherServer);
        }
        let ip = ctx.req.requested_ip().ok_or(Ignored::MissingAddress)?;
        let until = ctx.now + secs(self.config.decline_quarantine);
        let record = self
            .pool
            .decline(&ctx.client, ip, until)
            .ok_or(Ignored::NoRecord)?;
        log::warn!(
            "dhcp: {} declined {ip} (in use by another host?); quarantined",
            ctx.client
        );
        Ok(Decision {
            journal: vec![record],
            reply: None,
        })
    }

    fn release(&mut self, ctx: &Ctx<'_>) -> Result<Decision, Ignored> {
        if ctx.req.server_id().is_some_and(|s| s != ctx.server_id) {
            return Err(Ignored::OtherServer);
        }
        let ip = nonzero(ctx.req.ciaddr).ok_or(Ignored::MissingAddress)?;
        let record = self
            .pool
            .release(&ctx.client, ip)
            .ok_or(Ignored::NoRecord)?;
        Ok(Decision {
            journal: vec![record],
            reply: None,
        })
    }

    /// RFC 2131 section 4.3.5: configuration only, no lease, to ciaddr.
    fn inform(&mut self, ctx: &Ctx<'_>) -> Result<Decision, Ignored> {
        nonzero(ctx.req.ciaddr).ok_or(Ignored::MissingAddress)?;
        let mut reply = self.reply_head(ctx, MessageType::Ack);
        reply.ciaddr = ctx.req.ciaddr;
        self.push_network_options(ctx, &mut reply);
        self.push_boot(ctx, &mut reply);
        Ok(Decision {
            journal: Vec::new(),
            reply: Some(self.finish(ctx, MessageType::Ack, reply)),
        })
    }

    /// proxyDHCP on port 67 (PXE 2.1 section 2.2, BC-14): answer PXE
    /// DISCOVERs with boot information and no address; stay out of the
    /// address server's exchange.
    fn proxy(&mut self, ctx: &Ctx<'_>, msg_type: MessageType) -> Result<Decision, Ignored> {
        let reply_type = match msg_type {
            MessageType::Discover => MessageType::Offer,
            MessageType::Request if ctx.req.server_id() == Some(ctx.server_id) => MessageType::Ack,
            MessageType::Request => return Err(Ignored::OtherServer),
            other => return Err(Ignored::MessageType(other.into())),
        };
        self.boot_only(ctx, reply_type)
    }

    /// The PXE boot server on port 4011: REQUEST (or INFORM) -> ACK.
    fn boot_server(&mut self, ctx: &Ctx<'_>, msg_type: MessageType) -> Result<Decision, Ignored> {
        match msg_type {
            MessageType::Request | MessageType::Inform => self.boot_only(ctx, MessageType::Ack),
            other => Err(Ignored::MessageType(other.into())),
        }
    }

    fn boot_only(&mut self, ctx: &Ctx<'_>, reply_type: MessageType) -> Result<Decision, Ignored> {
        let client = Client::classify(ctx.req);
        // Only clients that announce themselves as network-boot firmware
        // (PXE 2.1 section 2.2, and UEFI HTTP boot's equivalent) expect
        // answers from a server that gives no address.
        if !client.pxe && !client.http_class {
            return Err(Ignored::NotPxe);
        }
        let mut reply = self.reply_head(ctx, reply_type);
        if reply_type == MessageType::Ack {
            reply.ciaddr = ctx.req.ciaddr;
        }
        if !self.push_boot(ctx, &mut reply) {
            return Err(Ignored::NoBootFile);
        }
        info!(
            "dhcp: proxy {reply_type:?} to {} ({}) boot {:?}",
            ctx.hardware(),
            ctx.arrival.source,
            String::from_utf8_lossy(&reply.file)
        );
        Ok(Decision {
            journal: Vec::new(),
            reply: Some(self.finish(ctx, reply_type, reply)),
        })
    }

    /// OFFER or ACK carrying a lease of `ip`.
    fn lease_reply(&self, ctx: &Ctx<'_>, msg_type: MessageType, ip: Ipv4Addr) -> Reply {
        let mut reply = self.reply_head(ctx, msg_type);
        reply.yiaddr = ip;
        if msg_type == MessageType::Ack {
            reply.ciaddr = ctx.req.ciaddr;
        }
        // RFC 2131 section 4.4.5: T1 = 0.5 and T2 = 0.875 of the lease.
        let lease = u32::try_from(self.config.lease_time.as_secs()).unwrap_or(u32::MAX);
        let t2 = u32::try_from(u64::from(lease) * 7 / 8).unwrap_or(lease);
        for opt in [
            DhcpOption::AddressLeaseTime(lease),
            DhcpOption::Renewal(lease / 2),
            DhcpOption::Rebinding(t2),
        ] {
            reply.options.push(ReplyOption::Typed(opt));
        }
        self.push_network_options(ctx, &mut reply);
        self.push_boot(ctx, &mut reply);
        reply
    }

    fn reply_head(&self, ctx: &Ctx<'_>, msg_type: MessageType) -> Reply {
        let mut reply = Reply::to(ctx.req);
        reply
            .options
            .push(ReplyOption::Typed(DhcpOption::MessageType(msg_type)));
        reply
            .options
            .push(ReplyOption::Typed(DhcpOption::ServerIdentifier(
                ctx.server_id,
            )));
        reply
    }

    /// Options 1, 3, 6, 15, 12 and 17.
    fn push_network_options(&self, ctx: &Ctx<'_>, reply: &mut Reply) {
        let c = &self.config;
        let mut opts = Vec::new();
        if let Some(subnet) = c.subnet {
            opts.push(DhcpOption::SubnetMask(subnet.netmask()));
        }
        if let Some(router) = c.router {
            opts.push(DhcpOption::Router(vec![router]));
        }
        if !c.dns.is_empty() {
            opts.push(DhcpOption::DomainNameServer(c.dns.clone()));
        }
        reply
            .options
            .extend(opts.into_iter().map(ReplyOption::Typed));
        if let Some(domain) = &c.domain {
            reply.options.push(ReplyOption::Raw(
                code::DOMAIN_NAME,
                domain.as_bytes().to_vec(),
            ));
        }
        let host = ctx.req.mac().and_then(|m| c.host(&m));
        if let Some(name) = host.and_then(|h| h.hostname.as_ref()) {
            reply
                .options
                .push(ReplyOption::Raw(code::HOSTNAME, name.as_bytes().to_vec()));
        }
        if let Some(path) = host.and_then(|h| h.root_path.as_ref()) {
            reply
                .options
                .push(ReplyOption::Raw(code::ROOT_PATH, path.as_bytes().to_vec()));
        }
    }

    /// Adds the boot answer (siaddr, `file`, 60, 66, 67, 43, 97, 175);
    /// returns whether there was a boot file to give.
    fn push_boot(&self, ctx: &Ctx<'_>, reply: &mut Reply) -> bool {
        let client = Client::classify(ctx.req);
        let host = ctx.req.mac().and_then(|m| self.config.host(&m));
        let Some(boot) = boot::select(&client, &self.config, host, ctx.server_id) else {
            return false;
        };
        let Boot {
            file,
            vendor_class,
            pxe_options,
            ipxe_no_proxydhcp,
        } = boot;
        let next_server = self.config.next_server.unwrap_or(ctx.server_id);
        if let Some(class) = vendor_class {
            reply.options.push(ReplyOption::Raw(
                code::VENDOR_CLASS,
                class.as_bytes().to_vec(),
            ));
        }
        if let Some(file) = &file {
            reply.siaddr = next_server;
            if file.len() < 128 {
                reply.file = file.as_bytes().to_vec();
            }
            if !is_url(file) {
                let name = next_server.to_string().into_bytes();
                reply
                    .options
                    .push(ReplyOption::Raw(code::TFTP_SERVER, name));
            }
            reply
                .options
                .push(ReplyOption::BootFile(file.as_bytes().to_vec()));
        }
        if pxe_options {
            reply.options.push(ReplyOption::Raw(
                code::VENDOR_SPECIFIC,
                boot::PXE_VENDOR_OPTIONS.to_vec(),
            ));
        }
        // Echoes are capped at one option's length: RFC 4578 defines 97 as
        // 17 bytes and RFC 3046 bounds 82 to 255, and a longer echo would
        // only inflate the reply past what a client reads.
        if let Some(uuid) = ctx.req.option(code::CLIENT_UUID).filter(|v| v.len() <= 255) {
            reply
                .options
                .push(ReplyOption::Raw(code::CLIENT_UUID, uuid.to_vec()));
        }
        if ipxe_no_proxydhcp {
            reply.options.push(ReplyOption::Raw(
                code::IPXE,
                boot::IPXE_NO_PROXYDHCP.to_vec(),
            ));
        }
        file.is_some()
    }

    /// Echoes options 61 and 82, encodes, and addresses the reply.
    fn finish(&self, ctx: &Ctx<'_>, message_type: MessageType, mut reply: Reply) -> Outgoing {
        let req = ctx.req;
        if let Some(id) = req.option(code::CLIENT_ID).filter(|v| v.len() <= 255) {
            // RFC 6842: a client identifier is echoed in every reply.
            reply
                .options
                .push(ReplyOption::Raw(code::CLIENT_ID, id.to_vec()));
        }
        if let Some(agent) = req.option(code::RELAY_AGENT).filter(|v| v.len() <= 255) {
            // RFC 3046 section 2.2: echoed, last.
            reply
                .options
                .push(ReplyOption::Raw(code::RELAY_AGENT, agent.to_vec()));
        }
        let is_nak = message_type == MessageType::Nak;
        if is_nak && !req.giaddr.is_unspecified() {
            // RFC 2131 section 4.1: the relay must broadcast a NAK.
            reply.flags |= 0x8000;
        }
        let (destination, broadcast_l2) = destination(req, ctx.arrival, is_nak);
        Outgoing {
            message_type,
            bytes: reply.encode(),
            destination,
            broadcast_l2,
        }
    }
}

/// Per-datagram facts shared by the handlers.
struct Ctx<'a> {
    req: &'a Request,
    arrival: &'a Arrival,
    now: Secs,
    server_id: Ipv4Addr,
    client: ClientId,
}

impl Ctx<'_> {
    /// The Ethernet address for log lines (what an operator matches
    /// against `[[dhcp.host]] mac`), else the client identifier.
    fn hardware(&self) -> String {
        match self.req.mac() {
            Some(mac) => mac.to_string(),
            None => self.client.to_string(),
        }
    }
}

fn nonzero(ip: Ipv4Addr) -> Option<Ipv4Addr> {
    (!ip.is_unspecified()).then_some(ip)
}

/// RFC 2131 section 4.1 (BC-11): relay first, then ciaddr, then the
/// broadcast bit; a client without an address is reached by broadcast.
/// Replies from the PXE boot server go back to the port the client used.
pub fn destination(req: &Request, arrival: &Arrival, is_nak: bool) -> (SocketAddrV4, bool) {
    let broadcast = (
        SocketAddrV4::new(Ipv4Addr::BROADCAST, wire::CLIENT_PORT),
        true,
    );
    if let Some(relay) = nonzero(req.giaddr) {
        return (SocketAddrV4::new(relay, wire::SERVER_PORT), false);
    }
    if is_nak {
        return broadcast;
    }
    let port = if arrival.local_port == wire::PXE_PORT && arrival.source.port() != 0 {
        arrival.source.port()
    } else {
        wire::CLIENT_PORT
    };
    match nonzero(req.ciaddr) {
        Some(ciaddr) => (SocketAddrV4::new(ciaddr, port), false),
        None => broadcast,
    }
}

fn build_pool(config: &DhcpConfig, bindings: Bindings) -> Pool {
    let [first, last] = config
        .range
        .unwrap_or([Ipv4Addr::BROADCAST, Ipv4Addr::UNSPECIFIED]);
    let mut excluded: Vec<Ipv4Addr> = [config.router, config.server_address, config.next_server]
        .into_iter()
        .flatten()
        .collect();
    if let Some(subnet) = config.subnet {
        excluded.extend([subnet.network(), subnet.broadcast()]);
    }
    let reservations = config.hosts.iter().filter_map(|h| Some((h.mac, h.ip?)));
    Pool::new(first, last, excluded, reservations, bindings)
}

#[cfg(test)]
mod tests;
