//! A `Transfer` driven by an arbitrary client and an arbitrary clock.
//!
//! The input picks the server limits, the file size and the options of the
//! RRQ, then a sequence of events: ACKs (of the newest block, of an older
//! one, of any number, repeated), a client ERROR, stray packets, time
//! passing, sends the kernel cuts short, and a server-side abort. After each
//! event the transfer is checked against a small model of RFC 1350/7440:
//!
//! - windows cover only blocks `1..=last`, start at most one past the newest
//!   block sent, and are exactly "after the last ACK" after an ACK or a
//!   retransmission; `block(seq)` lies within the file;
//! - only a new ACK moves the transfer: duplicate, stale and stray packets
//!   change nothing (no Sorcerer's Apprentice);
//! - after the client's ERROR nothing more is sent;
//! - at most `retries` timeouts in a row are retransmitted, the next one
//!   gives up with an ERROR;
//! - `poll_timeout` is `Some` exactly while the transfer is not done.

#![no_main]

use std::time::{Duration, Instant};

use dls::tftp::negotiate::{self, Limits};
use dls::tftp::transfer::{Outcome, Reaction, Transfer, Transmit};
use dls::tftp::wire::{ErrorCode, Packet, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let mut h = Harness::new(&mut input);
    h.check();
    while !input.0.is_empty() {
        h.step(&mut input);
        h.check();
    }
});

/// Reads the fuzz input front to back; zeros once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
}

/// What `poll_transmit` returned, owned so it can be compared across calls.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tx {
    Nothing,
    Oack(Vec<u8>),
    Window { first: u64, count: u64 },
    Error(ErrorCode),
}

#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    tx: Tx,
    timeout: Option<Instant>,
    outcome: Option<Outcome>,
    done: bool,
    retransmitted: u64,
}

struct Harness {
    t: Transfer,
    now: Instant,
    size: u64,
    blksize: u64,
    windowsize: u64,
    timeout: Duration,
    retries: u32,
    rollover: u8,
    /// Number of the final block, `size / blksize + 1`.
    last: u64,

    // The model: what the transfer must have done so far.
    in_oack: bool,
    acked: u64,
    highest_sent: u64,
    retransmitted: u64,
    /// Timeouts in a row that found the transfer waiting.
    stalls: u32,
    last_ack: u16,
    client_error: bool,
    outcome: Option<Outcome>,
    /// `poll_transmit` must return exactly this, when known.
    expect_tx: Option<Tx>,
    /// Blocks `1..=checked` passed `check_block`; a block's place in the
    /// file never changes, so each is checked once per input.
    checked: u64,
}

impl Harness {
    fn new(input: &mut Input<'_>) -> Harness {
        // Limits within what config.rs accepts.
        let limits = Limits {
            max_blksize: 8 + input.u16() % (65464 - 8 + 1),
            max_windowsize: 1 + input.u16() % 1024,
            max_window_bytes: 512 + input.u32() % (64 << 20),
            timeout: Duration::from_millis(10 + u64::from(input.u16())),
            retries: 1 + u32::from(input.u8() % 100),
            rollover: input.u8() & 1,
        };
        let size = u64::from(input.u32());

        let flags = input.u8();
        let values = [
            input.u16().to_string(),
            input.u8().to_string(),
            input.u16().to_string(),
        ];
        let mut options: Vec<(&[u8], &[u8])> = Vec::new();
        if flags & 1 != 0 {
            options.push((b"blksize", values[0].as_bytes()));
        }
        if flags & 2 != 0 {
            options.push((b"tsize", b"0"));
        }
        if flags & 4 != 0 {
            options.push((b"timeout", values[1].as_bytes()));
        }
        if flags & 8 != 0 {
            options.push((b"windowsize", values[2].as_bytes()));
        }
        let req = Request {
            filename: b"f",
            mode: b"octet",
            options,
        };
        let n = negotiate::negotiate(&req, size, &limits);
        let now = Instant::now();
        let t = Transfer::new(&n, size, &limits, now);

        let blksize = u64::from(n.blksize);
        let windowsize = u64::from(n.windowsize);
        let last = size / blksize + 1;
        let in_oack = !n.oack.is_empty();
        let expect_tx = if in_oack {
            None
        } else {
            Some(Tx::Window {
                first: 1,
                count: windowsize.min(last),
            })
        };
        Harness {
            t,
            now,
            size,
            blksize,
            windowsize,
            timeout: n.timeout,
            retries: limits.retries,
            rollover: limits.rollover,
            last,
            in_oack,
            acked: 0,
            highest_sent: 0,
            retransmitted: 0,
            stalls: 0,
            last_ack: 0,
            client_error: false,
            outcome: None,
            expect_tx,
            checked: 0,
        }
    }

    /// Block number on the wire for `seq` (RFC 1350 counts modulo 2^16;
    /// after 65535 comes 0, or 1 where configured).
    fn wire(&self, seq: u64) -> u16 {
        if self.rollover == 1 && seq > 65535 {
            ((seq - 65536) % 65535 + 1) as u16
        } else {
            seq as u16
        }
    }

    fn tx(&self) -> Tx {
        match self.t.poll_transmit() {
            None => Tx::Nothing,
            Some(Transmit::Oack(b)) => Tx::Oack(b.to_vec()),
            Some(Transmit::Window { first, count }) => Tx::Window { first, count },
            Some(Transmit::Error { code, .. }) => Tx::Error(code),
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            tx: self.tx(),
            timeout: self.t.poll_timeout(),
            outcome: self.t.outcome(),
            done: self.t.is_done(),
            retransmitted: self.t.retransmitted(),
        }
    }

    fn step(&mut self, input: &mut Input<'_>) {
        match input.u8() % 11 {
            0 => self.ack(self.wire(self.highest_sent)),
            1 => {
                let n = input.u16();
                self.ack(n)
            }
            2 => {
                let back = u64::from(input.u8());
                self.ack(self.wire(self.highest_sent.saturating_sub(back)))
            }
            3 => self.ack(self.last_ack),
            4 => {
                let code = ErrorCode::from_u16(u16::from(input.u8()));
                self.client_error(code)
            }
            5 => {
                let ms = u64::from(input.u16());
                self.tick(self.now + Duration::from_millis(ms))
            }
            6 => self.tick(self.t.poll_timeout().unwrap_or(self.now).max(self.now)),
            7 => {
                let k = input.u8();
                self.send(Some(u64::from(k)))
            }
            8 => {
                // What the engine does: send until nothing is left.
                for _ in 0..4 {
                    if self.tx() == Tx::Nothing {
                        break;
                    }
                    self.send(None);
                }
            }
            9 => {
                let kind = input.u8();
                self.stray(kind)
            }
            _ => self.abort(),
        }
    }

    fn ack(&mut self, number: u16) {
        self.last_ack = number;
        let before = self.snapshot();
        let r = self
            .t
            .handle_packet(&Packet::Ack { block: number }, self.now);

        let expected = if self.outcome.is_some() || before.done {
            Reaction::Unexpected
        } else if self.in_oack {
            if number == 0 {
                Reaction::Accepted
            } else {
                Reaction::StaleAck
            }
        } else {
            match (self.acked..=self.highest_sent).find(|&s| self.wire(s) == number) {
                None => Reaction::StaleAck,
                Some(s) if s == self.acked => Reaction::DuplicateAck,
                Some(_) => Reaction::Accepted,
            }
        };
        // Failing (an ERROR queued) also ignores packets; the model only
        // knows it through the outcome, which is set in that phase.
        assert_eq!(r, expected, "ACK {number}, model acked {}", self.acked);

        if r != Reaction::Accepted {
            assert_eq!(
                self.snapshot(),
                before,
                "ignored ACK {number} changed the transfer"
            );
            return;
        }
        self.stalls = 0;
        if self.in_oack {
            self.in_oack = false;
        } else {
            self.acked = (self.acked..=self.highest_sent)
                .find(|&s| self.wire(s) == number)
                .expect("accepted ACK is in the window");
        }
        if self.acked == self.last {
            self.outcome = Some(Outcome::Completed);
            self.expect_tx = Some(Tx::Nothing);
        } else {
            self.expect_tx = Some(self.window_after_ack());
        }
    }

    /// RFC 7440 section 4: the window restarts right after the last ACK.
    fn window_after_ack(&self) -> Tx {
        let end = (self.acked + self.windowsize).min(self.last);
        Tx::Window {
            first: self.acked + 1,
            count: end - self.acked,
        }
    }

    fn client_error(&mut self, code: ErrorCode) {
        let before = self.snapshot();
        let r = self.t.handle_packet(
            &Packet::Error {
                code,
                message: b"abort",
            },
            self.now,
        );
        // It ends any transfer not over yet, even one whose own ERROR is
        // queued; that ERROR is then dropped and the outcome kept.
        let expected = if before.done {
            Reaction::Unexpected
        } else {
            Reaction::Accepted
        };
        assert_eq!(r, expected);
        if before.outcome.is_none() {
            self.outcome = Some(Outcome::ClientError(code));
        }
        self.client_error = true;
        self.expect_tx = Some(Tx::Nothing);
    }

    fn tick(&mut self, now: Instant) {
        self.now = now;
        let before = self.snapshot();
        let fires = !before.done && before.timeout.is_some_and(|d| now >= d);
        self.t.handle_timeout(now);
        if !fires {
            assert_eq!(
                self.snapshot(),
                before,
                "early timeout changed the transfer"
            );
            return;
        }
        if self.outcome.is_some() {
            // An ERROR that could not be sent for a whole timeout is dropped.
            self.expect_tx = Some(Tx::Nothing);
            assert!(self.t.is_done());
            return;
        }
        self.stalls += 1;
        if self.stalls > self.retries {
            self.outcome = Some(Outcome::TimedOut);
            self.expect_tx = Some(Tx::Error(ErrorCode::NotDefined));
        } else {
            self.expect_tx = Some(if self.in_oack {
                Tx::Oack(self.oack_bytes())
            } else {
                self.window_after_ack()
            });
            assert_eq!(self.t.poll_timeout(), Some(now + self.timeout));
        }
    }

    fn oack_bytes(&self) -> Vec<u8> {
        // The OACK does not change; whatever the transfer holds is checked
        // once against the negotiation by the tftp_packet target.
        match self.t.poll_transmit() {
            Some(Transmit::Oack(b)) => b.to_vec(),
            other => panic!("retransmission in OACK phase is {other:?}"),
        }
    }

    /// One send; `took` is how many packets the kernel accepted (None: all).
    fn send(&mut self, took: Option<u64>) {
        let tx = self.tx();
        let count = match tx {
            Tx::Nothing => return,
            Tx::Window { count, .. } => count,
            Tx::Oack(_) | Tx::Error(_) => 1,
        };
        let k = took.map_or(count, |k| k % (count + 1));
        self.t.on_sent(k, self.now);
        if k == 0 {
            self.expect_tx = Some(tx);
            return;
        }
        match tx {
            Tx::Nothing => unreachable!(),
            Tx::Oack(_) => self.expect_tx = Some(Tx::Nothing),
            Tx::Error(_) => {
                self.expect_tx = Some(Tx::Nothing);
                assert!(self.t.is_done());
            }
            Tx::Window { first, count } => {
                let end = first + k - 1;
                self.retransmitted += self.highest_sent.min(end).saturating_sub(first - 1);
                self.highest_sent = self.highest_sent.max(end);
                self.expect_tx = Some(if k < count {
                    Tx::Window {
                        first: end + 1,
                        count: count - k,
                    }
                } else {
                    Tx::Nothing
                });
            }
        }
        if !self.t.is_done() {
            assert_eq!(self.t.poll_timeout(), Some(self.now + self.timeout));
        }
    }

    fn stray(&mut self, kind: u8) {
        let packet = match kind % 5 {
            0 => Packet::Data {
                block: 1,
                data: b"x",
            },
            1 => Packet::Oack { options: vec![] },
            2 => Packet::Rrq(Request {
                filename: b"f",
                mode: b"octet",
                options: vec![],
            }),
            3 => Packet::Wrq(Request {
                filename: b"f",
                mode: b"octet",
                options: vec![],
            }),
            _ => Packet::Unknown(u16::from(kind) + 7),
        };
        let before = self.snapshot();
        assert_eq!(
            self.t.handle_packet(&packet, self.now),
            Reaction::Unexpected
        );
        assert_eq!(self.snapshot(), before, "{packet:?} changed the transfer");
    }

    fn abort(&mut self) {
        let before = self.snapshot();
        self.t.abort(ErrorCode::NotDefined, "Server shutting down");
        if before.outcome.is_some() {
            assert_eq!(self.snapshot(), before, "abort of an ended transfer");
            return;
        }
        self.outcome = Some(Outcome::Aborted);
        self.expect_tx = Some(Tx::Error(ErrorCode::NotDefined));
    }

    /// The invariants that hold between any two events.
    fn check(&mut self) {
        let tx = self.tx();
        assert_eq!(self.t.outcome(), self.outcome);
        assert_eq!(self.t.poll_timeout().is_some(), !self.t.is_done());
        assert_eq!(self.t.retransmitted(), self.retransmitted);
        if let Some(expect) = &self.expect_tx {
            assert_eq!(&tx, expect, "model acked {}", self.acked);
        }
        if self.client_error {
            assert_eq!(tx, Tx::Nothing, "sends after the client's ERROR");
            assert!(self.t.is_done());
        }
        // The timeout after the last retry gives up instead of resending.
        if self.stalls > self.retries {
            assert_eq!(self.stalls, self.retries + 1);
            assert_eq!(self.outcome, Some(Outcome::TimedOut));
        }
        if self.outcome == Some(Outcome::Completed) {
            assert_eq!(self.highest_sent, self.last);
            assert!(self.t.is_done());
        }
        if let Tx::Window { first, count } = tx {
            assert!(self.outcome.is_none());
            assert!(first >= 1 && count >= 1 && count <= self.windowsize);
            assert!(first <= self.highest_sent + 1, "gap before block {first}");
            assert!(first + count - 1 <= self.last);
            for seq in first.max(self.checked + 1)..first + count {
                self.check_block(seq);
                self.checked = seq;
            }
        }
    }

    fn check_block(&self, seq: u64) {
        let b = self.t.block(seq);
        assert_eq!(b.number, self.wire(seq));
        assert_eq!(b.offset, (seq - 1) * self.blksize);
        assert!(b.offset + b.len as u64 <= self.size);
        assert!(b.len as u64 <= self.blksize);
        if seq < self.last {
            assert_eq!(
                b.len as u64, self.blksize,
                "short block {seq} before the last"
            );
        } else {
            assert!((b.len as u64) < self.blksize, "last block {seq} is full");
        }
    }
}
