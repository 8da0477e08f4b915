//! The output queue of one TCP connection: bytes built in memory (PDU
//! headers, small responses) interleaved with ranges of a backing file that
//! go out by `sendfile` without passing through user space.
//!
//! Sockets are non-blocking, so any write may stop part-way; the queue
//! remembers exactly where, and [`OutQueue::flush`] resumes there on the
//! next writable event.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

use crate::sys;

/// How file ranges leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilePath {
    /// In-kernel copy (Linux: files and block devices; FreeBSD: files).
    Sendfile,
    /// pread into a buffer, then write: for stores sendfile cannot serve and
    /// for data that must be seen (digests).
    Pread,
}

#[derive(Debug)]
enum Chunk {
    Bytes {
        buf: Vec<u8>,
        pos: usize,
    },
    File {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
}

/// Pending output of one connection.
#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<Chunk>,
    /// Bytes queued and not yet written.
    pending: u64,
    /// Buffer for the pread path, kept between calls.
    scratch: Vec<u8>,
    /// A written-out byte chunk's buffer, reused for the next one so a
    /// steady stream of small PDUs allocates nothing.
    spare: Vec<u8>,
}

/// Small pieces are appended to the last byte chunk up to this size, so a
/// batch of headers and small reads leaves in one `send`.
const COALESCE_MAX: usize = 256 << 10;

/// Largest piece read by the pread path at once.
const PREAD_CHUNK: usize = 256 << 10;

impl OutQueue {
    pub fn push_bytes(&mut self, buf: Vec<u8>) {
        if !buf.is_empty() {
            self.pending += buf.len() as u64;
            self.chunks.push_back(Chunk::Bytes { buf, pos: 0 });
        }
    }

    /// Appends `bytes` to the last byte chunk when it has room, so many
    /// small PDUs leave in one `send` and need no allocation each.
    pub fn push_slice(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.pending += bytes.len() as u64;
        self.tail(bytes.len()).extend_from_slice(bytes);
    }

    /// Appends `len` bytes of `file` at `offset`, read now into the last
    /// byte chunk (one `pread`, no allocation). For small reads, where
    /// one copy costs less than the extra `sendfile` call per PDU.
    pub fn push_read(&mut self, file: &File, offset: u64, len: usize) -> io::Result<()> {
        let buf = self.tail(len);
        let at = buf.len();
        buf.resize(at + len, 0);
        let got = sys::pread_full(file, &mut buf[at..], offset);
        match got {
            Ok(n) if n == len => {
                self.pending += len as u64;
                Ok(())
            }
            Ok(_) => {
                buf.truncate(at);
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "backing store shrank",
                ))
            }
            Err(e) => {
                buf.truncate(at);
                Err(e)
            }
        }
    }

    /// The byte chunk at the end of the queue with room for `len` more.
    fn tail(&mut self, len: usize) -> &mut Vec<u8> {
        let fits = matches!(self.chunks.back(), Some(Chunk::Bytes { buf, .. }) if buf.len() + len <= COALESCE_MAX);
        if !fits {
            let mut buf = std::mem::take(&mut self.spare);
            buf.clear();
            self.chunks.push_back(Chunk::Bytes { buf, pos: 0 });
        }
        match self.chunks.back_mut() {
            Some(Chunk::Bytes { buf, .. }) => buf,
            // A byte chunk was just found or pushed at the back.
            _ => unreachable!("the back chunk holds bytes"),
        }
    }

    pub fn push_file(&mut self, file: Arc<File>, offset: u64, len: u64) {
        if len > 0 {
            self.pending += len;
            self.chunks.push_back(Chunk::File { file, offset, len });
        }
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Bytes not yet written.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Writes as much as the socket takes; `Ok(true)` once the queue is
    /// empty, `Ok(false)` when the socket is full. A file that ends before
    /// its range is an `UnexpectedEof` error (the store shrank).
    pub fn flush(&mut self, sock: RawFd, path: FilePath) -> io::Result<bool> {
        loop {
            let more = self.chunks.len() > 1;
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let written = match front {
                Chunk::Bytes { buf, pos } => {
                    let r = if more {
                        sys::send_more(sock, &buf[*pos..])
                    } else {
                        write_fd(sock, &buf[*pos..])
                    };
                    match r {
                        Ok(n) => {
                            *pos += n;
                            n
                        }
                        Err(e) => return would_block(e),
                    }
                }
                Chunk::File { file, offset, len } => {
                    let want = (*len).min(isize::MAX as u64) as usize;
                    let r = match path {
                        FilePath::Sendfile => sys::sendfile(sock, file, *offset, want),
                        FilePath::Pread => pread_write(
                            sock,
                            file,
                            *offset,
                            want.min(PREAD_CHUNK),
                            &mut self.scratch,
                        ),
                    };
                    match r {
                        Ok(0) => {
                            return Err(io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "backing store shrank",
                            ))
                        }
                        Ok(n) => {
                            *offset += n as u64;
                            *len -= n as u64;
                            n
                        }
                        Err(e) => return would_block(e),
                    }
                }
            };
            self.pending -= written as u64;
            let done = match front {
                Chunk::Bytes { buf, pos } => *pos == buf.len(),
                Chunk::File { len, .. } => *len == 0,
            };
            if done {
                if let Some(Chunk::Bytes { buf, .. }) = self.chunks.pop_front() {
                    if buf.capacity() <= COALESCE_MAX * 2 {
                        self.spare = buf;
                    }
                }
            }
        }
        Ok(true)
    }
}

fn would_block(e: io::Error) -> io::Result<bool> {
    if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted {
        Ok(false)
    } else {
        Err(e)
    }
}

fn write_fd(sock: RawFd, bytes: &[u8]) -> io::Result<usize> {
    nix::sys::socket::send(
        sock,
        bytes,
        nix::sys::socket::MsgFlags::MSG_DONTWAIT | nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
    )
    .map_err(io::Error::from)
}

/// Reads `len` bytes at `offset` and writes what the socket takes. Bytes
/// read but not taken are read again next time (simple, and rare: the
/// socket was full).
fn pread_write(
    sock: RawFd,
    file: &File,
    offset: u64,
    len: usize,
    buf: &mut Vec<u8>,
) -> io::Result<usize> {
    buf.resize(len, 0);
    let got = sys::pread_full(file, buf, offset)?;
    if got == 0 {
        return Ok(0);
    }
    write_fd(sock, &buf[..got])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn roundtrip(path: FilePath) {
        let mut tmp = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        tmp.write_all(&data).unwrap();
        let file = Arc::new(tmp);
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let mut q = OutQueue::default();
        q.push_bytes(b"HDR1".to_vec());
        q.push_file(file.clone(), 10, 2_000_000);
        q.push_bytes(b"HDR2".to_vec());
        q.push_file(file, 2_999_990, 10);
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        let mut spins = 0;
        while !q.flush(a.as_raw_fd(), path).unwrap() {
            spins += 1;
            assert!(spins < 1_000_000);
            std::thread::yield_now();
        }
        assert_eq!(q.pending(), 0);
        drop(a);
        let got = reader.join().unwrap();
        let mut want = b"HDR1".to_vec();
        want.extend_from_slice(&data[10..2_000_010]);
        want.extend_from_slice(b"HDR2");
        want.extend_from_slice(&data[2_999_990..]);
        assert!(got == want, "bytes differ for {path:?}");
    }

    #[test]
    fn sendfile_and_pread_paths_send_identical_bytes() {
        roundtrip(FilePath::Sendfile);
        roundtrip(FilePath::Pread);
    }

    #[test]
    fn a_shrunk_store_is_an_error_not_a_hang() {
        let file = Arc::new(tempfile::tempfile().unwrap());
        let (a, _b) = UnixStream::pair().unwrap();
        let mut q = OutQueue::default();
        q.push_file(file, 0, 100);
        for path in [FilePath::Sendfile, FilePath::Pread] {
            let e = q.flush(a.as_raw_fd(), path).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        }
    }
}
