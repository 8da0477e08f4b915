//! One read transfer as a sans-IO state machine.
//!
//! The engine drives a [`Transfer`] with four calls, in any order after
//! [`Transfer::new`]:
//!
//! 1. [`handle_packet`](Transfer::handle_packet) for each datagram from the
//!    client's TID, with the time it arrived;
//! 2. [`poll_transmit`](Transfer::poll_transmit) to learn what to send next,
//!    followed by [`on_sent`](Transfer::on_sent) with how much of it the kernel
//!    took (a window may be cut short by a full socket buffer);
//! 3. [`poll_timeout`](Transfer::poll_timeout) for when to wake it, and
//!    [`handle_timeout`](Transfer::handle_timeout) once that time has passed;
//! 4. [`outcome`](Transfer::outcome) to learn that it is over.
//!
//! It never reads the file: it names blocks as (wire number, offset, length)
//! and the engine sends those bytes from wherever the image lives.
//!
//! Rules it keeps, with their sources:
//! - block numbers are counted in 64 bits and put on the wire modulo 2^16,
//!   followed by 0 after 65535 (or 1, when configured), so the ACK 0 that
//!   answers an OACK and the ACK 0 after a wrap are never confused;
//! - a duplicate ACK never causes a send (RFC 1123 4.2.3.1, the Sorcerer's
//!   Apprentice); only a timeout retransmits, from the last acknowledged block;
//! - an ACK inside the window restarts the window after it, once per distinct
//!   ACK (RFC 7440 section 4);
//! - retries are bounded, then the client is told with an ERROR (RFC 7440
//!   section 6);
//! - an ERROR from the client ends the transfer at once and is never
//!   answered (RFC 1350 section 7; UEFI's tsize probe ends this way).
//!
//! Not done yet: the adaptive timeout of RFC 1123 4.2.3.2; the timeout is the
//! negotiated or configured one, fixed for the transfer.

use std::time::{Duration, Instant};

use super::negotiate::{Limits, Negotiated};
use super::wire::{self, ErrorCode, Packet};

/// What the engine should send next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit<'a> {
    /// The encoded OACK.
    Oack(&'a [u8]),
    /// Blocks `first..first + count` (see [`Transfer::block`]).
    Window { first: u64, count: u64 },
    /// An ERROR to the client; the transfer is over once it is sent.
    Error {
        code: ErrorCode,
        message: &'static str,
    },
}

/// One DATA packet's worth of the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Block number as it goes on the wire.
    pub number: u16,
    /// Offset of the payload in the image.
    pub offset: u64,
    /// Payload length; shorter than blksize only for the last block.
    pub len: usize,
}

/// How a transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The client acknowledged the last block.
    Completed,
    /// The client sent an ERROR (not a fault: UEFI probes sizes this way).
    ClientError(ErrorCode),
    /// Retries ran out; the client was sent an ERROR.
    TimedOut,
    /// The engine ended it (file changed, shutdown); the client was told.
    Aborted,
}

/// What a packet did to the transfer, for the engine's logs and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// It moved the transfer forward (or ended it).
    Accepted,
    /// An ACK already acted on; ignored on purpose.
    DuplicateAck,
    /// An ACK for a block outside the window; ignored.
    StaleAck,
    /// A packet that has no place in a read transfer; ignored.
    Unexpected,
}

#[derive(Debug)]
enum Phase {
    /// Options were accepted: the OACK waits for ACK 0.
    Oack {
        encoded: Vec<u8>,
        unsent: bool,
    },
    Data,
    /// An ERROR waits to be sent; after it the transfer is over.
    Failing {
        code: ErrorCode,
        message: &'static str,
    },
    Done,
}

/// State of one RRQ from the first packet to the last ACK.
#[derive(Debug)]
pub struct Transfer {
    blksize: u64,
    windowsize: u64,
    timeout: Duration,
    /// Timeout while the OACK waits for ACK 0: the server's own, never the
    /// client's longer one, so a request nobody follows up (a spoofed RRQ)
    /// holds its transfer slot for seconds, not up to 255 s x retries.
    oack_timeout: Duration,
    max_retries: u32,
    rollover: u8,
    size: u64,
    /// Number of the final (short, possibly empty) block.
    last: u64,
    phase: Phase,
    /// Highest block acknowledged, 0 before any.
    acked: u64,
    /// Next block to send, and the last one of the current window.
    next: u64,
    window_end: u64,
    /// Highest block ever sent; blocks at or below it are retransmissions.
    highest_sent: u64,
    /// Consecutive timeouts without progress.
    retries: u32,
    deadline: Instant,
    outcome: Option<Outcome>,
    retransmitted: u64,
}

impl Transfer {
    /// Starts a transfer of `size` bytes with the negotiated parameters.
    pub fn new(negotiated: &Negotiated, size: u64, limits: &Limits, now: Instant) -> Transfer {
        let blksize = u64::from(negotiated.blksize.max(1));
        let phase = if negotiated.oack.is_empty() {
            Phase::Data
        } else {
            let mut encoded = Vec::new();
            wire::encode_oack(&mut encoded, &negotiated.oack);
            Phase::Oack {
                encoded,
                unsent: true,
            }
        };
        let mut t = Transfer {
            blksize,
            windowsize: u64::from(negotiated.windowsize.max(1)),
            timeout: negotiated.timeout,
            oack_timeout: negotiated.timeout.min(limits.timeout),
            max_retries: limits.retries,
            rollover: limits.rollover,
            size,
            last: size / blksize + 1,
            phase,
            acked: 0,
            next: 1,
            window_end: 0,
            highest_sent: 0,
            retries: 0,
            // Even before the first send a deadline exists, so a transfer
            // whose socket never becomes writable still ends.
            deadline: now + negotiated.timeout.min(limits.timeout),
            outcome: None,
            retransmitted: 0,
        };
        if matches!(t.phase, Phase::Data) {
            t.open_window();
        }
        t
    }

    /// Bytes the client receives in total.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn blksize(&self) -> usize {
        self.blksize as usize
    }

    pub fn windowsize(&self) -> usize {
        self.windowsize as usize
    }

    /// DATA packets sent more than once so far.
    pub fn retransmitted(&self) -> u64 {
        self.retransmitted
    }

    /// Where block `seq` (1-based, 64-bit) lies in the image.
    pub fn block(&self, seq: u64) -> Block {
        let offset = (seq - 1) * self.blksize;
        Block {
            number: self.wire_number(seq),
            offset,
            len: self.size.saturating_sub(offset).min(self.blksize) as usize,
        }
    }

    fn wire_number(&self, seq: u64) -> u16 {
        if self.rollover == 1 && seq > 65535 {
            ((seq - 65536) % 65535 + 1) as u16
        } else {
            seq as u16
        }
    }

    /// The next thing to send, if any.
    pub fn poll_transmit(&self) -> Option<Transmit<'_>> {
        match &self.phase {
            Phase::Oack {
                encoded,
                unsent: true,
            } => Some(Transmit::Oack(encoded)),
            Phase::Data if self.next <= self.window_end => Some(Transmit::Window {
                first: self.next,
                count: self.window_end - self.next + 1,
            }),
            Phase::Failing { code, message } => Some(Transmit::Error {
                code: *code,
                message,
            }),
            _ => None,
        }
    }

    /// Reports that the kernel took `count` packets of the last
    /// [`poll_transmit`](Self::poll_transmit) (1 for an OACK or ERROR).
    pub fn on_sent(&mut self, count: u64, now: Instant) {
        if count == 0 {
            return;
        }
        match &mut self.phase {
            Phase::Oack { unsent, .. } => *unsent = false,
            Phase::Data => {
                let first = self.next;
                let end = (first + count - 1).min(self.window_end);
                self.retransmitted += self.highest_sent.min(end).saturating_sub(first - 1);
                self.highest_sent = self.highest_sent.max(end);
                self.next = end + 1;
            }
            Phase::Failing { .. } => {
                self.phase = Phase::Done;
                return;
            }
            Phase::Done => return,
        }
        self.deadline = now + self.current_timeout();
    }

    fn current_timeout(&self) -> Duration {
        match self.phase {
            Phase::Oack { .. } => self.oack_timeout,
            _ => self.timeout,
        }
    }

    /// Feeds one packet from the client's TID.
    pub fn handle_packet(&mut self, packet: &Packet<'_>, _now: Instant) -> Reaction {
        match (packet, &self.phase) {
            // Our ERROR is still queued, but an ERROR is never answered
            // (RFC 1350 section 7): drop ours. The outcome stays ours.
            (Packet::Error { .. }, Phase::Failing { .. }) => {
                self.phase = Phase::Done;
                Reaction::Accepted
            }
            (_, Phase::Done | Phase::Failing { .. }) => Reaction::Unexpected,
            (Packet::Error { code, .. }, _) => {
                self.finish(Outcome::ClientError(*code));
                Reaction::Accepted
            }
            (Packet::Ack { block: 0 }, Phase::Oack { .. }) => {
                self.phase = Phase::Data;
                self.retries = 0;
                self.open_window();
                Reaction::Accepted
            }
            (Packet::Ack { .. }, Phase::Oack { .. }) => Reaction::StaleAck,
            (Packet::Ack { block }, Phase::Data) => self.handle_ack(*block),
            _ => Reaction::Unexpected,
        }
    }

    fn handle_ack(&mut self, number: u16) -> Reaction {
        // The window bounds highest_sent - acked by windowsize (<= 1024), so
        // at most one block in this range carries any given 16-bit number.
        let Some(seq) = (self.acked..=self.highest_sent).find(|&s| self.wire_number(s) == number)
        else {
            return Reaction::StaleAck;
        };
        if seq == self.acked {
            return Reaction::DuplicateAck;
        }
        self.acked = seq;
        self.retries = 0;
        if seq == self.last {
            self.finish(Outcome::Completed);
        } else {
            self.next = seq + 1;
            self.open_window();
        }
        Reaction::Accepted
    }

    fn open_window(&mut self) {
        self.window_end = (self.acked + self.windowsize).min(self.last);
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Done => None,
            _ => Some(self.deadline),
        }
    }

    /// Retransmits from the last acknowledged block, or gives up.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.deadline || matches!(self.phase, Phase::Done) {
            return;
        }
        if matches!(self.phase, Phase::Failing { .. }) {
            // The ERROR could not be sent in a whole timeout; stop trying.
            self.phase = Phase::Done;
            return;
        }
        self.retries += 1;
        if self.retries > self.max_retries {
            self.outcome = Some(Outcome::TimedOut);
            self.phase = Phase::Failing {
                code: ErrorCode::NotDefined,
                message: "Timed out waiting for ACK",
            };
            return;
        }
        match &mut self.phase {
            Phase::Oack { unsent, .. } => *unsent = true,
            Phase::Data => {
                self.next = self.acked + 1;
                self.open_window();
            }
            _ => {}
        }
        self.deadline = now + self.current_timeout();
    }

    /// Ends the transfer from the server side; the client gets an ERROR.
    pub fn abort(&mut self, code: ErrorCode, message: &'static str) {
        if self.outcome.is_none() {
            self.outcome = Some(Outcome::Aborted);
            self.phase = Phase::Failing { code, message };
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
        self.phase = Phase::Done;
    }

    /// How the transfer ended, once it has.
    pub fn outcome(&self) -> Option<Outcome> {
        self.outcome
    }

    /// True once nothing more will be sent or awaited.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }
}

#[cfg(test)]
mod tests;
