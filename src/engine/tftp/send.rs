//! The send half of the TFTP service: turning what a transfer asks for into
//! datagrams, from the shared image (header + slice of the mapping, no copy)
//! or a pread buffer, and handing them to the kernel in as few calls as it
//! allows (UDP GSO, sendmmsg, sendmsg).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use log::{debug, warn};
use mio::net::UdpSocket;

use super::{Scratch, Session};
use crate::config::SendPath;
use crate::engine::image::{Image, ImageCache};
use crate::engine::stats::{TftpError, WorkerStats};
use crate::sys::{self, Datagram, GsoRefusal, Segment};
use crate::tftp::transfer::Transmit;
use crate::tftp::wire::{self, ErrorCode, DATA_HEADER_LEN};

/// Sends until the transfer has nothing more or the socket is full.
pub(super) fn flush(
    s: &mut Session,
    scratch: &mut Scratch,
    stats: &WorkerStats,
    cache: &ImageCache,
    now: Instant,
) {
    loop {
        let mut attempted = 1;
        let sent = match s.transfer.poll_transmit() {
            None => return,
            Some(Transmit::Oack(bytes)) => send_one(&s.socket, bytes, s.peer),
            Some(Transmit::Error { code, message }) => {
                scratch.out.clear();
                wire::encode_error(&mut scratch.out, code, message);
                // An ERROR is sent at most once: if the socket is full it is
                // dropped, since the transfer is over either way.
                let _ = send_one(&s.socket, &scratch.out, s.peer);
                Ok(1)
            }
            Some(Transmit::Window { first, count }) => {
                attempted = count;
                if file_changed(s, first + count - 1, now) {
                    Err(io::Error::from_raw_os_error(libc::EFAULT))
                } else {
                    send_window(s, first, count, scratch, stats)
                }
            }
        };
        match sent {
            Ok(0) => return,
            Ok(n) => s.transfer.on_sent(n, now),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if sys::is_fault(&e) => {
                warn!(
                    "tftp: {}: {:?} changed on disk during the transfer; ending it",
                    s.peer, s.name
                );
                stats.tftp.count_error(TftpError::FileChanged);
                cache.evict(&s.image);
                s.transfer
                    .abort(ErrorCode::NotDefined, "File changed on server");
            }
            Err(e) if is_transient(&e) => {
                // A firewall drop, a full queue or an ICMP error left over
                // from an earlier packet: to the transfer it is loss, which
                // its timer recovers from, not a reason to give up.
                debug!("tftp: {}: send failed ({e}); treated as loss", s.peer);
                s.transfer.on_sent(attempted, now);
            }
            Err(e) => {
                debug!("tftp: {}: send failed: {e}", s.peer);
                s.transfer.abort(ErrorCode::NotDefined, "Server error");
            }
        }
    }
}

/// How often a transfer checks that its file was not rewritten in place.
const CHANGE_CHECK_INTERVAL: Duration = Duration::from_millis(10);

/// True when the file under the transfer was truncated or rewritten in
/// place since the transfer began. Checked (one fstat) at most every
/// [`CHANGE_CHECK_INTERVAL`] per image, a check shared by all its transfers
/// on all workers, and by this transfer itself before the window that holds
/// the last block, so a transfer never completes with a mix of old and new
/// bytes: a change before the last window ends it with an ERROR.
fn file_changed(s: &Session, last_in_window: u64, now: Instant) -> bool {
    let is_last = s.transfer.block(last_in_window).len < s.transfer.blksize();
    if is_last {
        s.image.changed()
    } else {
        s.image.changed_within(now, CHANGE_CHECK_INTERVAL)
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM)
            | Some(libc::ENOBUFS)
            | Some(libc::ECONNREFUSED)
            | Some(libc::EHOSTUNREACH)
            | Some(libc::ENETUNREACH)
            | Some(libc::EHOSTDOWN)
            | Some(libc::ENETDOWN)
    )
}

fn send_one(socket: &UdpSocket, bytes: &[u8], peer: SocketAddr) -> io::Result<u64> {
    socket.send_to(bytes, peer).map(|_| 1)
}

/// Sends blocks `first..first + count` with the configured path; returns how
/// many the kernel took.
fn send_window(
    s: &mut Session,
    first: u64,
    count: u64,
    scratch: &mut Scratch,
    stats: &WorkerStats,
) -> io::Result<u64> {
    let count = (count as usize).min(sys::MAX_BATCH);
    scratch.headers.clear();
    for seq in first..first + count as u64 {
        scratch
            .headers
            .push(wire::encode_data_header(s.transfer.block(seq).number));
    }

    // Where the payloads come from: the shared image, or a pread buffer.
    let first_block = s.transfer.block(first);
    let pread_base = match &*s.image {
        Image::File { origin } => {
            let file = &origin.file;
            let last = s.transfer.block(first + count as u64 - 1);
            let total = (last.offset - first_block.offset) as usize + last.len;
            scratch.pread.resize(total, 0);
            let got = sys::pread_full(file, &mut scratch.pread, first_block.offset)?;
            if got < total {
                return Err(io::Error::from_raw_os_error(libc::EFAULT));
            }
            Some(first_block.offset)
        }
        _ => None,
    };
    scratch.datagrams.clear();
    let mut payload_bytes = 0u64;
    for (i, seq) in (first..first + count as u64).enumerate() {
        let b = s.transfer.block(seq);
        let payload = match pread_base {
            Some(base) => {
                let start = (b.offset - base) as usize;
                scratch
                    .pread
                    .get(start..start + b.len)
                    .map(Segment::from_slice)
            }
            None => s.image.segment(b.offset, b.len),
        };
        let Some(payload) = payload else {
            return Err(io::Error::from_raw_os_error(libc::EFAULT));
        };
        payload_bytes += b.len as u64;
        scratch.datagrams.push(Datagram {
            header: Segment::from_slice(&scratch.headers[i]),
            payload,
        });
    }

    let fd = std::os::fd::AsRawFd::as_raw_fd(&s.socket);
    let sent = match s.image.as_ref() {
        Image::File { .. } => sys::send_datagrams(
            fd,
            &s.peer_addr,
            &scratch.datagrams,
            None,
            &mut scratch.batch,
        )?,
        _ => send_mapped(fd, s, scratch)?,
    };
    let sent_bytes: u64 = scratch.datagrams[..sent]
        .iter()
        .map(|d| d.payload.len as u64)
        .sum();
    debug_assert!(sent_bytes <= payload_bytes);
    s.bytes += sent_bytes;
    stats
        .tftp
        .bytes_sent
        .fetch_add(sent_bytes, Ordering::Relaxed);
    stats
        .tftp
        .packets_sent
        .fetch_add(sent as u64, Ordering::Relaxed);
    Ok(sent as u64)
}

/// The send for in-memory images, by path: GSO, sendmmsg, or one sendmsg
/// per datagram.
fn send_mapped(
    fd: std::os::fd::RawFd,
    s: &mut Session,
    scratch: &mut Scratch,
) -> io::Result<usize> {
    let segment = s.transfer.blksize() + DATA_HEADER_LEN;
    let dgrams = &scratch.datagrams;
    match s.path {
        SendPath::Gso | SendPath::Auto
            if scratch.gso && s.gso && dgrams.len() > 1 && 2 * segment <= sys::MAX_GSO_BYTES =>
        {
            let batch = &mut scratch.batch;
            match sys::send_datagrams(fd, &s.peer_addr, dgrams, Some(segment), batch) {
                Err(e) => {
                    match sys::gso_refusal(&e) {
                        Some(GsoRefusal::Kernel) => {
                            warn!("tftp: the kernel refuses UDP GSO ({e}); using sendmmsg on this worker");
                            scratch.gso = false;
                            sys::send_datagrams(fd, &s.peer_addr, dgrams, None, batch)
                        }
                        Some(GsoRefusal::Path) => {
                            debug!(
                                "tftp: {}: UDP GSO refused for this path ({e}); using sendmmsg",
                                s.peer
                            );
                            s.gso = false;
                            sys::send_datagrams(fd, &s.peer_addr, dgrams, None, batch)
                        }
                        None => Err(e),
                    }
                }
                ok => ok,
            }
        }
        SendPath::Sendmsg => {
            let mut sent = 0;
            for d in dgrams {
                match sys::send_datagrams(
                    fd,
                    &s.peer_addr,
                    std::slice::from_ref(d),
                    None,
                    &mut scratch.batch,
                ) {
                    Ok(n) if n > 0 => sent += n,
                    Ok(_) => break,
                    Err(e) if sent > 0 && e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            Ok(sent)
        }
        _ => sys::send_datagrams(fd, &s.peer_addr, dgrams, None, &mut scratch.batch),
    }
}
