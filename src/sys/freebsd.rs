//! FreeBSD bodies of the `sys` functions.
//!
//! UNTESTED: this machine cannot build for FreeBSD. Written against the
//! FreeBSD 13/14 manual pages (openat(2) O_RESOLVE_BENEATH, sendmmsg(2),
//! cpuset_setaffinity(2), SO_REUSEPORT_LB). FreeBSD has no UDP GSO, so
//! `send_datagrams` ignores `gso_size` and sends one message per datagram.

use std::fs::File;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use socket2::SockAddr;

use super::{cvt, Datagram, GsoRefusal, RecvBatch};

/// Pins the calling thread to `core`.
pub fn pin_to_core(core: usize) -> io::Result<()> {
    // SAFETY: cpuset_t is a plain bit set; zeroed is the empty set.
    let mut set: libc::cpuset_t = unsafe { mem::zeroed() };
    // SAFETY: CPU_SET writes one bit inside `set`; core is bounds-checked by
    // the kernel call below (an out-of-range bit yields EINVAL).
    unsafe { libc::CPU_SET(core, &mut set) };
    // SAFETY: set is a valid cpuset_t of the size passed.
    let ret = unsafe {
        libc::cpuset_setaffinity(
            libc::CPU_LEVEL_WHICH,
            libc::CPU_WHICH_TID,
            -1,
            mem::size_of::<libc::cpuset_t>(),
            &set,
        )
    };
    cvt(ret).map(|_| ())
}

/// The cores this process may run on, in order.
pub fn allowed_cores() -> Vec<usize> {
    (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
}

/// SO_REUSEPORT_LB: FreeBSD's load-balancing variant of SO_REUSEPORT.
pub fn set_reuse_port(socket: &socket2::Socket) -> io::Result<()> {
    socket.set_reuse_port_lb(true)
}

/// Opens `rel` below `root`; O_RESOLVE_BENEATH (FreeBSD >= 13) refuses any
/// path or symlink that leaves it.
pub fn open_beneath(root: &File, rel: &Path) -> io::Result<File> {
    let path = std::ffi::CString::new(rel.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let flags = libc::O_RDONLY
        | libc::O_CLOEXEC
        | libc::O_NOCTTY
        | libc::O_NONBLOCK
        | libc::O_RESOLVE_BENEATH;
    // SAFETY: path is NUL-terminated and outlives the call; root is open.
    let fd = cvt(unsafe { libc::openat(root.as_raw_fd(), path.as_ptr(), flags) })?;
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

pub const MAX_BATCH: usize = 1024;
pub const MAX_GSO_SEGMENTS: usize = 1;
pub const MAX_GSO_BYTES: usize = 0;

/// Reusable scratch for batched sends.
pub struct SendBatch {
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch {
            iovecs: Vec::with_capacity(2 * MAX_BATCH),
            msgs: Vec::with_capacity(MAX_BATCH),
        }
    }
}

// SAFETY: as on Linux, the pointers inside live only during one call.
unsafe impl Send for SendBatch {}

/// One `sendmmsg` per call, one message per datagram; `gso_size` ignored.
pub fn send_datagrams(
    fd: RawFd,
    dst: &SockAddr,
    datagrams: &[Datagram],
    _gso_size: Option<usize>,
    batch: &mut SendBatch,
) -> io::Result<usize> {
    let datagrams = &datagrams[..datagrams.len().min(MAX_BATCH)];
    if datagrams.is_empty() {
        return Ok(0);
    }
    batch.iovecs.clear();
    batch.msgs.clear();
    for d in datagrams {
        batch.iovecs.push(libc::iovec {
            iov_base: d.header.ptr as *mut _,
            iov_len: d.header.len,
        });
        batch.iovecs.push(libc::iovec {
            iov_base: d.payload.ptr as *mut _,
            iov_len: d.payload.len,
        });
    }
    for i in 0..datagrams.len() {
        // SAFETY: msghdr is plain data; zeroed is a valid empty header.
        let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
        hdr.msg_name = dst.as_ptr() as *mut libc::c_void;
        hdr.msg_namelen = dst.len();
        hdr.msg_iov = batch.iovecs[2 * i..].as_mut_ptr();
        hdr.msg_iovlen = 2;
        batch.msgs.push(libc::mmsghdr {
            msg_hdr: hdr,
            msg_len: 0,
        });
    }
    // SAFETY: every pointer in msgs stays valid until the call returns.
    let sent = unsafe {
        libc::sendmmsg(
            fd,
            batch.msgs.as_mut_ptr(),
            batch.msgs.len(),
            libc::MSG_DONTWAIT,
        )
    };
    let result = cvt(sent).map(|n| n as usize);
    batch.iovecs.clear();
    batch.msgs.clear();
    result
}

/// Receives up to `batch.capacity()` waiting datagrams with one
/// `recvmmsg` (FreeBSD 11+) and returns how many; `WouldBlock` when none.
/// UNTESTED, like the rest of this file.
pub fn recv_datagrams(fd: RawFd, batch: &mut RecvBatch) -> io::Result<usize> {
    batch.prepare();
    let vlen = batch.msgs.len();
    // SAFETY: each header points at its own slot buffer, iovec and name
    // storage inside `batch`, all sized as the header says and alive for the
    // call; the kernel writes only within them.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            batch.msgs.as_mut_ptr(),
            vlen,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
        )
    };
    let n = cvt(n)? as usize;
    batch.count = n;
    Ok(n)
}

/// FreeBSD never does GSO; `send_datagrams` ignores it, so nothing fails.
pub fn gso_refusal(_e: &io::Error) -> Option<GsoRefusal> {
    Some(GsoRefusal::Kernel)
}

pub fn is_fault(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EFAULT)
}

/// FreeBSD sendfile(2): only regular files can be sent (not devices such as
/// zvols, whose callers must use pread). A partial send on a non-blocking
/// socket returns EAGAIN with `sbytes` set; that count is returned here.
pub fn sendfile(sock: RawFd, file: &File, offset: u64, len: usize) -> io::Result<usize> {
    let mut sent: libc::off_t = 0;
    // SAFETY: descriptors are open; `sent` is a valid out-pointer; no
    // header/trailer vector is passed.
    let ret = unsafe {
        libc::sendfile(
            file.as_raw_fd(),
            sock,
            offset as libc::off_t,
            len,
            std::ptr::null_mut(),
            &mut sent,
            0,
        )
    };
    if ret == -1 {
        let e = io::Error::last_os_error();
        if sent > 0 && e.kind() == io::ErrorKind::WouldBlock {
            return Ok(sent as usize);
        }
        return Err(e);
    }
    Ok(sent as usize)
}

/// FreeBSD has no MSG_MORE; a plain non-blocking send.
pub fn send_more(sock: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: bytes is a valid slice for the duration of the call.
    let n = unsafe {
        libc::send(
            sock,
            bytes.as_ptr() as *const libc::c_void,
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    cvt(n).map(|n| n as usize)
}

/// Size in bytes of the disk device open as `file` (DIOCGMEDIASIZE).
pub fn block_device_size(file: &File) -> io::Result<u64> {
    // _IOR('d', 129, off_t)
    const DIOCGMEDIASIZE: libc::c_ulong = 0x4008_6481;
    let mut size: libc::off_t = 0;
    // SAFETY: the ioctl writes one off_t into `size`.
    let ret = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            DIOCGMEDIASIZE,
            &mut size as *mut libc::off_t,
        )
    };
    cvt(ret).map(|_| size as u64)
}

/// FreeBSD 14 has fspacectl(SPACECTL_DEALLOC); not wired yet, so UNMAP on
/// FreeBSD answers with an error and the caller writes zeros instead.
pub fn punch_hole(_file: &File, _offset: u64, _len: u64) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}
