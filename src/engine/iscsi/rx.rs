//! The receive buffer of one connection: bytes read from the socket and not
//! yet handled, as a window `[start, end)` of a buffer that is allocated
//! and zeroed once, not per read.
//!
//! Handled PDUs move `start` forward instead of shifting the rest of the
//! buffer down, so a read that brought 64 small command PDUs costs one
//! `read` and no copies; the unhandled tail is moved to the front only when
//! the free space behind it is too small for the next read.

use std::io::{self, Read};

#[derive(Debug, Default)]
pub struct RxBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl RxBuf {
    /// The bytes not yet handled.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Marks the first `n` unhandled bytes as handled.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// One `read` of up to `chunk` bytes; `Ok(0)` is end of stream. The
    /// buffer grows (once, and zeroed once) only when the unhandled bytes
    /// plus `chunk` do not fit. The caller keeps it bounded: it reads only
    /// while less than a chunk is buffered or the buffered bytes end in an
    /// incomplete PDU, so the buffer stays below the larger of two chunks
    /// and the largest PDU the framing accepts plus one chunk.
    pub fn read_from(&mut self, src: &mut impl Read, chunk: usize) -> io::Result<usize> {
        if self.buf.len() - self.end < chunk {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end < chunk {
                self.buf.resize(self.end + chunk, 0);
            }
        }
        let n = src.read(&mut self.buf[self.end..self.end + chunk])?;
        self.end += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_survive_partial_consumption_and_compaction() {
        let stream: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let mut src = &stream[..];
        let mut rx = RxBuf::default();
        let mut got = Vec::new();
        loop {
            let n = rx.read_from(&mut src, 700).unwrap();
            // Handle a little less than arrived, like a PDU cut in two.
            let take = rx.data().len().saturating_sub(if n == 0 { 0 } else { 13 });
            got.extend_from_slice(&rx.data()[..take]);
            rx.consume(take);
            if n == 0 {
                break;
            }
        }
        assert_eq!(got, stream);
        // Never more than one chunk plus the carried-over tail.
        assert!(rx.buf.len() <= 700 + 13);
    }
}
