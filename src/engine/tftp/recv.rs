//! The receive half of the TFTP service: the datagrams a client sends to its
//! transfer's port (ACKs, ERRORs), taken in bursts with one `recvmmsg` and
//! fed to the transfer's state machine. Strangers get ERROR 5 (RFC 1350
//! section 4); an ERROR from a stranger is never answered (section 7).

use std::io;
use std::os::fd::AsRawFd;
use std::time::Instant;

use log::{debug, trace};

use super::{packet_kind, Session};
use crate::engine::stats::{TftpError, WorkerStats};
use crate::sys::{self, Received, RecvBatch};
use crate::tftp::transfer::Reaction;
use crate::tftp::wire::{self, ErrorCode, Packet};

/// Datagrams one `recvmmsg` takes from a transfer socket. A window brings
/// one ACK, and a client that ACKs every block (a lock-step client falling
/// behind) a few; more than this at once only comes from a hostile sender.
pub(super) const RECV_BATCH: usize = 32;
/// Slot size: a client's largest honest datagram on a transfer port is an
/// ERROR with its message (RFC 1350 allows 512 bytes of data); anything
/// longer is cut and ignored.
pub(super) const RECV_SLOT: usize = 1024;

/// Takes up to `max` datagrams from the session's socket and feeds them to
/// its transfer. Returns true when the socket was found empty.
///
/// A batch shorter than the slots counts as "empty": the kernel had nothing
/// more at that instant, and any datagram arriving afterwards raises a new
/// edge-triggered readiness event (Linux epoll and FreeBSD kqueue signal
/// each arrival), so the extra `recvmmsg` that would only return EAGAIN is
/// saved: one receive syscall per ACK instead of two.
pub(super) fn drain(
    s: &mut Session,
    rx: &mut RecvBatch,
    out: &mut Vec<u8>,
    stats: &WorkerStats,
    max: usize,
    now: Instant,
) -> bool {
    let fd = s.socket.as_raw_fd();
    let mut taken = 0;
    let mut calls = 0;
    while taken < max && calls < max {
        calls += 1;
        let n = match sys::recv_datagrams(fd, rx) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // ICMP port unreachable surfaces here as ECONNREFUSED (and is
                // consumed by reading it): the client is gone, and the timer
                // will end the transfer.
                trace!("tftp: {}: receive error: {e}", s.peer);
                continue;
            }
        };
        for i in 0..n {
            if let Some(d) = rx.get(i) {
                handle(s, d, out, stats, now);
            }
        }
        taken += n;
        if n < rx.capacity() {
            return true;
        }
    }
    false
}

/// One datagram on a transfer port.
fn handle(s: &mut Session, d: Received<'_>, out: &mut Vec<u8>, stats: &WorkerStats, now: Instant) {
    let Some(from) = d.from else {
        debug!("tftp: {}: datagram from a non-IP sender ignored", s.peer);
        stats.tftp.count_error(TftpError::Malformed);
        return;
    };
    if from != s.peer {
        return stranger(s, from, d.bytes, out, stats);
    }
    if d.truncated {
        debug!("tftp: {}: datagram over {RECV_SLOT} bytes ignored", s.peer);
        stats.tftp.count_error(TftpError::Malformed);
        return;
    }
    match Packet::parse(d.bytes) {
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

/// A datagram from another TID than the transfer's client.
fn stranger(
    s: &Session,
    from: std::net::SocketAddr,
    bytes: &[u8],
    out: &mut Vec<u8>,
    stats: &WorkerStats,
) {
    debug!(
        "tftp: {from}: packet for the transfer of {:?} to {} (unknown TID)",
        s.name, s.peer
    );
    stats.tftp.count_error(TftpError::UnknownTid);
    // An ERROR is never answered (RFC 1350 section 7): answering one would
    // let a spoofed packet set two ports (or one port and itself) replying
    // to each other without end.
    let is_error = bytes.get(..2) == Some(&wire::OP_ERROR.to_be_bytes()[..]);
    let local = s.socket.local_addr().ok();
    if !is_error && Some(from) != local {
        out.clear();
        wire::encode_error(out, ErrorCode::UnknownTransferId, "Unknown transfer ID");
        let _ = s.socket.send_to(out, from);
    }
}
