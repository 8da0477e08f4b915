//! The TFTP service of one worker: its listeners, its transfers, their
//! sockets and timers. This is the I/O shell around [`crate::tftp`]: it
//! receives datagrams, feeds them to the state machines, and sends what they
//! ask for from the shared file images.
//!
//! Each transfer has its own UDP socket on an ephemeral port (its TID,
//! RFC 1350 section 4), registered in the worker's poll. Requests arrive on
//! the per-worker SO_REUSEPORT listeners.
//!
//! Not done yet: replies from a listener bound to a wildcard address leave
//! from whatever address the routing table picks (no IP_PKTINFO), which is
//! right on a single-homed boot network but not on a multi-homed one.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use log::{debug, info, trace, warn};
use mio::net::UdpSocket;
use mio::{Interest, Registry, Token};
use slab::Slab;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

mod send;

use super::image::{to_netascii, Flavor, Image, ImageCache};
use super::stats::{TftpError, WorkerStats};
use super::timers::Timers;
use crate::config::{SendPath, TftpConfig};
use crate::sys::{self, Datagram, SendBatch};
use crate::tftp::negotiate::{negotiate, Limits, Mode};
use crate::tftp::path::{self, PathError};
use crate::tftp::transfer::{Outcome, Reaction, Transfer};
use crate::tftp::wire::{self, ErrorCode, Packet, DATA_HEADER_LEN};

/// Tokens `LISTENER_BASE..SESSION_BASE` are listeners, the rest transfers.
pub const LISTENER_BASE: usize = 1 << 20;
pub const SESSION_BASE: usize = 2 << 20;
const SESSION_END: usize = 3 << 20;

/// Requests taken from one listener per wakeup, so a flood of RRQs cannot
/// starve transfers already running on this worker.
const MAX_REQUESTS_PER_WAKEUP: usize = 64;
/// Datagrams taken from one transfer socket per wakeup; ACKs are tiny and a
/// window produces few, so this only bounds a hostile sender.
const MAX_PACKETS_PER_WAKEUP: usize = 128;
/// Transfers whose timers are handled per loop iteration.
const MAX_TIMERS_PER_WAKEUP: usize = 1024;
/// Socket buffer limit for one transfer; the kernel caps it at wmem_max.
const MAX_SNDBUF: usize = 8 << 20;
/// Receive buffer of a listener: room for a burst of RRQs in a boot storm.
const LISTENER_RCVBUF: usize = 4 << 20;

/// Everything a request needs that a reload may replace.
#[derive(Debug)]
pub struct TftpContext {
    root: File,
    limits: Limits,
    send_path: SendPath,
    max_transfers: usize,
    /// Files served from memory instead of the root (the generated iPXE
    /// script), by their resolved relative path.
    generated: HashMap<PathBuf, Generated>,
}

/// A file served from memory, prepared once per configuration in both modes.
#[derive(Debug)]
struct Generated {
    octet: Arc<Image>,
    netascii: Arc<Image>,
}

impl TftpContext {
    /// Opens the root; `generated` are files served from memory, which
    /// shadow any file of the same name on the root.
    pub fn new(config: &TftpConfig, generated: Vec<(PathBuf, Vec<u8>)>) -> io::Result<TftpContext> {
        let root = File::open(&config.root).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("tftp.root {}: {e}", config.root.display()),
            )
        })?;
        Ok(TftpContext {
            root,
            limits: Limits {
                max_blksize: config.max_blksize,
                max_windowsize: config.max_windowsize,
                timeout: config.timeout,
                retries: config.retries,
                rollover: config.rollover,
            },
            send_path: config.send_path,
            max_transfers: config.max_transfers,
            generated: HashMap::new(),
        }
        .with_generated(generated, &config.root))
    }

    fn with_generated(mut self, files: Vec<(PathBuf, Vec<u8>)>, root: &Path) -> TftpContext {
        for (rel, bytes) in files {
            if sys::open_beneath(&self.root, &rel).is_ok() {
                warn!(
                    "tftp: {} on the root is not served: dlsd serves its generated {} instead",
                    root.join(&rel).display(),
                    rel.display()
                );
            }
            info!(
                "tftp: serving the generated {} ({} bytes)",
                rel.display(),
                bytes.len()
            );
            let netascii = Arc::new(Image::Buffer(to_netascii(&bytes)));
            let octet = Arc::new(Image::Buffer(bytes));
            self.generated.insert(rel, Generated { octet, netascii });
        }
        self
    }
}

/// What every worker's TFTP service shares: the file images and the count
/// of transfers in flight (the limit is across workers).
#[derive(Debug, Default)]
pub struct Shared {
    pub cache: ImageCache,
    pub in_flight: AtomicUsize,
}

/// Binds one listener of one worker.
pub fn bind_listener(addr: SocketAddr) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    sys::set_reuse_port(&socket)?;
    // Best effort: the kernel may cap it, which is not worth failing over.
    let _ = socket.set_recv_buffer_size(LISTENER_RCVBUF);
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("tftp.listen {addr}: {e}")))?;
    Ok(UdpSocket::from_std(socket.into()))
}

struct Session {
    socket: UdpSocket,
    peer: SocketAddr,
    peer_addr: SockAddr,
    transfer: Transfer,
    image: Arc<Image>,
    name: String,
    started: Instant,
    timer: Option<Instant>,
    bytes: u64,
    path: SendPath,
    /// Cleared when the kernel refuses GSO towards this client.
    gso: bool,
    /// When the file was last checked for a rewrite in place.
    checked: Instant,
}

/// Buffers reused by every send and receive of the worker.
struct Scratch {
    recv: Vec<u8>,
    out: Vec<u8>,
    headers: Vec<[u8; DATA_HEADER_LEN]>,
    datagrams: Vec<Datagram>,
    pread: Vec<u8>,
    batch: SendBatch,
    expired: Vec<usize>,
    /// Cleared for good on this worker after the kernel refuses UDP GSO.
    gso: bool,
}

/// One worker's TFTP service.
pub struct TftpService {
    ctx: Arc<TftpContext>,
    shared: Arc<Shared>,
    stats: Arc<WorkerStats>,
    listeners: Vec<UdpSocket>,
    /// Each listener's bound address, where its transfers' sockets bind.
    local: Vec<Option<SocketAddr>>,
    sessions: Slab<Session>,
    timers: Timers,
    scratch: Scratch,
    /// Sources that stopped at their per-wakeup bound and still have input.
    backlog: Vec<Token>,
}

impl TftpService {
    pub fn new(
        ctx: Arc<TftpContext>,
        shared: Arc<Shared>,
        stats: Arc<WorkerStats>,
        listeners: Vec<UdpSocket>,
        registry: &Registry,
    ) -> io::Result<TftpService> {
        let mut listeners = listeners;
        for (i, l) in listeners.iter_mut().enumerate() {
            registry.register(l, Token(LISTENER_BASE + i), Interest::READABLE)?;
        }
        Ok(TftpService {
            ctx,
            shared,
            stats,
            local: listeners.iter().map(|l| l.local_addr().ok()).collect(),
            listeners,
            sessions: Slab::new(),
            timers: Timers::default(),
            scratch: Scratch {
                recv: vec![0; 65536],
                out: Vec::with_capacity(1024),
                headers: Vec::with_capacity(sys::MAX_BATCH),
                datagrams: Vec::with_capacity(sys::MAX_BATCH),
                pread: Vec::new(),
                batch: SendBatch::default(),
                expired: Vec::new(),
                gso: true,
            },
            backlog: Vec::new(),
        })
    }

    pub fn owns(token: Token) -> bool {
        (LISTENER_BASE..SESSION_END).contains(&token.0)
    }

    /// New requests use `ctx` from now on; transfers keep what they have.
    pub fn reload(&mut self, ctx: Arc<TftpContext>) {
        self.ctx = ctx;
    }

    pub fn active(&self) -> usize {
        self.sessions.len()
    }

    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Stops taking requests: closes this worker's listeners.
    pub fn stop_listening(&mut self, registry: &Registry) {
        for mut l in self.listeners.drain(..) {
            let _ = registry.deregister(&mut l);
        }
        self.backlog.retain(|t| t.0 >= SESSION_BASE);
    }

    /// Ends every transfer now, telling each client.
    pub fn abort_all(&mut self, registry: &Registry, now: Instant) {
        let keys: Vec<usize> = self.sessions.iter().map(|(k, _)| k).collect();
        for key in keys {
            if let Some(s) = self.sessions.get_mut(key) {
                s.transfer
                    .abort(ErrorCode::NotDefined, "Server shutting down");
            }
            self.drive(key, registry, now);
        }
    }

    /// Handles a readiness event for one of this service's tokens.
    pub fn ready(&mut self, token: Token, registry: &Registry, now: Instant) {
        if token.0 < SESSION_BASE {
            self.accept_requests(token, registry, now);
        } else {
            self.session_ready(token.0 - SESSION_BASE, registry, now);
        }
    }

    /// Continues the sources that hit their bound last time, and timers.
    pub fn run_pending(&mut self, registry: &Registry, now: Instant) {
        for token in std::mem::take(&mut self.backlog) {
            self.ready(token, registry, now);
        }
        let mut expired = std::mem::take(&mut self.scratch.expired);
        self.timers
            .expired(now, MAX_TIMERS_PER_WAKEUP, &mut expired);
        for &key in &expired {
            if let Some(s) = self.sessions.get_mut(key) {
                s.timer = None;
                s.transfer.handle_timeout(now);
            }
            self.drive(key, registry, now);
        }
        expired.clear();
        self.scratch.expired = expired;
    }

    fn accept_requests(&mut self, token: Token, registry: &Registry, now: Instant) {
        let index = token.0 - LISTENER_BASE;
        for _ in 0..MAX_REQUESTS_PER_WAKEUP {
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            let (len, peer) = match listener.recv_from(&mut self.scratch.recv) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    debug!("tftp: receive on listener failed: {e}");
                    return;
                }
            };
            let local = self.local.get(index).copied().flatten();
            // Lent out for the call, which needs the rest of the scratch.
            let buf = std::mem::take(&mut self.scratch.recv);
            self.handle_request(index, &buf[..len], peer, local, registry, now);
            self.scratch.recv = buf;
        }
        self.backlog.push(token);
    }

    fn handle_request(
        &mut self,
        listener: usize,
        datagram: &[u8],
        peer: SocketAddr,
        local: Option<SocketAddr>,
        registry: &Registry,
        now: Instant,
    ) {
        let req = match Packet::parse(datagram) {
            Ok(Packet::Rrq(req)) => req,
            Ok(Packet::Wrq(req)) => {
                let name = String::from_utf8_lossy(req.filename);
                debug!(
                    "tftp: {peer}: write request for {name:?} refused: uploads are not accepted"
                );
                return self.refuse(
                    listener,
                    peer,
                    TftpError::WriteRefused,
                    ErrorCode::AccessViolation,
                    "Write requests are not accepted",
                );
            }
            Ok(Packet::Unknown(op)) => {
                debug!("tftp: {peer}: unknown opcode {op} on the request port");
                return self.refuse(
                    listener,
                    peer,
                    TftpError::Malformed,
                    ErrorCode::IllegalOperation,
                    "Illegal TFTP operation",
                );
            }
            Ok(other) => {
                // DATA/ACK/ERROR/OACK belong on a transfer port. Answering
                // them here would only help reflection; drop them.
                debug!(
                    "tftp: {peer}: {} on the request port ignored",
                    packet_kind(&other)
                );
                self.stats.tftp.count_error(TftpError::Malformed);
                return;
            }
            Err(e) => {
                debug!("tftp: {peer}: malformed request: {e}");
                return self.refuse(
                    listener,
                    peer,
                    TftpError::Malformed,
                    ErrorCode::IllegalOperation,
                    "Malformed request",
                );
            }
        };
        self.stats.tftp.requests.fetch_add(1, Ordering::Relaxed);
        let name = String::from_utf8_lossy(req.filename).into_owned();

        let Some(mode) = Mode::parse(req.mode) else {
            debug!(
                "tftp: {peer}: {name:?}: unsupported mode {:?}",
                String::from_utf8_lossy(req.mode)
            );
            return self.refuse(
                listener,
                peer,
                TftpError::BadMode,
                ErrorCode::IllegalOperation,
                "Unsupported transfer mode",
            );
        };
        // A cheap early look, so an overloaded server opens no files; the
        // slot is taken for real just before the transfer starts.
        if self.shared.in_flight.load(Ordering::Relaxed) >= self.ctx.max_transfers {
            debug!(
                "tftp: {peer}: {name:?}: refused, {} transfers in flight",
                self.shared.in_flight.load(Ordering::Relaxed)
            );
            return self.refuse_busy(listener, peer);
        }
        let image = match self.open_image(&name, req.filename, mode, peer) {
            Ok(image) => image,
            Err((kind, code, message)) => return self.refuse(listener, peer, kind, code, message),
        };

        let negotiated = negotiate(&req, image.len(), &self.ctx.limits);
        let transfer = Transfer::new(&negotiated, image.len(), &self.ctx.limits, now);
        let socket = match transfer_socket(peer, local, &transfer) {
            Ok(s) => s,
            Err(e) => {
                warn!("tftp: {peer}: {name:?}: cannot open a transfer socket: {e}");
                return self.refuse_internal(listener, peer);
            }
        };
        debug!(
            "tftp: {peer}: RRQ {name:?} {mode:?} size={} blksize={} windowsize={} options={:?}",
            image.len(),
            transfer.blksize(),
            transfer.windowsize(),
            negotiated.oack
        );
        let entry = self.sessions.vacant_entry();
        let key = entry.key();
        if SESSION_BASE + key >= SESSION_END {
            return self.refuse_busy(listener, peer);
        }
        let mut session = Session {
            socket,
            peer,
            peer_addr: SockAddr::from(peer),
            transfer,
            image,
            name,
            started: now,
            timer: None,
            bytes: 0,
            path: self.ctx.send_path,
            gso: true,
            checked: now,
        };
        if let Err(e) = registry.register(
            &mut session.socket,
            Token(SESSION_BASE + key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            warn!("tftp: {peer}: cannot register transfer socket: {e}");
            return self.refuse_internal(listener, peer);
        }
        // The limit is across all workers: one shared counter, touched once
        // per request and once per finished transfer, never per packet.
        if self.shared.in_flight.fetch_add(1, Ordering::AcqRel) >= self.ctx.max_transfers {
            self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            debug!(
                "tftp: {peer}: {:?}: refused, transfer limit reached",
                session.name
            );
            let _ = registry.deregister(&mut session.socket);
            return self.refuse_busy(listener, peer);
        }
        entry.insert(session);
        self.stats.tftp.active.fetch_add(1, Ordering::Relaxed);
        self.drive(key, registry, now);
    }

    /// Resolves, opens and maps the requested file, or says which ERROR to send.
    fn open_image(
        &self,
        name: &str,
        raw: &[u8],
        mode: Mode,
        peer: SocketAddr,
    ) -> Result<Arc<Image>, (TftpError, ErrorCode, &'static str)> {
        let rel = path::resolve(raw).map_err(|e| {
            debug!("tftp: {peer}: {name:?} refused: {}", e.reason());
            match e {
                PathError::Empty => (
                    TftpError::NotFound,
                    ErrorCode::FileNotFound,
                    "File not found",
                ),
                _ => (
                    TftpError::AccessDenied,
                    ErrorCode::AccessViolation,
                    "Access violation",
                ),
            }
        })?;
        if let Some(generated) = self.ctx.generated.get(&rel) {
            return Ok(Arc::clone(match mode {
                Mode::Netascii => &generated.netascii,
                Mode::Octet => &generated.octet,
            }));
        }
        let file = sys::open_beneath(&self.ctx.root, &rel).map_err(|e| {
            debug!("tftp: {peer}: {name:?} refused: {e}");
            open_error(&e)
        })?;
        let meta = file.metadata().map_err(|e| {
            warn!("tftp: {peer}: {name:?}: fstat failed: {e}");
            (TftpError::Internal, ErrorCode::NotDefined, "Server error")
        })?;
        if !meta.is_file() {
            debug!("tftp: {peer}: {name:?} refused: not a regular file");
            return Err((
                TftpError::AccessDenied,
                ErrorCode::AccessViolation,
                "Not a regular file",
            ));
        }
        let flavor = match (mode, self.ctx.send_path) {
            (Mode::Netascii, _) => Flavor::Netascii,
            (Mode::Octet, SendPath::Pread) => Flavor::Pread,
            (Mode::Octet, _) => Flavor::Octet,
        };
        self.shared.cache.get(file, &meta, flavor).map_err(|e| {
            warn!("tftp: {peer}: {name:?}: cannot prepare file: {e}");
            (
                TftpError::Internal,
                ErrorCode::NotDefined,
                "Cannot read file",
            )
        })
    }

    /// Over the transfer limit: ERROR 0, never silence.
    fn refuse_busy(&mut self, listener: usize, peer: SocketAddr) {
        let message = "Server busy, try again later";
        self.refuse(
            listener,
            peer,
            TftpError::Busy,
            ErrorCode::NotDefined,
            message,
        );
    }

    /// A server-side failure; the client learns nothing about its cause.
    fn refuse_internal(&mut self, listener: usize, peer: SocketAddr) {
        let message = "Server error";
        self.refuse(
            listener,
            peer,
            TftpError::Internal,
            ErrorCode::NotDefined,
            message,
        );
    }

    /// Answers a request with an ERROR from the listener it came to.
    fn refuse(
        &mut self,
        listener: usize,
        peer: SocketAddr,
        kind: TftpError,
        code: ErrorCode,
        message: &str,
    ) {
        self.stats.tftp.count_error(kind);
        let out = &mut self.scratch.out;
        out.clear();
        wire::encode_error(out, code, message);
        if let Some(l) = self.listeners.get(listener) {
            if let Err(e) = l.send_to(out, peer) {
                debug!("tftp: {peer}: could not send ERROR: {e}");
            }
        }
    }

    fn session_ready(&mut self, key: usize, registry: &Registry, now: Instant) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        let mut drained = false;
        for _ in 0..MAX_PACKETS_PER_WAKEUP {
            let (len, from) = match s.socket.recv_from(&mut self.scratch.recv) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP port unreachable surfaces here as ECONNREFUSED:
                    // the client is gone, and the timer will end the transfer.
                    trace!("tftp: {}: receive error: {e}", s.peer);
                    continue;
                }
            };
            if from != s.peer {
                debug!(
                    "tftp: {from}: packet for the transfer of {:?} to {} (unknown TID)",
                    s.name, s.peer
                );
                self.stats.tftp.count_error(TftpError::UnknownTid);
                // An ERROR is never answered (RFC 1350 section 7): answering
                // one would let a spoofed packet set two ports (or one port
                // and itself) replying to each other without end.
                let is_error =
                    self.scratch.recv.get(..2) == Some(&wire::OP_ERROR.to_be_bytes()[..]);
                let local = s.socket.local_addr().ok();
                if !is_error && Some(from) != local {
                    let out = &mut self.scratch.out;
                    out.clear();
                    wire::encode_error(out, ErrorCode::UnknownTransferId, "Unknown transfer ID");
                    let _ = s.socket.send_to(out, from);
                }
                continue;
            }
            match Packet::parse(&self.scratch.recv[..len]) {
                Ok(packet) => match s.transfer.handle_packet(&packet, now) {
                    Reaction::Accepted => trace!("tftp: {}: {}", s.peer, packet_kind(&packet)),
                    Reaction::DuplicateAck => {
                        trace!("tftp: {}: duplicate {:?} ignored", s.peer, packet)
                    }
                    Reaction::StaleAck => {
                        debug!("tftp: {}: {:?} outside the window ignored", s.peer, packet)
                    }
                    Reaction::Unexpected => debug!(
                        "tftp: {}: unexpected {} ignored",
                        s.peer,
                        packet_kind(&packet)
                    ),
                },
                Err(e) => debug!("tftp: {}: malformed packet ignored: {e}", s.peer),
            }
        }
        if !drained {
            self.backlog.push(Token(SESSION_BASE + key));
        }
        self.drive(key, registry, now);
    }

    /// Sends what the transfer wants, re-arms its timer, reaps it when over.
    fn drive(&mut self, key: usize, registry: &Registry, now: Instant) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        send::flush(s, &mut self.scratch, &self.stats, &self.shared.cache, now);
        let deadline = s.transfer.poll_timeout();
        self.timers.reschedule(key, &mut s.timer, deadline);
        if s.transfer.is_done() {
            self.finish(key, registry, now);
        }
    }

    fn finish(&mut self, key: usize, registry: &Registry, now: Instant) {
        let mut s = self.sessions.remove(key);
        self.timers.reschedule(key, &mut s.timer, None);
        let _ = registry.deregister(&mut s.socket);
        let stats = &self.stats.tftp;
        stats.active.fetch_sub(1, Ordering::Relaxed);
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        stats
            .retransmits
            .fetch_add(s.transfer.retransmitted(), Ordering::Relaxed);
        let elapsed = now.saturating_duration_since(s.started);
        match s.transfer.outcome() {
            Some(Outcome::Completed) => {
                stats.completed.fetch_add(1, Ordering::Relaxed);
                stats.record_duration(elapsed);
                info!(
                    "tftp: {}: sent {:?}, {} bytes in {:.3}s ({} retransmitted)",
                    s.peer,
                    s.name,
                    s.transfer.size(),
                    elapsed.as_secs_f64(),
                    s.transfer.retransmitted()
                );
            }
            Some(Outcome::ClientError(code)) => {
                // UEFI firmware ends its size probe this way on purpose.
                stats.count_error(TftpError::ClientAbort);
                debug!(
                    "tftp: {}: client ended {:?} with ERROR {}",
                    s.peer,
                    s.name,
                    code.to_u16()
                );
            }
            Some(Outcome::TimedOut) => {
                stats.count_error(TftpError::Timeout);
                info!(
                    "tftp: {}: {:?} timed out after {} bytes",
                    s.peer, s.name, s.bytes
                );
            }
            Some(Outcome::Aborted) | None => {
                stats.count_error(TftpError::Aborted);
                info!(
                    "tftp: {}: {:?} aborted after {} bytes",
                    s.peer, s.name, s.bytes
                );
            }
        }
    }
}

/// Opens the socket that is the server's TID for one transfer, on the
/// listener's address and a fresh port.
fn transfer_socket(
    peer: SocketAddr,
    local: Option<SocketAddr>,
    t: &Transfer,
) -> io::Result<UdpSocket> {
    let ip = match local {
        Some(l) => l.ip(),
        None if peer.is_ipv6() => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    };
    let addr = SocketAddr::new(ip, 0);
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Room for a whole window, so one window leaves in one batch.
    let window_bytes = t.windowsize() * (t.blksize() + DATA_HEADER_LEN + 64);
    let _ = socket.set_send_buffer_size(window_bytes.clamp(64 << 10, MAX_SNDBUF));
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(UdpSocket::from_std(socket.into()))
}

fn open_error(e: &io::Error) -> (TftpError, ErrorCode, &'static str) {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => (
            TftpError::NotFound,
            ErrorCode::FileNotFound,
            "File not found",
        ),
        Some(libc::EACCES)
        | Some(libc::EPERM)
        | Some(libc::EXDEV)
        | Some(libc::ELOOP)
        | Some(libc::ENAMETOOLONG) => (
            TftpError::AccessDenied,
            ErrorCode::AccessViolation,
            "Access violation",
        ),
        _ => (
            TftpError::Internal,
            ErrorCode::NotDefined,
            "Cannot open file",
        ),
    }
}

fn packet_kind(p: &Packet<'_>) -> &'static str {
    match p {
        Packet::Rrq(_) => "RRQ",
        Packet::Wrq(_) => "WRQ",
        Packet::Data { .. } => "DATA",
        Packet::Ack { .. } => "ACK",
        Packet::Error { .. } => "ERROR",
        Packet::Oack { .. } => "OACK",
        Packet::Unknown(_) => "unknown opcode",
    }
}
