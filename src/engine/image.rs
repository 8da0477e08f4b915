//! File images served by TFTP, mapped once and shared.
//!
//! A boot storm is hundreds of clients reading the same few files. The
//! [`ImageCache`] keys images by inode (and size and mtime), so every transfer
//! of one file shares one mapping across all workers; the cache holds only
//! weak references, so a mapping lives exactly as long as some transfer
//! uses it. A file replaced by rename is a new inode and gets a new mapping
//! for new transfers, while transfers in flight keep the old one.
//!
//! The cache lock is taken once per request, never per packet. On the
//! packet path, workers share only the image's change check (see
//! [`Origin::changed_within`]): an atomic read per window, written at most
//! once per check interval per file, so adding workers adds no contention.

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use memmap2::Mmap;

use crate::sys::{self, Segment};

/// netascii images are converted in memory; refuse beyond this size.
pub const MAX_NETASCII_SIZE: u64 = 256 << 20;

/// The bytes a transfer serves.
#[derive(Debug)]
pub enum Image {
    /// A zero-length file (which cannot be mapped).
    Empty,
    /// The whole file, mapped read-only; `origin` says what it was.
    Mapped { map: Mmap, origin: Origin },
    /// Bytes prepared in memory (netascii conversion).
    Buffer(Vec<u8>),
    /// The open file, read with `pread` per window: the fallback path.
    File { origin: Origin },
}

/// The file behind an image and what it looked like when the image was
/// made, so a rewrite in place can be noticed.
#[derive(Debug)]
pub struct Origin {
    pub file: File,
    pub size: u64,
    mtime_ns: i128,
    /// Inode change time: a writer can set mtime back, not ctime.
    ctime_ns: i128,
    /// Link count: a rename over the file or an unlink changes it (and
    /// ctime) without touching the bytes, so ctime only counts when the
    /// link count is unchanged.
    nlink: u64,
    /// When the image was made: the epoch of `checked_ns`.
    born: Instant,
    /// Nanoseconds after `born` of the last check by any transfer, so one
    /// fstat per interval serves every transfer of the file on every
    /// worker (written at most once per interval: no contention).
    checked_ns: AtomicU64,
    /// Set for good once a check saw the file changed.
    seen_changed: AtomicBool,
}

fn mtime_ns(meta: &Metadata) -> i128 {
    i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec())
}

fn ctime_ns(meta: &Metadata) -> i128 {
    i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec())
}

impl Origin {
    fn new(file: File, meta: &Metadata) -> Origin {
        Origin {
            file,
            size: meta.len(),
            mtime_ns: mtime_ns(meta),
            ctime_ns: ctime_ns(meta),
            nlink: meta.nlink(),
            born: Instant::now(),
            checked_ns: AtomicU64::new(0),
            seen_changed: AtomicBool::new(false),
        }
    }

    /// Like [`changed`](Self::changed), but trusts a check made by any
    /// transfer less than `every` ago. The worker that finds the last check
    /// too old claims the next one with a compare-exchange; the others go
    /// on with the answer the last check gave.
    pub fn changed_within(&self, now: Instant, every: Duration) -> bool {
        if self.seen_changed.load(Ordering::Relaxed) {
            return true;
        }
        let at = now.saturating_duration_since(self.born).as_nanos() as u64;
        let last = self.checked_ns.load(Ordering::Relaxed);
        if last != 0 && at.saturating_sub(last) < every.as_nanos() as u64 {
            return false;
        }
        let claim =
            self.checked_ns
                .compare_exchange(last, at.max(1), Ordering::Relaxed, Ordering::Relaxed);
        if claim.is_err() {
            return false;
        }
        self.changed()
    }

    /// True when the file no longer has the size and mtime it had: it was
    /// truncated or rewritten in place, and a transfer would mix old and
    /// new bytes. (A file replaced by rename is another inode; this one is
    /// unchanged and its transfers finish with the old bytes.)
    pub fn changed(&self) -> bool {
        let changed = match self.file.metadata() {
            Ok(meta) => {
                meta.len() != self.size
                    || mtime_ns(&meta) != self.mtime_ns
                    || (ctime_ns(&meta) != self.ctime_ns && meta.nlink() == self.nlink)
            }
            Err(_) => true,
        };
        if changed {
            self.seen_changed.store(true, Ordering::Relaxed);
        }
        changed
    }
}

impl Image {
    pub fn len(&self) -> u64 {
        match self {
            Image::Empty => 0,
            Image::Mapped { map, .. } => map.len() as u64,
            Image::Buffer(b) => b.len() as u64,
            Image::File { origin } => origin.size,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the file behind the image changed since it was made
    /// (in-memory images never change).
    pub fn changed(&self) -> bool {
        match self {
            Image::Mapped { origin, .. } | Image::File { origin } => origin.changed(),
            Image::Empty | Image::Buffer(_) => false,
        }
    }

    /// [`changed`](Self::changed), from a check at most `every` old made by
    /// any transfer of this image (see [`Origin::changed_within`]).
    pub fn changed_within(&self, now: Instant, every: Duration) -> bool {
        match self {
            Image::Mapped { origin, .. } | Image::File { origin } => {
                origin.changed_within(now, every)
            }
            Image::Empty | Image::Buffer(_) => false,
        }
    }

    /// The in-memory range `[offset, offset + len)`, or `None` for the pread
    /// image or a range past the end.
    pub fn segment(&self, offset: u64, len: usize) -> Option<Segment> {
        let end = offset.checked_add(len as u64)?;
        if end > self.len() {
            return None;
        }
        match self {
            Image::Empty => Some(Segment::from_slice(&[])),
            Image::Mapped { map, .. } => Some(Segment {
                // In bounds (checked above); the pointer is only handed to
                // the kernel, see sys::map_file.
                ptr: map.as_ptr().wrapping_add(offset as usize),
                len,
            }),
            Image::Buffer(b) => b
                .get(offset as usize..end as usize)
                .map(Segment::from_slice),
            Image::File { .. } => None,
        }
    }
}

/// How an image is to be prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// The file's bytes, mapped.
    Octet,
    /// LF -> CR LF and CR -> CR NUL (RFC 764, as RFC 1350 asks).
    Netascii,
    /// The file's bytes, read with pread (not cached: each transfer owns its fd).
    Pread,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    dev: u64,
    ino: u64,
    flavor: Flavor,
}

#[derive(Debug)]
struct Entry {
    size: u64,
    mtime_ns: i128,
    image: Weak<Image>,
}

/// Images shared by all workers.
#[derive(Debug, Default)]
pub struct ImageCache {
    entries: Mutex<HashMap<Key, Entry>>,
}

impl ImageCache {
    /// Returns the image for the open `file`, reusing a live one when the
    /// inode, size and mtime still match.
    pub fn get(&self, file: File, meta: &Metadata, flavor: Flavor) -> io::Result<Arc<Image>> {
        if flavor == Flavor::Pread {
            // Not cached: each transfer owns its descriptor.
            return build(file, meta, flavor).map(Arc::new);
        }
        let key = Key {
            dev: meta.dev(),
            ino: meta.ino(),
            flavor,
        };
        let mtime_ns = mtime_ns(meta);
        if let Some(image) = self.lookup(&key, meta.len(), mtime_ns) {
            return Ok(image);
        }
        // Built outside the lock: a netascii conversion reads the file.
        let image = Arc::new(build(file, meta, flavor)?);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= 256 {
            entries.retain(|_, e| e.image.strong_count() > 0);
        }
        entries.insert(
            key,
            Entry {
                size: meta.len(),
                mtime_ns,
                image: Arc::downgrade(&image),
            },
        );
        Ok(image)
    }

    fn lookup(&self, key: &Key, size: u64, mtime_ns: i128) -> Option<Arc<Image>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let e = entries.get(key)?;
        if e.size != size || e.mtime_ns != mtime_ns {
            return None;
        }
        e.image.upgrade()
    }

    /// Forgets `image` (its file changed underneath); new requests map anew.
    pub fn evict(&self, image: &Arc<Image>) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, e| !std::ptr::eq(e.image.as_ptr(), Arc::as_ptr(image)));
    }

    /// Live images, for tests and status.
    pub fn live(&self) -> usize {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .values()
            .filter(|e| e.image.strong_count() > 0)
            .count()
    }
}

fn build(mut file: File, meta: &Metadata, flavor: Flavor) -> io::Result<Image> {
    let len = meta.len();
    match flavor {
        Flavor::Octet if len == 0 => Ok(Image::Empty),
        Flavor::Octet => {
            let map = sys::map_file(&file)?;
            let origin = Origin::new(file, meta);
            Ok(Image::Mapped { map, origin })
        }
        Flavor::Netascii => {
            if len > MAX_NETASCII_SIZE {
                return Err(io::Error::other("file too large for netascii mode"));
            }
            let mut raw = Vec::with_capacity(len as usize);
            file.read_to_end(&mut raw)?;
            Ok(Image::Buffer(to_netascii(&raw)))
        }
        Flavor::Pread => Ok(Image::File {
            origin: Origin::new(file, meta),
        }),
    }
}

/// Converts to netascii: every LF becomes CR LF and every other CR becomes
/// CR NUL (RFC 764 as referenced by RFC 1350), so the receiver can undo it.
pub fn to_netascii(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 16);
    for &b in raw {
        match b {
            b'\n' => out.extend_from_slice(b"\r\n"),
            b'\r' => out.extend_from_slice(b"\r\0"),
            _ => out.push(b),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn netascii_conversion() {
        assert_eq!(to_netascii(b"a\nb\rc\r\n"), b"a\r\nb\r\0c\r\0\r\n");
    }

    #[test]
    fn one_mapping_per_inode_and_replacement_gets_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        let cache = ImageCache::default();
        let open = || {
            let f = File::open(&path).unwrap();
            let m = f.metadata().unwrap();
            cache.get(f, &m, Flavor::Octet).unwrap()
        };
        let a = open();
        let b = open();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(cache.live(), 1);
        // Replace by rename: new inode, new image; the old one stays intact.
        let tmp = dir.path().join("f.new");
        let mut f = File::create(&tmp).unwrap();
        f.write_all(b"world!").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        let c = open();
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!((a.len(), c.len()), (5, 6));
        drop((a, b));
        cache.evict(&c);
        assert_eq!(cache.live(), 0);
    }

    #[test]
    fn rename_over_is_no_change_but_a_rewrite_with_mtime_restored_is() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![1u8; 8192]).unwrap();
        let cache = ImageCache::default();
        let open = || {
            let f = File::open(&path).unwrap();
            let m = f.metadata().unwrap();
            cache.get(f, &m, Flavor::Octet).unwrap()
        };
        let old = open();
        let tmp = dir.path().join("f.new");
        std::fs::write(&tmp, vec![2u8; 100]).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(!old.changed(), "the old inode's bytes did not change");

        let image = open();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let mtime = f.metadata().unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        f.write_all_at(&[9], 0).unwrap();
        f.set_modified(mtime).unwrap();
        assert!(image.changed(), "same size, mtime put back: ctime tells");
    }

    #[test]
    fn segments_are_bounds_checked() {
        let img = Image::Buffer(vec![1, 2, 3]);
        assert_eq!(img.segment(1, 2).unwrap().len, 2);
        assert!(img.segment(2, 2).is_none());
        assert!(img.segment(u64::MAX, 1).is_none());
        assert_eq!(Image::Empty.segment(0, 0).unwrap().len, 0);
    }
}
