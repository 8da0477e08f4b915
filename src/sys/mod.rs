//! Operating-system calls: the only home of `unsafe` in dls.
//!
//! Each concern is one small function with the same signature on Linux and
//! FreeBSD; the per-OS bodies live in `linux.rs` and `freebsd.rs`. This
//! machine builds and tests only the Linux side: the FreeBSD bodies are
//! written against the FreeBSD manual pages and are untested here.
//!
//! Every libc return value becomes an `io::Result` through [`cvt`], which is
//! where errno is read.

use std::io;

#[cfg(target_os = "freebsd")]
mod freebsd;
#[cfg(target_os = "freebsd")]
pub use freebsd::*;
#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
pub use linux::*;

/// Turns a libc return value into an `io::Result`, reading errno on -1.
fn cvt<T: Copy + PartialEq + From<i8>>(ret: T) -> io::Result<T> {
    if ret == T::from(-1) {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A byte range to send, by address: a slice of a file mapping or of a
/// buffer. Kept as a raw pointer on purpose: userspace never dereferences
/// mapped file bytes, only the kernel copies from them inside a send call,
/// and a fault there (the file was truncated underneath the mapping) comes
/// back as `EFAULT` instead of a SIGBUS that would kill the process.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    pub ptr: *const u8,
    pub len: usize,
}

// SAFETY: a Segment is an address and a length that Rust code never
// dereferences; only a send call hands it to the kernel, and whoever makes
// that call keeps the memory alive for its duration. Moving the pair to
// another thread changes nothing about that.
unsafe impl Send for Segment {}

impl Segment {
    pub fn from_slice(s: &[u8]) -> Segment {
        Segment {
            ptr: s.as_ptr(),
            len: s.len(),
        }
    }
}

/// Why a UDP GSO send was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoRefusal {
    /// The kernel has no UDP GSO: stop trying on this worker.
    Kernel,
    /// Not for this destination or segment size: stop for this transfer.
    Path,
}

/// One datagram: a short header followed by a payload segment.
#[derive(Debug, Clone, Copy)]
pub struct Datagram {
    pub header: Segment,
    pub payload: Segment,
}

/// Reusable buffers for [`recv_datagrams`]: one slot per datagram, so a
/// burst of ACKs costs one `recvmmsg` and no allocation. The message headers
/// point into the batch's own heap buffers, which never grow after
/// [`RecvBatch::new`], so the batch can move without invalidating them.
pub struct RecvBatch {
    slot_len: usize,
    bufs: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// Datagrams held from the last call.
    count: usize,
}

// SAFETY: the raw pointers inside point only into the batch's own heap
// buffers (fixed size, freed with it); moving the batch to the worker thread
// that owns it leaves them valid, and only that thread uses them.
unsafe impl Send for RecvBatch {}

/// One datagram of a [`RecvBatch`].
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// Its bytes, cut at the slot length.
    pub bytes: &'a [u8],
    /// The sender; `None` for an address family other than IPv4/IPv6.
    pub from: Option<std::net::SocketAddr>,
    /// The datagram was longer than the slot and was cut.
    pub truncated: bool,
}

impl RecvBatch {
    /// Room for `slots` datagrams of up to `slot_len` bytes each.
    pub fn new(slots: usize, slot_len: usize) -> RecvBatch {
        let slots = slots.max(1);
        let mut b = RecvBatch {
            slot_len,
            bufs: vec![0; slots * slot_len],
            // SAFETY: sockaddr_storage is plain data; all-zero is valid.
            names: vec![unsafe { std::mem::zeroed() }; slots],
            iovecs: Vec::with_capacity(slots),
            msgs: Vec::with_capacity(slots),
            count: 0,
        };
        for i in 0..slots {
            b.iovecs.push(libc::iovec {
                iov_base: b.bufs[i * slot_len..].as_mut_ptr() as *mut libc::c_void,
                iov_len: slot_len,
            });
        }
        for i in 0..slots {
            // SAFETY: msghdr is plain data; zeroed is a valid empty header.
            let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
            hdr.msg_name = &mut b.names[i] as *mut libc::sockaddr_storage as *mut libc::c_void;
            hdr.msg_iov = &mut b.iovecs[i];
            hdr.msg_iovlen = 1;
            // SAFETY: as above, plain data.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr = hdr;
            b.msgs.push(m);
        }
        b
    }

    /// How many datagrams one call can take.
    pub fn capacity(&self) -> usize {
        self.msgs.len()
    }

    /// Datagrams held from the last [`recv_datagrams`].
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `i`th datagram of the last call.
    pub fn get(&self, i: usize) -> Option<Received<'_>> {
        if i >= self.count {
            return None;
        }
        let m = self.msgs.get(i)?;
        let len = (m.msg_len as usize).min(self.slot_len);
        let bytes = self.bufs.get(i * self.slot_len..i * self.slot_len + len)?;
        let name = self.names.get(i)?;
        // SAFETY: the kernel wrote a valid address of msg_namelen bytes
        // (at most sizeof(sockaddr_storage)) into this slot.
        let addr = unsafe { socket2::SockAddr::new(*name, m.msg_hdr.msg_namelen) };
        Some(Received {
            bytes,
            from: addr.as_socket(),
            truncated: m.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        })
    }

    /// Resets the per-call fields the kernel writes, before a call.
    fn prepare(&mut self) {
        self.count = 0;
        for m in &mut self.msgs {
            m.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            m.msg_hdr.msg_flags = 0;
            m.msg_len = 0;
        }
    }
}

/// Maps `file` read-only, whole.
///
/// The mapping is never read by dls itself: its bytes reach the wire only
/// through the kernel's copy in a send call (see [`Segment`]). If the file is
/// truncated in place, that copy fails with `EFAULT` and the caller ends the
/// transfers that used the mapping; no SIGBUS is raised in this process.
/// A file replaced by rename keeps its old inode alive for the mapping, so
/// transfers in flight finish with the bytes they started with.
pub fn map_file(file: &std::fs::File) -> io::Result<memmap2::Mmap> {
    // SAFETY: see above; the Mmap is only turned into Segments, never into
    // slices that Rust code reads.
    unsafe { memmap2::MmapOptions::new().map(file) }
}

/// `pread` that fills `buf` unless the file ends first; returns bytes read.
pub fn pread_full(file: &std::fs::File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Fills `buf` from the kernel's random source (getrandom(2): Linux 3.17+,
/// FreeBSD 12+).
pub fn random(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the pointer and length describe `rest`, which stays
        // borrowed for the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr() as *mut libc::c_void, rest.len(), 0) };
        match cvt(n) {
            Ok(n) => done += n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn recv_batch_takes_a_burst_with_senders_and_cut_datagrams() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let to = server.local_addr().unwrap();
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.send_to(b"\x00\x04\x00\x01", to).unwrap();
        b.send_to(&[7u8; 40], to).unwrap();
        a.send_to(&[9u8; 2000], to).unwrap();

        let mut batch = RecvBatch::new(2, 1024);
        let mut got = Vec::new();
        // Loopback delivers at once, but allow the kernel a moment.
        for _ in 0..1000 {
            match recv_datagrams(server.as_raw_fd(), &mut batch) {
                Ok(n) => {
                    assert!(n <= batch.capacity());
                    for i in 0..n {
                        let d = batch.get(i).unwrap();
                        got.push((d.bytes.to_vec(), d.from.unwrap(), d.truncated));
                    }
                    assert!(batch.get(n).is_none());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && got.len() == 3 => break,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("recvmmsg: {e}"),
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[0],
            (b"\x00\x04\x00\x01".to_vec(), a.local_addr().unwrap(), false)
        );
        assert_eq!(got[1], (vec![7u8; 40], b.local_addr().unwrap(), false));
        assert_eq!(got[2], (vec![9u8; 1024], a.local_addr().unwrap(), true));
    }
}
