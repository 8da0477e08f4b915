//! The DHCP I/O shell for the control thread: sockets, the lease store and
//! the clock around the sans-IO [`Server`].
//!
//! Sockets: UDP on 0.0.0.0:67, and 0.0.0.0:4011 in proxy mode, each bound
//! to the configured interface with SO_BINDTODEVICE so that nothing is ever
//! answered on another interface, with SO_BROADCAST for replies to
//! 255.255.255.255 and IP_PKTINFO to learn our address on the interface a
//! request arrived at (the default server identifier).
//!
//! Call order:
//! 1. [`Service::open`] (opens and compacts the store, binds the sockets),
//!    then [`Service::register`] with the control thread's registry.
//! 2. When mio reports one of the tokens readable:
//!    [`Service::on_readable`]. It handles at most [`MAX_DATAGRAMS_PER_CALL`]
//!    datagrams; if it returns `true` there may be more, and since mio is
//!    edge-triggered the caller must call it again (after serving its other
//!    events) without waiting for a new event. Journal records of the whole
//!    call are fsynced once, before any of its replies leaves.
//! 3. On reload, [`Service::reconfigure`].
//!
//! Linux only: FreeBSD would need IP_RECVIF and IP_RECVDSTADDR instead of
//! SO_BINDTODEVICE and IP_PKTINFO, which is not written yet.
//! Not done: unicast to a client without an address (see server.rs), and
//! rebinding on reload when `interface` or `mode` changes (a restart does).

use std::collections::BTreeMap;
use std::io::{self, IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::{Instant, SystemTime};

use dhcproto::v4::MessageType;
use hdrhistogram::Histogram;
use log::{debug, info, warn};
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use nix::errno::Errno;
use nix::sys::socket::{
    recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn,
};

use super::config::{DhcpConfig, Mode};
use super::lease::{Bindings, Record};
use super::server::{unix_secs, Arrival, Outgoing, Server};
use super::store::Store;
use super::wire;

/// Datagrams handled per [`Service::on_readable`] call: bounds the time the
/// control thread spends on a DHCP burst before it looks at signals and HTTP
/// (a few ms of decisions plus one journal flush). All requests of one call
/// share that flush, so the bound is also the group-commit size: at 64 a
/// storm of a few hundred clients paid several flushes per round and
/// overflowed the socket buffer while waiting.
pub const MAX_DATAGRAMS_PER_CALL: usize = 256;

/// Receive buffer: one byte over the parser's limit, so an oversize
/// datagram is seen as oversize rather than silently cut.
const RECV_BUF_LEN: usize = wire::MAX_LEN + 1;

/// Kernel receive buffer asked for each socket. Requests that arrive while
/// the journal is flushed wait there; each small datagram costs a whole
/// buffer (~1 KiB of the limit), so Linux's default of ~200 KiB holds only
/// a couple of hundred and a boot storm overflows it into client retries.
/// 4 MiB holds a few thousand.
const SOCKET_RCVBUF: usize = 4 << 20;

/// What the service did, for metrics (`dls_dhcp_*`).
#[derive(Debug, Clone)]
pub struct Counters {
    pub received: u64,
    pub offers: u64,
    pub acks: u64,
    pub naks: u64,
    /// Datagrams that got no reply, by [`Ignored::label`](super::Ignored::label).
    pub ignored: BTreeMap<&'static str, u64>,
    /// Journal appends that failed (their replies were not sent).
    pub store_errors: u64,
    pub send_errors: u64,
    /// Microseconds from receiving a request to handing its reply to the
    /// kernel, journal fsync included (`dls_dhcp_reply_seconds`).
    pub reply_time_us: Histogram<u64>,
}

impl Default for Counters {
    fn default() -> Counters {
        Counters {
            received: 0,
            offers: 0,
            acks: 0,
            naks: 0,
            ignored: BTreeMap::new(),
            store_errors: 0,
            send_errors: 0,
            // Constant bounds within what hdrhistogram accepts (low >= 1,
            // high >= 2 * low, sigfig <= 5): this cannot fail.
            reply_time_us: Histogram::new_with_bounds(1, 100_000_000, 2)
                .expect("valid histogram bounds"),
        }
    }
}

/// What one [`Service::on_readable`] call decided, before the commit.
#[derive(Default)]
struct Batch {
    journal: Vec<Record>,
    /// Each reply, whether it depends on `journal` being durable, and when
    /// its request was received.
    replies: Vec<(Outgoing, bool, Instant, Ipv4Addr)>,
}

struct Listener {
    socket: UdpSocket,
    port: u16,
    token: Option<Token>,
}

/// The DHCP service of the control thread.
pub struct Service {
    server: Server,
    store: Store,
    listeners: Vec<Listener>,
    counters: Counters,
    buf: Vec<u8>,
}

impl Service {
    /// Opens the lease store and binds the sockets for a validated `config`.
    pub fn open(config: DhcpConfig, now: SystemTime) -> io::Result<Service> {
        let (store, replay) = Store::open(&config.lease_store, unix_secs(now)).map_err(|e| {
            let path = config.lease_store.display();
            io::Error::new(e.kind(), format!("dhcp.lease_store {path}: {e}"))
        })?;
        let active = store.bindings().active(unix_secs(now)).count();
        info!(
            "dhcp: {} leases ({active} active) from {}{}",
            store.bindings().len(),
            config.lease_store.display(),
            if replay.corrupt > 0 {
                ", some records corrupt"
            } else {
                ""
            }
        );
        let mut ports = vec![wire::SERVER_PORT];
        if config.mode == Mode::Proxy {
            ports.push(wire::PXE_PORT);
        }
        let mut listeners = Vec::new();
        for port in ports {
            let socket = bind(&config.interface, port).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("dhcp.interface {}:{port}: {e}", config.interface),
                )
            })?;
            let socket = UdpSocket::from_std(socket);
            info!(
                "dhcp: listening on {}:{port} ({:?} mode)",
                config.interface, config.mode
            );
            listeners.push(Listener {
                socket,
                port,
                token: None,
            });
        }
        let server = Server::new(config, store.bindings().clone());
        Ok(Service {
            server,
            store,
            listeners,
            counters: Counters::default(),
            buf: vec![0; RECV_BUF_LEN],
        })
    }

    /// Registers the sockets; tokens are `first`, `first + 1`, ... and are
    /// returned in order.
    pub fn register(&mut self, registry: &Registry, first: usize) -> io::Result<Vec<Token>> {
        let mut tokens = Vec::new();
        for (i, l) in self.listeners.iter_mut().enumerate() {
            let token = Token(first + i);
            registry.register(&mut l.socket, token, Interest::READABLE)?;
            l.token = Some(token);
            tokens.push(token);
        }
        Ok(tokens)
    }

    /// Handles what arrived on `token`'s socket; `true` when the bound was
    /// reached and the caller must call again.
    ///
    /// Group commit: the journal records of every datagram read in this call
    /// are made durable with one append (one `fdatasync`), and only then are
    /// the replies sent. Each ACK still leaves after its lease is on disk,
    /// but a burst of N clients costs one disk flush instead of N.
    pub fn on_readable(&mut self, token: Token, now: SystemTime) -> bool {
        let Some(index) = self.listeners.iter().position(|l| l.token == Some(token)) else {
            return false;
        };
        let mut batch = Batch::default();
        let mut more = true;
        for _ in 0..MAX_DATAGRAMS_PER_CALL {
            match self.receive_one(index, now, &mut batch) {
                Ok(()) => {}
                Err(e) => {
                    if e.kind() != io::ErrorKind::WouldBlock {
                        warn!("dhcp: receive failed: {e}");
                    }
                    more = false;
                    break;
                }
            }
        }
        self.commit_and_send(index, batch, now);
        more
    }

    /// Receives and decides one datagram, adding its outcome to `batch`.
    fn receive_one(&mut self, index: usize, now: SystemTime, batch: &mut Batch) -> io::Result<()> {
        let Some(listener) = self.listeners.get(index) else {
            return Err(io::ErrorKind::NotFound.into());
        };
        let (len, source, local_addr) = receive(&listener.socket, &mut self.buf)?;
        let started = Instant::now();
        self.counters.received += 1;
        let arrival = Arrival {
            local_addr,
            local_port: listener.port,
            source,
        };
        let packet = self.buf.get(..len).unwrap_or(&[]);
        match self.server.handle(packet, &arrival, now) {
            Ok(decision) => {
                let durable = !decision.journal.is_empty();
                batch.journal.extend(decision.journal);
                if let Some(reply) = decision.reply {
                    batch.replies.push((reply, durable, started, local_addr));
                }
            }
            Err(why) => *self.counters.ignored.entry(why.label()).or_default() += 1,
        }
        Ok(())
    }

    /// Sends the OFFERs of `batch` at once, then makes its journal records
    /// durable, then sends the rest.
    ///
    /// An OFFER promises nothing (RFC 2131 section 4.3.1: the address is
    /// bound only by the ACK), so it need not wait for the flush: sending
    /// it first lets its client's REQUEST arrive while the disk works, and
    /// that REQUEST then shares the next flush with others. Every other
    /// reply, ACKs above all, leaves only after the flush, even one with no
    /// record of its own: it may rest on an earlier record of the batch.
    fn commit_and_send(&mut self, index: usize, batch: Batch, now: SystemTime) {
        let (early, late): (Vec<_>, Vec<_>) =
            batch
                .replies
                .into_iter()
                .partition(|(reply, needs_durable, ..)| {
                    !needs_durable && reply.message_type == MessageType::Offer
                });
        self.send_replies(index, early);
        match self.store.append(&batch.journal, unix_secs(now)) {
            Ok(()) => self.send_replies(index, late),
            Err(e) => {
                // Nothing depending on these records was promised yet: those
                // replies are not sent, and their clients will retry.
                self.counters.store_errors += 1;
                // Rate-limited: a full disk fails every request.
                if self.counters.store_errors.is_power_of_two() {
                    warn!(
                        "dhcp: lease store append failed ({} times), ACKs not sent: {e}",
                        self.counters.store_errors
                    );
                }
                let kept = late
                    .into_iter()
                    .filter(|(_, needs_durable, ..)| !needs_durable);
                self.send_replies(index, kept.collect());
            }
        }
    }

    fn send_replies(&mut self, index: usize, replies: Vec<(Outgoing, bool, Instant, Ipv4Addr)>) {
        let Some(listener) = self.listeners.get(index) else {
            return;
        };
        for (reply, _, started, local) in replies {
            let to = SocketAddr::V4(reply.destination);
            if let Err(e) = send_from(&listener.socket, &reply.bytes, reply.destination, local) {
                self.counters.send_errors += 1;
                debug!("dhcp: send to {to} failed: {e}");
                continue;
            }
            match reply.message_type {
                MessageType::Offer => self.counters.offers += 1,
                MessageType::Ack => self.counters.acks += 1,
                MessageType::Nak => self.counters.naks += 1,
                _ => {}
            }
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.counters.reply_time_us.saturating_record(micros.max(1));
        }
    }

    /// Applies a new validated configuration to the decision logic (hosts,
    /// boot rules, pool, options) for new requests. `interface`, `mode` and
    /// `lease_store` need new sockets or another store: their old values
    /// stay in force, and the first changed one is returned as (dotted key,
    /// reason) for the caller's log.
    pub fn reconfigure(&mut self, mut config: DhcpConfig) -> Result<(), (String, String)> {
        let old = self.server.config();
        let mut kept = None;
        if old.interface != config.interface {
            config.interface = old.interface.clone();
            kept = kept.or(Some("dhcp.interface"));
        }
        if old.mode != config.mode {
            config.mode = old.mode;
            kept = kept.or(Some("dhcp.mode"));
        }
        if old.lease_store != config.lease_store {
            config.lease_store = old.lease_store.clone();
            kept = kept.or(Some("dhcp.lease_store"));
        }
        self.server.reconfigure(config);
        match kept {
            Some(key) => Err((key.to_owned(), "takes effect after a restart".to_owned())),
            None => Ok(()),
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn bindings(&self) -> &Bindings {
        self.server.bindings()
    }
}

/// A non-blocking UDP socket on 0.0.0.0:`port`, bound to `interface`.
#[cfg(target_os = "linux")]
fn bind(interface: &str, port: u16) -> io::Result<std::net::UdpSocket> {
    use nix::sys::socket::{setsockopt, sockopt};
    use socket2::{Domain, Protocol, Socket, Type};

    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.set_broadcast(true)?;
    setsockopt(&socket, sockopt::Ipv4PacketInfo, &true)?;
    // SO_RCVBUFFORCE passes net.core.rmem_max (dlsd on port 67 usually has
    // CAP_NET_ADMIN); without the capability the capped size still helps.
    if setsockopt(&socket, sockopt::RcvBufForce, &SOCKET_RCVBUF).is_err() {
        let _ = socket.set_recv_buffer_size(SOCKET_RCVBUF);
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())?;
    Ok(socket.into())
}

#[cfg(not(target_os = "linux"))]
fn bind(_interface: &str, _port: u16) -> io::Result<std::net::UdpSocket> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "DHCP sockets are Linux-only for now",
    ))
}

/// One datagram: its length, sender, and our address on its interface.
fn receive(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV4, Ipv4Addr)> {
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<SockaddrIn>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::empty(),
        ) {
            Err(Errno::EINTR) => continue,
            other => break other.map_err(io::Error::from)?,
        }
    };
    let source = msg.address.map_or(
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
        SocketAddrV4::from,
    );
    let mut local = Ipv4Addr::UNSPECIFIED;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::Ipv4PacketInfo(info) = c {
                local = Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
            }
        }
    }
    Ok((msg.bytes, source, local))
}

/// Sends `bytes` to `dest` with `source` (the address the request was sent
/// to) as the IP source: RFC 1122 section 4.1.3.5, a multihomed host
/// answers from the address it was asked on.
fn send_from(
    socket: &UdpSocket,
    bytes: &[u8],
    dest: SocketAddrV4,
    source: Ipv4Addr,
) -> io::Result<usize> {
    let info = libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from(source).to_be(),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let with_source = [ControlMessage::Ipv4PacketInfo(&info)];
    let cmsgs: &[ControlMessage] = if source.is_unspecified() {
        &[]
    } else {
        &with_source
    };
    let iov = [IoSlice::new(bytes)];
    let to = SockaddrIn::from(dest);
    loop {
        match sendmsg(
            socket.as_raw_fd(),
            &iov,
            cmsgs,
            MsgFlags::empty(),
            Some(&to),
        ) {
            Err(Errno::EINTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}
