//! Linux bodies of the `sys` functions.

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
    let mut set = nix::sched::CpuSet::new();
    set.set(core).map_err(io::Error::from)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).map_err(io::Error::from)
}

/// The cores this process may run on, in order.
pub fn allowed_cores() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Lets every worker bind its own socket to one address; the kernel spreads
/// incoming datagrams and connections across them by flow hash.
pub fn set_reuse_port(socket: &socket2::Socket) -> io::Result<()> {
    socket.set_reuse_port(true)
}

/// Opens `rel` for reading below the directory `root`, with the kernel
/// refusing every path that leaves it: `..`, absolute symlinks and symlinks
/// pointing outside all fail with `EXDEV` (RESOLVE_BENEATH, Linux >= 5.6).
///
/// `O_NONBLOCK` keeps a FIFO planted in the root from blocking the worker;
/// the caller refuses anything that is not a regular file anyway.
pub fn open_beneath(root: &File, rel: &Path) -> io::Result<File> {
    let path = std::ffi::CString::new(rel.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: open_how is plain old data; zeroed is its documented default.
    let mut how: libc::open_how = unsafe { mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK) as u64;
    how.resolve = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: path is NUL-terminated and outlives the call; how is a valid
    // open_how whose size we pass; root is an open directory descriptor.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            path.as_ptr(),
            &how as *const libc::open_how,
            mem::size_of::<libc::open_how>(),
        )
    };
    let fd = cvt(fd)?;
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd as RawFd) })
}

/// Largest number of datagrams given to one `sendmmsg`.
pub const MAX_BATCH: usize = 1024;
/// The kernel's limit on segments in one UDP GSO send (UDP_MAX_SEGMENTS).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Largest UDP payload of one GSO super-datagram (IPv4/IPv6 length field).
pub const MAX_GSO_BYTES: usize = 65507 - 40;

const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;

/// Reusable scratch for batched sends, so a window costs no allocation.
pub struct SendBatch {
    iovecs: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
    /// Control buffer for UDP_SEGMENT, one aligned slot per message.
    cmsgs: Vec<u64>,
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch {
            iovecs: Vec::with_capacity(2 * MAX_BATCH),
            msgs: Vec::with_capacity(MAX_BATCH),
            cmsgs: Vec::with_capacity(MAX_BATCH * 4),
        }
    }
}

// SAFETY: the raw pointers inside are only written and read within one call
// of send_datagrams, which clears them before returning; between calls they
// are empty and the scratch can move to the worker thread that owns it.
unsafe impl Send for SendBatch {}

/// Space for one cmsg carrying a u16, in u64 units (CMSG_SPACE(2) is 24 on
/// 64-bit Linux).
fn cmsg_slot_words() -> usize {
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(mem::size_of::<u16>() as u32) } as usize;
    space.div_ceil(8)
}

/// Sends `datagrams` to `dst` with as few syscalls as the kernel allows and
/// returns how many left. With `gso_size` set, consecutive datagrams of
/// exactly that size (header + payload) are glued into UDP GSO
/// super-datagrams, which the stack cuts back into the same datagrams; the
/// last datagram may be shorter. Without it, each datagram is one message of
/// one `sendmmsg`. Returns `WouldBlock` only when nothing was sent.
pub fn send_datagrams(
    fd: RawFd,
    dst: &SockAddr,
    datagrams: &[Datagram],
    gso_size: Option<usize>,
    batch: &mut SendBatch,
) -> io::Result<usize> {
    let datagrams = &datagrams[..datagrams.len().min(MAX_BATCH)];
    if datagrams.is_empty() {
        return Ok(0);
    }
    batch.iovecs.clear();
    batch.msgs.clear();
    batch.cmsgs.clear();
    for d in datagrams {
        batch.iovecs.push(libc::iovec {
            iov_base: d.header.ptr as *mut libc::c_void,
            iov_len: d.header.len,
        });
        batch.iovecs.push(libc::iovec {
            iov_base: d.payload.ptr as *mut libc::c_void,
            iov_len: d.payload.len,
        });
    }

    // Group datagrams into messages: (first datagram, count).
    let per_msg = match gso_size {
        Some(size) if size > 0 => (MAX_GSO_BYTES / size).clamp(1, MAX_GSO_SEGMENTS),
        _ => 1,
    };
    let groups: usize = datagrams.len().div_ceil(per_msg);
    let slot = cmsg_slot_words();
    if per_msg > 1 {
        batch.cmsgs.resize(groups * slot, 0);
    }
    for g in 0..groups {
        let first = g * per_msg;
        let count = per_msg.min(datagrams.len() - first);
        // SAFETY: msghdr is plain data; zeroed is a valid empty header.
        let mut hdr: libc::msghdr = unsafe { mem::zeroed() };
        hdr.msg_name = dst.as_ptr() as *mut libc::c_void;
        hdr.msg_namelen = dst.len();
        hdr.msg_iov = batch.iovecs[2 * first..].as_mut_ptr();
        hdr.msg_iovlen = 2 * count;
        if per_msg > 1 && count > 1 {
            let buf = &mut batch.cmsgs[g * slot..(g + 1) * slot];
            hdr.msg_control = buf.as_mut_ptr() as *mut libc::c_void;
            hdr.msg_controllen = slot * 8;
            // SAFETY: msg_control points at `slot` zeroed, 8-aligned words,
            // at least CMSG_SPACE(2) bytes, so the first header and its
            // u16 payload fit inside the buffer.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(&hdr);
                (*cmsg).cmsg_level = SOL_UDP;
                (*cmsg).cmsg_type = UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<u16>() as u32) as usize;
                let seg = gso_size.unwrap_or(0) as u16;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut u16, seg);
            }
        }
        batch.msgs.push(libc::mmsghdr {
            msg_hdr: hdr,
            msg_len: 0,
        });
    }

    if groups == 1 {
        // One message: a plain sendmsg, which is also the `sendmsg` path.
        // SAFETY: as below, for the single header.
        let sent = unsafe { libc::sendmsg(fd, &batch.msgs[0].msg_hdr, libc::MSG_DONTWAIT) };
        let result = cvt(sent).map(|_| datagrams.len());
        batch.iovecs.clear();
        batch.msgs.clear();
        batch.cmsgs.clear();
        return result;
    }
    // SAFETY: msgs holds `groups` headers whose iovecs, names and control
    // buffers all live in `batch`, `dst` and the caller's segments until this
    // call returns; the kernel only reads them.
    let sent = unsafe {
        libc::sendmmsg(
            fd,
            batch.msgs.as_mut_ptr(),
            groups as u32,
            libc::MSG_DONTWAIT,
        )
    };
    let result = cvt(sent).map(|n| (n as usize * per_msg).min(datagrams.len()));
    batch.iovecs.clear();
    batch.msgs.clear();
    batch.cmsgs.clear();
    result
}

/// Receives up to `batch.capacity()` waiting datagrams with one
/// `recvmmsg` and returns how many; `WouldBlock` when none was waiting.
/// Without MSG_WAITFORONE or a timeout, the call returns at once with what
/// the socket holds.
pub fn recv_datagrams(fd: RawFd, batch: &mut RecvBatch) -> io::Result<usize> {
    batch.prepare();
    let vlen = batch.msgs.len() as libc::c_uint;
    // SAFETY: each header points at its own slot buffer, iovec and name
    // storage inside `batch`, all sized as the header says and alive for the
    // call; the kernel writes only within them.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            batch.msgs.as_mut_ptr(),
            vlen,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    let n = cvt(n)? as usize;
    batch.count = n;
    Ok(n)
}

/// Whether an error of a GSO send means GSO cannot work, and for how much.
pub fn gso_refusal(e: &io::Error) -> Option<GsoRefusal> {
    match e.raw_os_error()? {
        libc::ENOPROTOOPT | libc::EOPNOTSUPP => Some(GsoRefusal::Kernel),
        // EINVAL: a segment larger than the route's MTU; EIO: a device
        // without checksum offload. Both depend on where the packets go.
        libc::EINVAL | libc::EIO => Some(GsoRefusal::Path),
        _ => None,
    }
}

/// True when a send faulted on its source bytes: the mapped file shrank.
pub fn is_fault(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EFAULT)
}

/// Copies up to `len` bytes of `file` at `offset` to the socket `sock`
/// inside the kernel (Linux: regular files and block devices). Returns the
/// bytes sent, possibly fewer than asked; `WouldBlock` when none.
pub fn sendfile(sock: RawFd, file: &File, offset: u64, len: usize) -> io::Result<usize> {
    let mut off = offset as libc::off_t;
    // SAFETY: both descriptors are open for the call; `off` is a valid
    // off_t the kernel updates; nothing else is passed by pointer.
    let n = unsafe { libc::sendfile(sock, file.as_raw_fd(), &mut off, len) };
    cvt(n).map(|n| n as usize)
}

/// `send` with MSG_MORE: a header that the next write (often a sendfile)
/// continues, so both leave in the same TCP segments.
pub fn send_more(sock: RawFd, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: bytes is a valid slice for the duration of the call.
    let n = unsafe {
        libc::send(
            sock,
            bytes.as_ptr() as *const libc::c_void,
            bytes.len(),
            libc::MSG_MORE | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    cvt(n).map(|n| n as usize)
}

/// Size in bytes of the block device open as `file` (BLKGETSIZE64).
pub fn block_device_size(file: &File) -> io::Result<u64> {
    // _IOR(0x12, 114, size_t)
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    let mut size: u64 = 0;
    // SAFETY: the ioctl writes one u64 into `size`, which outlives the call.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) };
    cvt(ret).map(|_| size)
}

/// Deallocates `[offset, offset + len)` of a regular file so it reads back
/// as zeros, keeping the file's size (FALLOC_FL_PUNCH_HOLE).
pub fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: plain integer arguments on an open descriptor.
    let ret = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    cvt(ret).map(|_| ())
}
