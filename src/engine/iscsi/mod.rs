//! The iSCSI service of one worker: its SO_REUSEPORT listeners and the TCP
//! connections it accepted, each driven through login and the full feature
//! phase by the sans-IO state machines of [`crate::iscsi`].
//!
//! A connection stays on the worker that accepted it. Its receive buffer
//! ([`rx::RxBuf`]) is read only while it holds less than a chunk or an
//! incomplete PDU (so a flood of unanswered PDUs meets TCP's window, not
//! an ever larger buffer); one read takes every command PDU the socket has, and all of them are framed
//! with the negotiated digests and data limit and handled (a bounded number
//! per wakeup) before anything is written. Answers go to an [`OutQueue`]:
//! headers, and reads up to [`INLINE_READ_MAX`], are appended to one byte
//! buffer so a batch leaves in one `send`; larger reads are ranges of the
//! backing store that leave by `sendfile` (or by pread when a data digest
//! needs the bytes, or the store cannot be sent).
//!
//! Not done yet: an I/O thread pool (writes and flushes run on the worker,
//! see `store.rs`); the per-command latency table is a HashMap insert and
//! remove per command.

pub mod rx;
mod store;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

pub use store::Store;

use super::outq::{FilePath, OutQueue};
use super::stats::new_histogram;
use super::timers::Timers;
use crate::iscsi::adapter::TargetAdapter;
use crate::iscsi::backend::Payload;
use crate::iscsi::chap::CHALLENGE_LEN;
use crate::iscsi::config::{IscsiConfig, ReadPath};
use crate::iscsi::frame::{self, Digests, Frame, Pdu};
use crate::iscsi::login::{Established, Login, SessionType, Step, TargetEntry, LOGIN_MAX_DATA};
use crate::iscsi::negotiate::Limits;
use crate::iscsi::pdu::Header;
use crate::iscsi::scsi::lu::{LogicalUnit, LuConfig, NexusId};
use crate::iscsi::scsi::Target;
use crate::iscsi::session::{CloseReason, Session, Timers as SessionTimers};
use crate::sys;
use rx::RxBuf;

pub const LISTENER_BASE: usize = 4 << 20;
const CONN_BASE: usize = 5 << 20;
const CONN_END: usize = 6 << 20;

/// PDUs handled per connection per wakeup, so one busy initiator cannot
/// starve the other sessions of this worker.
const MAX_PDUS_PER_WAKEUP: usize = 64;
/// Connections accepted per listener per wakeup.
const MAX_ACCEPTS_PER_WAKEUP: usize = 32;
/// How often a worker merges its command latencies into the shared copy.
const LATENCY_PUBLISH: Duration = Duration::from_secs(1);
/// Commands remembered for latency per connection; past it (commands that
/// never finish, say aborted ones) the table starts afresh.
const MAX_STARTED: usize = 4096;
/// How long a logged-out connection may take to read its Logout Response.
const CLOSE_LINGER: Duration = Duration::from_secs(5);
/// Bytes read per `read` call: a connection starts at the smaller size and
/// doubles towards the larger each time a read fills its chunk. A session
/// that sends only command PDUs (a booting machine reading its disk) keeps
/// a small buffer, so hundreds of them cost a few MiB, not 256 KiB each;
/// one that streams Data-Out gets big reads within a few wakeups.
const READ_CHUNK_MIN: usize = 16 << 10;
const READ_CHUNK: usize = 256 << 10;
/// Reads up to this size leave as bytes copied into the output queue
/// behind their header (one `pread`, and one `send` for a whole batch of
/// PDUs) rather than by `sendfile`: for small reads the extra `sendfile`
/// call and separate header `send` per PDU cost more than copying the data.
const INLINE_READ_MAX: u32 = 32 << 10;
/// Padding source (a data segment pads to 4 bytes, RFC 7143 11.2.3).
const ZEROS: [u8; 4] = [0; 4];
/// Queued output past which a connection stops reading new commands until
/// the initiator drains it (back-pressure, bounds memory per connection).
const MAX_QUEUED: u64 = 16 << 20;

/// Counters of one worker's iSCSI service.
#[derive(Debug)]
pub struct IscsiStats {
    pub connections: AtomicU64,
    pub logins: AtomicU64,
    pub login_failures: AtomicU64,
    pub commands: AtomicU64,
    pub data_in_bytes: AtomicU64,
    pub data_out_bytes: AtomicU64,
    pub rejects: AtomicU64,
    pub active: AtomicU64,
    /// SCSI command latency in microseconds, from the command PDU's arrival
    /// to its status being queued. The worker records into its own copy and
    /// merges it here once a second, so this lock is never on the command
    /// path.
    pub latency: Mutex<Histogram<u64>>,
}

impl Default for IscsiStats {
    fn default() -> Self {
        IscsiStats {
            connections: AtomicU64::new(0),
            logins: AtomicU64::new(0),
            login_failures: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            data_in_bytes: AtomicU64::new(0),
            data_out_bytes: AtomicU64::new(0),
            rejects: AtomicU64::new(0),
            active: AtomicU64::new(0),
            latency: Mutex::new(new_histogram()),
        }
    }
}

/// What every worker shares: targets, their stores, the settings.
#[derive(Debug)]
pub struct IscsiContext {
    pub config: IscsiConfig,
    limits: Limits,
    timers: SessionTimers,
    entries: Vec<TargetEntry>,
    /// Per target, per LUN.
    stores: Vec<Vec<Store>>,
    /// Per target, the logical units as a fresh session sees them.
    templates: Vec<Target>,
}

impl IscsiContext {
    /// Opens every backing store; the first that fails is the error.
    pub fn new(config: &IscsiConfig) -> io::Result<IscsiContext> {
        let mut stores = Vec::new();
        let mut templates = Vec::new();
        for (t, target) in config.target.iter().enumerate() {
            let mut luns = Vec::new();
            let mut units = Vec::new();
            for (l, lun) in target.luns.iter().enumerate() {
                let mut store = Store::open(&lun.path, lun.read_only).map_err(|e| {
                    io::Error::new(e.kind(), format!("iscsi.target[{t}].luns[{l}]: {e}"))
                })?;
                if config.read_path == ReadPath::Pread {
                    store.sendfile = false;
                }
                units.push(LogicalUnit::new(LuConfig {
                    target_iqn: target.iqn.clone(),
                    lun: l as u16,
                    size_bytes: store.size,
                    read_only: store.read_only,
                    unmap: store.unmap,
                }));
                luns.push(store);
            }
            stores.push(luns);
            templates.push(Target::new(units));
        }
        Ok(IscsiContext {
            limits: config.limits(),
            timers: config.timers(),
            entries: config.targets(),
            config: config.clone(),
            stores,
            templates,
        })
    }

    fn store(&self, target: Option<usize>, lun: u16) -> Option<&Store> {
        self.stores.get(target?)?.get(usize::from(lun))
    }
}

/// Binds one listener of one worker.
pub fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    sys::set_reuse_port(&socket)?;
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("iscsi.listen {addr}: {e}")))?;
    socket.listen(1024)?;
    Ok(TcpListener::from_std(socket.into()))
}

enum Phase {
    Login(Box<Login>),
    Full {
        session: Box<Session>,
        adapter: TargetAdapter,
        target: Option<usize>,
    },
    /// Answer queued; close once it is written.
    Closing,
}

struct Conn {
    ctx: Arc<IscsiContext>,
    stream: TcpStream,
    peer: SocketAddr,
    rx: RxBuf,
    phase: Phase,
    out: OutQueue,
    timer: Option<Instant>,
    /// The input stopped at a bound or for back-pressure: read again soon.
    more: bool,
    /// This connection's read size, READ_CHUNK_MIN..=READ_CHUNK.
    chunk: usize,
    /// Arrival time of each SCSI command in flight, by ITT, for latency.
    started: HashMap<u32, Instant>,
    /// Since when a closing connection has had output it would not take.
    out_stalled_since: Option<Instant>,
    /// When the stores' sizes were last compared with what the session's
    /// logical units report.
    size_checked: Instant,
    /// Session counters already added to the worker's, so each drive adds
    /// only what is new and a scrape sees sessions that are still open.
    reported: crate::iscsi::session::Stats,
}

/// One worker's iSCSI service.
pub struct IscsiService {
    ctx: Arc<IscsiContext>,
    stats: Arc<IscsiStats>,
    worker: usize,
    listeners: Vec<(TcpListener, SocketAddr)>,
    conns: Slab<Conn>,
    timers: Timers,
    next_tsih: u16,
    backlog: Vec<Token>,
    expired: Vec<usize>,
    /// Command latencies of this worker since the last merge into `stats`.
    latency: Histogram<u64>,
    published: Instant,
}

impl IscsiService {
    pub fn new(
        ctx: Arc<IscsiContext>,
        stats: Arc<IscsiStats>,
        worker: usize,
        listeners: Vec<TcpListener>,
        registry: &Registry,
    ) -> io::Result<IscsiService> {
        let mut bound = Vec::new();
        for (i, mut l) in listeners.into_iter().enumerate() {
            registry.register(&mut l, Token(LISTENER_BASE + i), Interest::READABLE)?;
            let addr = l.local_addr()?;
            bound.push((l, addr));
        }
        Ok(IscsiService {
            ctx,
            stats,
            worker,
            listeners: bound,
            conns: Slab::new(),
            timers: Timers::default(),
            next_tsih: 0,
            backlog: Vec::new(),
            expired: Vec::new(),
            latency: new_histogram(),
            published: Instant::now(),
        })
    }

    pub fn owns(token: Token) -> bool {
        (LISTENER_BASE..CONN_END).contains(&token.0)
    }

    /// New logins use `ctx` (targets, LUNs, CHAP); sessions keep theirs.
    pub fn reload(&mut self, ctx: Arc<IscsiContext>) {
        self.ctx = ctx;
    }

    pub fn active(&self) -> usize {
        self.conns.len()
    }

    pub fn has_backlog(&self) -> bool {
        !self.backlog.is_empty()
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    pub fn stop_listening(&mut self, registry: &Registry) {
        for (mut l, _) in self.listeners.drain(..) {
            let _ = registry.deregister(&mut l);
        }
        self.backlog.retain(|t| t.0 >= CONN_BASE);
    }

    /// Closes every connection now.
    pub fn close_all(&mut self, registry: &Registry) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.close(key, registry, "server stopping");
        }
    }

    pub fn ready(&mut self, token: Token, registry: &Registry, now: Instant) {
        if token.0 < CONN_BASE {
            self.accept(token.0 - LISTENER_BASE, registry, now);
        } else {
            self.drive(token.0 - CONN_BASE, registry, now);
        }
    }

    pub fn run_pending(&mut self, registry: &Registry, now: Instant) {
        if !self.latency.is_empty()
            && now.saturating_duration_since(self.published) >= LATENCY_PUBLISH
        {
            if let Ok(mut shared) = self.stats.latency.lock() {
                let _ = shared.add(&self.latency);
            }
            self.latency.reset();
            self.published = now;
        }
        for token in std::mem::take(&mut self.backlog) {
            self.ready(token, registry, now);
        }
        let mut expired = std::mem::take(&mut self.expired);
        self.timers.expired(now, 1024, &mut expired);
        for &key in &expired {
            if let Some(c) = self.conns.get_mut(key) {
                c.timer = None;
                match &mut c.phase {
                    Phase::Login(login) if login.deadline() <= now => {
                        debug!("iscsi: {}: login timed out", c.peer);
                        self.stats.login_failures.fetch_add(1, Ordering::Relaxed);
                        self.close(key, registry, "login timeout");
                        continue;
                    }
                    Phase::Full { session, .. } => session.handle_timeout(now),
                    _ => {}
                }
            }
            self.drive(key, registry, now);
        }
        expired.clear();
        self.expired = expired;
    }

    fn accept(&mut self, index: usize, registry: &Registry, now: Instant) {
        for _ in 0..MAX_ACCEPTS_PER_WAKEUP {
            let Some((listener, _)) = self.listeners.get(index) else {
                return;
            };
            let (mut stream, peer) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    debug!("iscsi: accept failed: {e}");
                    return;
                }
            };
            let tsih = self.tsih();
            let entry = self.conns.vacant_entry();
            let key = entry.key();
            if CONN_BASE + key >= CONN_END {
                return;
            }
            let _ = stream.set_nodelay(true);
            if let Err(e) = registry.register(
                &mut stream,
                Token(CONN_BASE + key),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!("iscsi: {peer}: cannot register: {e}");
                continue;
            }
            let login = Login::new(
                self.ctx.limits.clone(),
                tsih,
                random_seed(),
                now + self.ctx.config.login_timeout,
            );
            entry.insert(Conn {
                ctx: self.ctx.clone(),
                stream,
                peer,
                rx: RxBuf::default(),
                chunk: READ_CHUNK_MIN,
                phase: Phase::Login(Box::new(login)),
                out: OutQueue::default(),
                timer: None,
                more: true,
                out_stalled_since: None,
                started: HashMap::new(),
                // Due at once: a new session must not start with a size
                // the store had at start-up.
                size_checked: now.checked_sub(SIZE_CHECK_INTERVAL).unwrap_or(now),
                reported: Default::default(),
            });
            self.stats.connections.fetch_add(1, Ordering::Relaxed);
            self.stats.active.fetch_add(1, Ordering::Relaxed);
            debug!("iscsi: {peer}: connected");
            self.drive(key, registry, now);
        }
        self.backlog.push(Token(LISTENER_BASE + index));
    }

    /// A session handle unique among this process's sessions.
    fn tsih(&mut self) -> u16 {
        self.next_tsih = self.next_tsih.wrapping_add(1) & 0x03ff;
        if self.next_tsih == 0 {
            self.next_tsih = 1;
        }
        ((self.worker as u16 & 0x3f) << 10) | self.next_tsih
    }

    /// Reads, handles and writes what a connection can, then re-arms it.
    fn drive(&mut self, key: usize, registry: &Registry, now: Instant) {
        let result = self.drive_inner(key, now);
        self.report(key);
        if let Err(reason) = result {
            return self.close(key, registry, &reason);
        }
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.out.is_empty() {
            c.out_stalled_since = None;
        } else if c.out_stalled_since.is_none() {
            c.out_stalled_since = Some(now);
        }
        let deadline = match &c.phase {
            Phase::Login(login) => Some(login.deadline()),
            Phase::Full { session, .. } if session.close_reason().is_some() => {
                c.out_stalled_since.map(|t| t + CLOSE_LINGER)
            }
            Phase::Full { session, .. } => session.poll_timeout(),
            Phase::Closing => c.out_stalled_since.map(|t| t + CLOSE_LINGER),
        };
        self.timers.reschedule(key, &mut c.timer, deadline);
        let done = match &c.phase {
            Phase::Closing => {
                c.out.is_empty()
                    || c.out_stalled_since
                        .is_some_and(|t| now.saturating_duration_since(t) >= CLOSE_LINGER)
            }
            // A logout answer is worth delivering; after a dead ping, a
            // protocol or digest error nothing queued is (the initiator may
            // well have stopped reading), so the connection goes at once.
            Phase::Full { session, .. } => match session.close_reason() {
                Some(CloseReason::Logout) => {
                    c.out.is_empty()
                        || c.out_stalled_since
                            .is_some_and(|t| now.saturating_duration_since(t) >= CLOSE_LINGER)
                }
                Some(_) => true,
                None => false,
            },
            Phase::Login(_) => false,
        };
        if done {
            let reason = match &c.phase {
                Phase::Full { session, .. } => match session.close_reason() {
                    Some(CloseReason::Logout) => "logout".to_owned(),
                    Some(CloseReason::NopTimeout) => "no answer to a ping".to_owned(),
                    Some(CloseReason::ProtocolError) => "protocol error".to_owned(),
                    Some(CloseReason::DigestError) => "digest error".to_owned(),
                    None => "closed".to_owned(),
                },
                _ => "login refused".to_owned(),
            };
            return self.close(key, registry, &reason);
        }
        if c.more {
            self.backlog.push(Token(CONN_BASE + key));
        }
    }

    fn drive_inner(&mut self, key: usize, now: Instant) -> Result<(), String> {
        let stats = self.stats.clone();
        let Some(c) = self.conns.get_mut(key) else {
            return Ok(());
        };
        // The context the connection started with: a reload changes what
        // new logins see, never a session in flight.
        let ctx = c.ctx.clone();
        c.more = false;
        // Write first: a full queue is back-pressure on the initiator.
        flush(c, &ctx)?;
        if c.out.pending() > MAX_QUEUED {
            return Ok(());
        }
        check_sizes(c, &ctx, now);
        // Read only when what is buffered is less than a chunk or ends in
        // an incomplete PDU: an initiator streaming PDUs that get no answer
        // (NOP-Outs with the reserved ITT) faster than MAX_PDUS_PER_WAKEUP
        // are handled would otherwise grow the buffer without end. TCP's
        // window then pushes back on the sender instead.
        let eof = if has_backlog(c) {
            c.more = true;
            false
        } else {
            fill(c)?
        };
        let mut handled = 0;
        loop {
            if handled == MAX_PDUS_PER_WAKEUP || c.out.pending() > MAX_QUEUED {
                c.more = true;
                break;
            }
            let (digests, max_data) = match &c.phase {
                Phase::Login(_) => (Digests::default(), LOGIN_MAX_DATA),
                Phase::Full { session, .. } => (session.digests(), session.max_recv_data()),
                Phase::Closing => break,
            };
            match frame::frame(c.rx.data(), digests, max_data) {
                Ok(Frame::Incomplete { .. }) => break,
                Ok(Frame::Complete(_)) | Err(_) => {}
            }
            handled += 1;
            let consumed = handle_one(c, &ctx, &stats, digests, max_data, now);
            if consumed == 0 {
                break;
            }
            c.rx.consume(consumed);
        }
        run_io(c, &ctx);
        queue_output(c, &ctx, &mut self.latency, now)?;
        flush(c, &ctx)?;
        if eof && c.out.is_empty() {
            return Err("closed by the initiator".into());
        }
        Ok(())
    }

    /// Adds what the connection's session counted since the last report.
    fn report(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let Phase::Full { session, .. } = &c.phase else {
            return;
        };
        let now = session.stats();
        let was = std::mem::replace(&mut c.reported, now);
        // A session's first READ and WRITE mark the boot timeline.
        let initiator = &session.established().initiator_name;
        if was.data_in_bytes == 0 && now.data_in_bytes > 0 {
            info!("iscsi: {}: {initiator}: first READ data sent", c.peer);
        }
        if was.data_out_bytes == 0 && now.data_out_bytes > 0 {
            info!("iscsi: {}: {initiator}: first WRITE data received", c.peer);
        }
        let add = |counter: &AtomicU64, now: u64, was: u64| {
            counter.fetch_add(now.saturating_sub(was), Ordering::Relaxed);
        };
        add(&self.stats.commands, now.commands, was.commands);
        add(
            &self.stats.data_in_bytes,
            now.data_in_bytes,
            was.data_in_bytes,
        );
        add(
            &self.stats.data_out_bytes,
            now.data_out_bytes,
            was.data_out_bytes,
        );
        add(&self.stats.rejects, now.rejects, was.rejects);
    }

    fn close(&mut self, key: usize, registry: &Registry, reason: &str) {
        let Some(mut c) = self.conns.try_remove(key) else {
            return;
        };
        self.timers.reschedule(key, &mut c.timer, None);
        let _ = registry.deregister(&mut c.stream);
        self.stats.active.fetch_sub(1, Ordering::Relaxed);
        if let Phase::Full { session, .. } = &c.phase {
            info!(
                "iscsi: {}: {} logged out or disconnected ({reason})",
                c.peer,
                session.established().initiator_name
            );
        } else {
            debug!("iscsi: {}: closed ({reason})", c.peer);
        }
    }
}

fn random_seed() -> [u8; CHALLENGE_LEN + 1] {
    let mut seed = [0u8; CHALLENGE_LEN + 1];
    if let Err(e) = sys::random(&mut seed) {
        // Without randomness CHAP challenges would repeat: make that loud.
        warn!("iscsi: no random bytes for CHAP challenges: {e}");
    }
    seed
}

/// True when at least a chunk of unhandled bytes is buffered and it starts
/// with a whole PDU (or one the framing refuses): handling comes before
/// reading more.
fn has_backlog(c: &Conn) -> bool {
    if c.rx.data().len() < READ_CHUNK {
        return false;
    }
    let (digests, max_data) = match &c.phase {
        Phase::Login(_) => (Digests::default(), LOGIN_MAX_DATA),
        Phase::Full { session, .. } => (session.digests(), session.max_recv_data()),
        Phase::Closing => return true,
    };
    !matches!(
        frame::frame(c.rx.data(), digests, max_data),
        Ok(Frame::Incomplete { .. })
    )
}

/// Reads what is available, up to one chunk; true at end of stream.
fn fill(c: &mut Conn) -> Result<bool, String> {
    match c.rx.read_from(&mut c.stream, c.chunk) {
        Ok(0) => Ok(true),
        Ok(n) => {
            // There may be more behind this chunk, and a bigger chunk
            // would have taken it in one call.
            if n == c.chunk {
                c.more = true;
                c.chunk = (c.chunk * 2).min(READ_CHUNK);
            }
            Ok(false)
        }
        Err(e)
            if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted =>
        {
            Ok(false)
        }
        Err(e) => Err(format!("read failed: {e}")),
    }
}

/// Handles the PDU at the start of `c.rx`; returns the bytes it used, or 0
/// when the connection must stop reading (closing).
fn handle_one(
    c: &mut Conn,
    ctx: &IscsiContext,
    stats: &IscsiStats,
    digests: Digests,
    max_data: u32,
    now: Instant,
) -> usize {
    let parsed = Pdu::parse(c.rx.data(), digests, max_data);
    match std::mem::replace(&mut c.phase, Phase::Closing) {
        Phase::Login(login) => {
            let (pdu, len) = match parsed {
                Ok(p) => p,
                Err(e) => {
                    debug!("iscsi: {}: unusable PDU during login: {e:?}", c.peer);
                    stats.login_failures.fetch_add(1, Ordering::Relaxed);
                    return 0;
                }
            };
            match login.handle(&pdu, &ctx.entries) {
                Step::Continue(login, resp) => {
                    c.out.push_bytes(resp.encode());
                    c.phase = Phase::Login(login);
                }
                Step::FullFeature(est, resp) => {
                    c.out.push_bytes(resp.encode());
                    stats.logins.fetch_add(1, Ordering::Relaxed);
                    c.phase = full_feature(*est, c, ctx, now);
                }
                Step::Refused(resp, status) => {
                    debug!("iscsi: {}: login refused: {status:?}", c.peer);
                    stats.login_failures.fetch_add(1, Ordering::Relaxed);
                    c.out.push_bytes(resp.encode());
                    return len;
                }
            }
            len
        }
        Phase::Full {
            mut session,
            mut adapter,
            target,
        } => {
            let used = match parsed {
                Ok((pdu, len)) => {
                    if let Header::ScsiCommand(cmd) = &pdu.header {
                        if c.started.len() >= MAX_STARTED {
                            c.started.clear();
                        }
                        c.started.insert(cmd.itt, now);
                    }
                    if let Some(w) = session.handle_pdu(&pdu, now, &mut adapter, &ctx.entries) {
                        let result = match (ctx.store(target, w.lun), pdu.data.get(w.range.clone()))
                        {
                            (Some(store), Some(bytes)) => store.write(w.offset, bytes),
                            _ => Err(io::ErrorKind::InvalidInput),
                        };
                        session.io_complete(w.id, result, &mut adapter);
                    }
                    len
                }
                Err(e) => {
                    debug!("iscsi: {}: {e:?}", c.peer);
                    let skip = match e {
                        // The header is sound: skip this PDU and go on.
                        crate::iscsi::frame::PduError::DataDigest { .. } => {
                            match frame::frame(c.rx.data(), digests, max_data) {
                                Ok(Frame::Complete(layout)) => layout.total(),
                                _ => 0,
                            }
                        }
                        _ => 0,
                    };
                    session.handle_error(e);
                    skip
                }
            };
            c.phase = Phase::Full {
                session,
                adapter,
                target,
            };
            used
        }
        Phase::Closing => 0,
    }
}

fn full_feature(est: Established, c: &Conn, ctx: &IscsiContext, now: Instant) -> Phase {
    let target = match est.session_type {
        SessionType::Normal => est.target,
        SessionType::Discovery => None,
    };
    let scsi = target
        .and_then(|t| ctx.templates.get(t).cloned())
        .unwrap_or_else(|| Target::new(Vec::new()));
    // The nexus: the initiator's ISID and name, with our TSIH.
    let mut h: u64 = u64::from(est.tsih);
    for b in est.isid.iter().chain(est.initiator_name.as_bytes()) {
        h = h.wrapping_mul(0x100_0000_01b3).wrapping_add(u64::from(*b));
    }
    let local = c.stream.local_addr().ok();
    let portals = ctx
        .config
        .listen
        .iter()
        .map(|a| match local {
            Some(l) if a.ip().is_unspecified() => SocketAddr::new(l.ip(), a.port()),
            _ => *a,
        })
        .collect();
    info!(
        "iscsi: {}: {} logged in ({:?}{})",
        c.peer,
        est.initiator_name,
        est.session_type,
        target
            .and_then(|t| ctx.entries.get(t))
            .map(|e| format!(", {}", e.iqn))
            .unwrap_or_default()
    );
    let session = Session::new(est, &ctx.limits, ctx.timers, portals, now);
    Phase::Full {
        session: Box::new(session),
        adapter: TargetAdapter::new(scsi, NexusId(h)),
        target,
    }
}

/// How often a session compares its stores' sizes with its capacity.
const SIZE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Notices a backing store that was grown or shrunk (a zvol resized, an
/// image extended) so the session's next command sees UNIT ATTENTION
/// "capacity data has changed" and the new size. One fstat or ioctl per LUN
/// per second per connection.
fn check_sizes(c: &mut Conn, ctx: &IscsiContext, now: Instant) {
    if now.saturating_duration_since(c.size_checked) < SIZE_CHECK_INTERVAL {
        return;
    }
    let Phase::Full {
        adapter,
        target: Some(t),
        ..
    } = &mut c.phase
    else {
        return;
    };
    c.size_checked = now;
    for (lun, store) in ctx.stores.get(*t).into_iter().flatten().enumerate() {
        if let Ok(size) = store.current_size() {
            adapter.resize(lun as u16, size);
        }
    }
}

/// Runs the I/O the session asked for (flush, unmap, ...).
fn run_io(c: &mut Conn, ctx: &IscsiContext) {
    let Phase::Full {
        session,
        adapter,
        target,
    } = &mut c.phase
    else {
        return;
    };
    while let Some((id, req)) = session.poll_io() {
        let lun = match &req {
            crate::iscsi::backend::IoRequest::Flush { lun }
            | crate::iscsi::backend::IoRequest::Unmap { lun, .. }
            | crate::iscsi::backend::IoRequest::WriteSame { lun, .. }
            | crate::iscsi::backend::IoRequest::Compare { lun, .. }
            | crate::iscsi::backend::IoRequest::Write { lun, .. } => *lun,
        };
        let result = match ctx.store(*target, lun) {
            Some(store) => store.run(&req),
            None => Err(io::ErrorKind::NotFound),
        };
        session.io_complete(id, result, adapter);
    }
}

/// Records a command's latency when its status leaves: a SCSI Response, or
/// a Data-In with the S bit (RFC 7143 11.4, 11.7).
fn record_latency(
    bhs: &[u8; 48],
    started: &mut HashMap<u32, Instant>,
    latency: &mut Histogram<u64>,
    now: Instant,
) {
    let opcode = bhs[0] & 0x3f;
    let has_status = opcode == 0x21 || (opcode == 0x25 && bhs[1] & 0x01 != 0);
    if !has_status {
        return;
    }
    let itt = u32::from_be_bytes([bhs[16], bhs[17], bhs[18], bhs[19]]);
    if let Some(t0) = started.remove(&itt) {
        let micros = now.saturating_duration_since(t0).as_micros().max(1) as u64;
        let _ = latency.record(micros.min(3_600_000_000));
    }
}

/// Moves what the session wants to send into the output queue.
fn queue_output(
    c: &mut Conn,
    ctx: &IscsiContext,
    latency: &mut Histogram<u64>,
    now: Instant,
) -> Result<(), String> {
    let Phase::Full {
        session, target, ..
    } = &mut c.phase
    else {
        return Ok(());
    };
    // Pull no more than the queue bound: past it the rest waits inside the
    // session (as small descriptors) until the initiator reads. This is what
    // bounds memory on the pread path, where queued data are real bytes.
    while c.out.pending() <= MAX_QUEUED {
        let Some(tx) = session.poll_transmit() else {
            break;
        };
        let pad = tx.pad_len();
        record_latency(&tx.header.bhs(), &mut c.started, latency, now);
        match &tx.data {
            Payload::None => c.out.push_slice(tx.header.as_slice()),
            Payload::Inline(bytes) => {
                c.out.push_slice(tx.header.as_slice());
                c.out.push_slice(bytes);
                c.out.push_slice(&ZEROS[..pad]);
                if tx.data_digest {
                    c.out.push_slice(&frame::data_digest([&bytes[..]]));
                }
            }
            Payload::Store { lun, offset, len } => {
                let Some(store) = ctx.store(*target, *lun) else {
                    return Err(format!("data for missing LUN {lun}"));
                };
                c.out.push_slice(tx.header.as_slice());
                if !tx.data_digest && store.sendfile && *len <= INLINE_READ_MAX {
                    c.out
                        .push_read(&store.file, *offset, *len as usize)
                        .map_err(|e| format!("read of LUN {lun} failed: {e}"))?;
                    c.out.push_slice(&ZEROS[..pad]);
                } else if tx.data_digest || !store.sendfile {
                    // The digest needs the bytes: read them once here.
                    let mut data = vec![0u8; *len as usize + pad];
                    let got = sys::pread_full(&store.file, &mut data[..*len as usize], *offset)
                        .map_err(|e| format!("read of LUN {lun} failed: {e}"))?;
                    if got < *len as usize {
                        return Err(format!("LUN {lun} shrank under a read"));
                    }
                    if tx.data_digest {
                        let digest = frame::data_digest([&data[..*len as usize]]);
                        data.extend_from_slice(&digest);
                    }
                    c.out.push_bytes(data);
                } else {
                    c.out
                        .push_file(store.file.clone(), *offset, u64::from(*len));
                    c.out.push_slice(&ZEROS[..pad]);
                }
            }
        }
    }
    Ok(())
}

fn flush(c: &mut Conn, _ctx: &IscsiContext) -> Result<(), String> {
    let fd = c.stream.as_raw_fd();
    c.out
        .flush(fd, FilePath::Sendfile)
        .map(|_| ())
        .map_err(|e| format!("write failed: {e}"))
}
