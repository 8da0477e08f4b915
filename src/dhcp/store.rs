//! The lease store: an append-only journal of [`Record`]s, one line each.
//!
//! Format: `CRC32 BODY\n`, the CRC (8 hex digits) over BODY, one of
//! `G <ip> <client hex> <expires>` (grant), `R <ip> <client hex>` (release),
//! `D <ip> <until>` (decline); times in Unix seconds. Text, so an operator
//! can read it; a CRC per line, so a torn or corrupted line is recognised.
//!
//! Durability contract: [`Store::append`] writes the records of one decision
//! and `fdatasync`s before it returns; the caller sends the ACK only after
//! that. A crash (kill -9, power loss) can therefore only tear the last line,
//! and that line belongs to an ACK that was never sent. Replay ignores an
//! unterminated last line and skips (and counts) lines whose CRC or syntax
//! is wrong; neither is fatal.
//!
//! On open, and once the journal holds [`COMPACT_MIN_RECORDS`] or twice as
//! many records as bindings, the journal is compacted: the current state is
//! written to `<path>.tmp`, fsynced, renamed over the journal, and the
//! directory fsynced, so a crash at any point leaves either the old or the
//! new complete file. Compacting on open also drops any torn tail before new
//! records are appended after it.
//!
//! Two servers on one store would hand out the same addresses, so the store
//! holds an exclusive `flock` on `<path>.lock` while open (a lock on the
//! journal itself would not survive compaction's rename).
//!
//! [`encode_record`] and [`replay`] are pure; only [`Store`] touches files.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use log::{info, warn};
use nix::fcntl::{Flock, FlockArg};

use super::lease::{Bindings, ClientId, Record, Secs};

/// Journal length (in records since the last compaction) below which the
/// journal is never compacted; bounds compaction work to once per this many
/// leases even when there are few bindings.
pub const COMPACT_MIN_RECORDS: usize = 4096;

/// Appends one record as a journal line to `out`.
pub fn encode_record(record: &Record, out: &mut Vec<u8>) {
    let body = match record {
        Record::Grant {
            ip,
            client,
            expires,
        } => format!("G {ip} {} {expires}", hex(client)),
        Record::Release { ip, client } => format!("R {ip} {}", hex(client)),
        Record::Decline { ip, until } => format!("D {ip} {until}"),
    };
    let crc = crc32fast::hash(body.as_bytes());
    out.extend_from_slice(format!("{crc:08x} {body}\n").as_bytes());
}

fn hex(client: &ClientId) -> String {
    if client.0.is_empty() {
        "-".to_owned()
    } else {
        client.to_string()
    }
}

fn unhex(s: &str) -> Option<ClientId> {
    if s == "-" {
        return Some(ClientId(Vec::new()));
    }
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok());
    bytes.collect::<Option<Vec<u8>>>().map(ClientId)
}

/// What [`replay`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replay {
    pub records: Vec<Record>,
    /// Complete lines that failed their CRC or did not parse.
    pub corrupt: usize,
    /// Bytes after the last newline (a record torn by a crash).
    pub torn_tail: usize,
}

/// Reads a journal. Never fails: what cannot be read is counted and skipped.
pub fn replay(bytes: &[u8]) -> Replay {
    let mut out = Replay::default();
    let mut rest = bytes;
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let (line, after) = rest.split_at(nl);
        match decode_line(line) {
            Some(r) => out.records.push(r),
            None => out.corrupt += 1,
        }
        rest = after.get(1..).unwrap_or(&[]);
    }
    out.torn_tail = rest.len();
    out
}

fn decode_line(line: &[u8]) -> Option<Record> {
    let line = std::str::from_utf8(line).ok()?;
    let (crc, body) = line.split_once(' ')?;
    if crc.len() != 8 || u32::from_str_radix(crc, 16).ok()? != crc32fast::hash(body.as_bytes()) {
        return None;
    }
    let fields: Vec<&str> = body.split(' ').collect();
    let ip = |s: &str| s.parse::<Ipv4Addr>().ok();
    let secs = |s: &str| s.parse::<Secs>().ok();
    match fields.as_slice() {
        ["G", a, c, e] => Some(Record::Grant {
            ip: ip(a)?,
            client: unhex(c)?,
            expires: secs(e)?,
        }),
        ["R", a, c] => Some(Record::Release {
            ip: ip(a)?,
            client: unhex(c)?,
        }),
        ["D", a, u] => Some(Record::Decline {
            ip: ip(a)?,
            until: secs(u)?,
        }),
        _ => None,
    }
}

/// The journal file and the state it describes.
#[derive(Debug)]
pub struct Store {
    /// Held for the life of the store; released when it is dropped or the
    /// process dies.
    _lock: Flock<File>,
    path: PathBuf,
    file: File,
    /// Length of the journal up to its last complete record; a failed append
    /// is cut back to it so that no later record is glued to a torn one.
    len: u64,
    /// Set when a failed append could not be cut back; appends then fail
    /// until a compaction rewrites the file.
    broken: bool,
    bindings: Bindings,
    since_compaction: usize,
    compact_min: usize,
}

impl Store {
    /// Opens (or creates) the journal at `path`, replays it and compacts it.
    pub fn open(path: &Path, now: Secs) -> io::Result<(Store, Replay)> {
        Store::open_with(path, now, COMPACT_MIN_RECORDS)
    }

    /// [`Store::open`] with another compaction threshold (tests).
    pub fn open_with(path: &Path, now: Secs, compact_min: usize) -> io::Result<(Store, Replay)> {
        let lock = lock(path)?;
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let replayed = replay(&bytes);
        let mut bindings = Bindings::default();
        for r in &replayed.records {
            bindings.apply(r);
        }
        if replayed.corrupt > 0 {
            warn!(
                "lease store {}: skipped {} corrupt records",
                path.display(),
                replayed.corrupt
            );
        }
        if replayed.torn_tail > 0 {
            info!(
                "lease store {}: ignored a torn last record ({} bytes)",
                path.display(),
                replayed.torn_tail
            );
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let mut store = Store {
            _lock: lock,
            path: path.to_owned(),
            file,
            len: 0,
            broken: false,
            bindings,
            since_compaction: 0,
            compact_min,
        };
        store.compact(now)?;
        Ok((store, replayed))
    }

    /// The state the journal describes.
    pub fn bindings(&self) -> &Bindings {
        &self.bindings
    }

    /// Makes `records` durable: one write, then `fdatasync`. Only after this
    /// returns `Ok` may the reply that depends on them be sent. May compact
    /// afterwards; a failed compaction is logged, not returned, since the
    /// records are already durable.
    pub fn append(&mut self, records: &[Record], now: Secs) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if self.broken {
            self.compact(now)?;
        }
        let mut buf = Vec::with_capacity(96 * records.len());
        for r in records {
            encode_record(r, &mut buf);
        }
        if let Err(e) = self
            .file
            .write_all(&buf)
            .and_then(|()| self.file.sync_data())
        {
            if self.file.set_len(self.len).is_err() {
                self.broken = true;
            }
            return Err(e);
        }
        self.len += buf.len() as u64;
        for r in records {
            self.bindings.apply(r);
        }
        self.since_compaction += records.len();
        if self.since_compaction >= self.compact_min.max(2 * self.bindings.len()) {
            if let Err(e) = self.compact(now) {
                warn!(
                    "lease store {}: compaction failed: {e}",
                    self.path.display()
                );
            }
        }
        Ok(())
    }

    /// Rewrites the journal as the current state, atomically.
    pub fn compact(&mut self, now: Secs) -> io::Result<()> {
        let mut buf = Vec::new();
        for r in self.bindings.snapshot(now) {
            encode_record(&r, &mut buf);
        }
        let mut tmp_name = self.path.clone().into_os_string();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        sync_dir(&self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.len = buf.len() as u64;
        self.broken = false;
        self.since_compaction = 0;
        Ok(())
    }
}

/// Takes the exclusive lock next to the journal at `path`.
fn lock(path: &Path) -> io::Result<Flock<File>> {
    let mut name = path.to_owned().into_os_string();
    name.push(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&name)?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        let why = format!(
            "{}: held by another process ({errno})",
            PathBuf::from(&name).display()
        );
        io::Error::new(io::ErrorKind::WouldBlock, why)
    })
}

/// Makes a rename in the directory of `path` durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, last)
    }

    fn records() -> Vec<Record> {
        let c = |n: u8| ClientId(vec![1, 0x52, 0x54, 0, 0, 0, n]);
        vec![
            Record::Grant {
                ip: ip(100),
                client: c(1),
                expires: 1_800_000_000,
            },
            Record::Grant {
                ip: ip(101),
                client: c(2),
                expires: 1_800_000_100,
            },
            Record::Release {
                ip: ip(100),
                client: c(1),
            },
            Record::Decline {
                ip: ip(102),
                until: 1_800_000_600,
            },
            Record::Grant {
                ip: ip(103),
                client: ClientId(Vec::new()),
                expires: 7,
            },
            Record::Grant {
                ip: ip(101),
                client: c(3),
                expires: 1_800_000_200,
            },
        ]
    }

    fn journal(records: &[Record]) -> (Vec<u8>, Vec<usize>) {
        let mut buf = Vec::new();
        let mut ends = Vec::new();
        for r in records {
            encode_record(r, &mut buf);
            ends.push(buf.len());
        }
        (buf, ends)
    }

    #[test]
    fn line_format() {
        let mut buf = Vec::new();
        encode_record(&records()[0], &mut buf);
        let line = String::from_utf8(buf).unwrap();
        assert!(
            line.ends_with(" G 10.77.0.100 01525400000001 1800000000\n"),
            "{line}"
        );
        assert_eq!(line.len(), 8 + 1 + 39 + 1);
    }

    #[test]
    fn round_trip() {
        let (buf, _) = journal(&records());
        let r = replay(&buf);
        assert_eq!(r.records, records());
        assert_eq!((r.corrupt, r.torn_tail), (0, 0));
    }

    /// A crash can cut the journal anywhere: every complete record survives,
    /// the torn one is ignored, nothing else is invented.
    #[test]
    fn crash_at_every_byte_offset() {
        let all = records();
        let (buf, ends) = journal(&all);
        for cut in 0..=buf.len() {
            let r = replay(&buf[..cut]);
            let complete = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(r.records, all[..complete], "cut at {cut}");
            assert_eq!(r.corrupt, 0, "cut at {cut}");
            assert_eq!(
                r.torn_tail,
                cut - ends.get(complete.wrapping_sub(1)).copied().unwrap_or(0)
            );
        }
    }

    #[test]
    fn corrupted_records_are_skipped() {
        let all = records();
        let (buf, ends) = journal(&all);
        for pos in 0..buf.len() {
            if buf[pos] == b'\n' {
                continue;
            }
            let mut bad = buf.clone();
            bad[pos] ^= 0x01;
            let r = replay(&bad);
            let hit = ends.iter().position(|&e| e > pos).unwrap();
            let mut expect = all.clone();
            expect.remove(hit);
            assert_eq!(r.records, expect, "flip at {pos}");
            assert_eq!(r.corrupt, 1);
        }
        assert_eq!(replay(b"garbage\n\xff\xfe\n").corrupt, 2);
    }

    #[test]
    fn store_survives_reopen_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases");
        let (mut s, r) = Store::open_with(&path, 0, 4).unwrap();
        assert!(r.records.is_empty());
        let all = records();
        for rec in &all {
            s.append(std::slice::from_ref(rec), 0).unwrap();
        }
        let expect = s.bindings().clone();
        let lines = fs::read(&path)
            .unwrap()
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        assert!(
            lines < all.len(),
            "compaction should have run ({lines} lines)"
        );
        drop(s);
        let (s, _) = Store::open_with(&path, 0, 4).unwrap();
        assert_eq!(s.bindings(), &expect);
        assert!(!dir.path().join("leases.tmp").exists());
    }

    /// kill -9 after any number of appends, with the journal torn at any
    /// byte of the record being written: reopening loses no appended record.
    #[test]
    fn reopen_after_torn_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases");
        let all = records();
        let (full, ends) = journal(&all);
        for cut in 0..=full.len() {
            fs::write(&path, &full[..cut]).unwrap();
            let (mut s, _) = Store::open(&path, 0).unwrap();
            let mut expect = Bindings::default();
            for r in &all[..ends.iter().filter(|&&e| e <= cut).count()] {
                expect.apply(r);
            }
            assert_eq!(s.bindings(), &expect, "cut at {cut}");
            // New records after a torn tail are readable after another crash.
            let extra = Record::Decline {
                ip: ip(200),
                until: 9,
            };
            s.append(std::slice::from_ref(&extra), 0).unwrap();
            expect.apply(&extra);
            drop(s);
            let (s, r) = Store::open(&path, 0).unwrap();
            assert_eq!(s.bindings(), &expect, "cut at {cut}, after append");
            assert_eq!((r.corrupt, r.torn_tail), (0, 0));
        }
    }

    #[test]
    fn second_open_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leases");
        let (first, _) = Store::open(&path, 0).unwrap();
        let err = Store::open(&path, 0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
        drop(first);
        assert!(Store::open(&path, 0).is_ok());
    }

    #[test]
    fn unhex_rejects_junk() {
        assert_eq!(unhex("0a0B"), Some(ClientId(vec![10, 11])));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("é0"), None);
    }
}
