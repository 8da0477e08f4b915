//! Backing stores of iSCSI logical units: image files, block devices and
//! zvols, opened once at start and shared by every worker.
//!
//! Reads leave by reference (sendfile or pread in the connection's output
//! queue); this file does the rest of the I/O a session asks for: writes,
//! flushes, deallocation and WRITE SAME. It runs on the worker thread.
//!
//! Not done yet: an I/O thread pool. A slow fdatasync stalls the worker that
//! asked for it (and that worker's other connections) until it returns.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::iscsi::backend::{IoRequest, IoResult};
use crate::sys;

/// One opened backing store.
#[derive(Debug)]
pub struct Store {
    pub path: PathBuf,
    pub file: Arc<File>,
    pub size: u64,
    pub read_only: bool,
    /// Hole punching reads back as zeros (regular files).
    pub unmap: bool,
    /// sendfile can send from it (FreeBSD: regular files only).
    pub sendfile: bool,
}

impl Store {
    /// Opens `path`; the error names the path and the reason.
    pub fn open(path: &Path, read_only: bool) -> io::Result<Store> {
        let fail = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(fail)?;
        let meta = file.metadata().map_err(fail)?;
        let kind = meta.file_type();
        let (size, unmap, sendfile) = if kind.is_file() {
            (meta.len(), true, true)
        } else if kind.is_block_device() {
            (
                sys::block_device_size(&file).map_err(fail)?,
                false,
                cfg!(target_os = "linux"),
            )
        } else {
            return Err(fail(io::Error::other("not a regular file or block device")));
        };
        if size < 512 {
            return Err(fail(io::Error::other("smaller than one 512-byte block")));
        }
        Ok(Store {
            path: path.to_owned(),
            file: Arc::new(file),
            size,
            read_only,
            unmap,
            sendfile,
        })
    }

    /// The store's size now (it may have been grown or shrunk since start).
    pub fn current_size(&self) -> io::Result<u64> {
        let meta = self.file.metadata()?;
        if meta.file_type().is_block_device() {
            sys::block_device_size(&self.file)
        } else {
            Ok(meta.len())
        }
    }

    /// Runs one I/O request of a session.
    pub fn run(&self, req: &IoRequest) -> IoResult {
        let r = match req {
            IoRequest::Flush { .. } => self.file.sync_data(),
            IoRequest::Write { offset, data, .. } => self.file.write_all_at(data, *offset),
            IoRequest::Unmap { ranges, .. } => ranges
                .iter()
                .try_for_each(|&(off, len)| self.deallocate(off, len)),
            IoRequest::WriteSame {
                offset,
                len,
                pattern,
                ..
            } => self.write_same(*offset, *len, pattern),
            IoRequest::Compare {
                offset,
                len,
                expected,
                repeat,
                ..
            } => return self.compare(*offset, *len, expected, *repeat),
        };
        r.map_err(|e| e.kind())
    }

    /// Writes Data-Out bytes at `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) -> IoResult {
        self.file.write_all_at(data, offset).map_err(|e| e.kind())
    }

    fn deallocate(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.unmap && sys::punch_hole(&self.file, offset, len).is_ok() {
            return Ok(());
        }
        self.write_same(offset, len, &[0u8; 512])
    }

    fn write_same(&self, offset: u64, len: u64, pattern: &[u8]) -> io::Result<()> {
        if pattern.is_empty() {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        // Repeat the pattern into a buffer of up to 1 MiB and write it out.
        let reps = ((1usize << 20) / pattern.len()).max(1);
        let chunk: Vec<u8> = pattern.repeat(reps);
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(chunk.len() as u64) as usize;
            self.file.write_all_at(&chunk[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    fn compare(&self, offset: u64, len: u64, expected: &[u8], repeat: bool) -> IoResult {
        let mut buf = vec![0u8; (len as usize).min(1 << 20)];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(buf.len() as u64) as usize;
            let got =
                sys::pread_full(&self.file, &mut buf[..n], offset + done).map_err(|e| e.kind())?;
            if got < n {
                return Err(io::ErrorKind::UnexpectedEof);
            }
            for (i, b) in buf[..n].iter().enumerate() {
                let pos = done as usize + i;
                let want = if repeat {
                    expected.get(pos % expected.len().max(1))
                } else {
                    expected.get(pos)
                };
                if want != Some(b) {
                    return Err(io::ErrorKind::InvalidData);
                }
            }
            done += n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn write_flush_unmap_write_same_compare() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lun");
        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        let s = Store::open(&path, false).unwrap();
        assert_eq!(s.size, 8192);
        s.write(512, &[1u8; 512]).unwrap();
        s.run(&IoRequest::Flush { lun: 0 }).unwrap();
        s.run(&IoRequest::Unmap {
            lun: 0,
            ranges: vec![(4096, 4096)],
        })
        .unwrap();
        let pattern = Bytes::from(vec![9u8; 512]);
        s.run(&IoRequest::WriteSame {
            lun: 0,
            offset: 1024,
            len: 1024,
            pattern: pattern.clone(),
        })
        .unwrap();
        let data = std::fs::read(&path).unwrap();
        assert_eq!(&data[512..1024], &[1u8; 512][..]);
        assert_eq!(&data[1024..2048], &[9u8; 1024][..]);
        assert!(data[4096..].iter().all(|&b| b == 0));
        let same = IoRequest::Compare {
            lun: 0,
            offset: 1024,
            len: 1024,
            expected: pattern,
            repeat: true,
        };
        assert_eq!(s.run(&same), Ok(()));
        let differ = IoRequest::Compare {
            lun: 0,
            offset: 0,
            len: 512,
            expected: Bytes::from(vec![0u8; 512]),
            repeat: false,
        };
        assert_eq!(s.run(&differ), Err(io::ErrorKind::InvalidData));
    }

    #[test]
    fn missing_and_tiny_stores_are_refused_with_the_path() {
        let e = Store::open(Path::new("/nonexistent/dls-lun"), true).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/dls-lun"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny");
        std::fs::write(&path, [0u8; 100]).unwrap();
        assert!(Store::open(&path, true).is_err());
    }
}
