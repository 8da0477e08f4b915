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
