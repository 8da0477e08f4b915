//! Scripted exchanges against the transfer state machine, on a virtual clock.

use super::*;
use crate::tftp::negotiate::{negotiate, Limits};
use crate::tftp::wire::Request;

fn start(size: u64, options: &[(&str, &str)], limits: &Limits, now: Instant) -> Transfer {
    let req = Request {
        filename: b"f",
        mode: b"octet",
        options: options
            .iter()
            .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
            .collect(),
    };
    let n = negotiate(&req, size, limits);
    Transfer::new(&n, size, limits, now)
}

fn limits(timeout_ms: u64) -> Limits {
    Limits {
        timeout: Duration::from_millis(timeout_ms),
        ..Limits::default()
    }
}

/// Sends everything the transfer wants to send now; returns the DATA blocks
/// (by 64-bit sequence) in order.
fn drain(t: &mut Transfer, now: Instant) -> Vec<u64> {
    let mut sent = Vec::new();
    while let Some(tx) = t.poll_transmit() {
        match tx {
            Transmit::Window { first, count } => {
                sent.extend(first..first + count);
                t.on_sent(count, now);
            }
            Transmit::Oack(_) | Transmit::Error { .. } => t.on_sent(1, now),
        }
    }
    sent
}

fn ack(t: &mut Transfer, block: u16, now: Instant) -> Reaction {
    t.handle_packet(&Packet::Ack { block }, now)
}

#[test]
fn lockstep_without_options() {
    let t0 = Instant::now();
    let mut t = start(1300, &[], &Limits::default(), t0);
    assert_eq!(drain(&mut t, t0), vec![1]);
    assert_eq!(
        t.block(1),
        Block {
            number: 1,
            offset: 0,
            len: 512
        }
    );
    assert_eq!(ack(&mut t, 1, t0), Reaction::Accepted);
    assert_eq!(drain(&mut t, t0), vec![2]);
    assert_eq!(ack(&mut t, 2, t0), Reaction::Accepted);
    assert_eq!(drain(&mut t, t0), vec![3]);
    assert_eq!(t.block(3).len, 276);
    assert_eq!(ack(&mut t, 3, t0), Reaction::Accepted);
    assert_eq!(t.outcome(), Some(Outcome::Completed));
    assert!(t.is_done());
    assert_eq!(t.poll_timeout(), None);
}

#[test]
fn bc_03_c_empty_file_is_one_empty_block() {
    let t0 = Instant::now();
    let mut t = start(0, &[("tsize", "0")], &Limits::default(), t0);
    assert!(matches!(
        t.poll_transmit(),
        Some(Transmit::Oack(b"\x00\x06tsize\x000\x00"))
    ));
    assert!(drain(&mut t, t0).is_empty());
    ack(&mut t, 0, t0);
    assert_eq!(drain(&mut t, t0), vec![1]);
    assert_eq!(t.block(1).len, 0);
    ack(&mut t, 1, t0);
    assert_eq!(t.outcome(), Some(Outcome::Completed));
}

#[test]
fn exact_multiple_of_blksize_ends_with_empty_block() {
    let t0 = Instant::now();
    let mut t = start(1024, &[], &Limits::default(), t0);
    for b in 1..=3u16 {
        assert_eq!(drain(&mut t, t0), vec![u64::from(b)]);
        ack(&mut t, b, t0);
    }
    assert_eq!(t.block(3).len, 0);
    assert_eq!(t.outcome(), Some(Outcome::Completed));
}

#[test]
fn bc_05_duplicate_acks_never_resend_and_timer_holds() {
    // 10,240 bytes = 20 full blocks + an empty 21st, timeout 2 s.
    let t0 = Instant::now();
    let ms = |n| t0 + Duration::from_millis(n);
    let mut t = start(10_240, &[], &limits(2000), t0);
    let mut data_packets = 0;
    for b in 1..=4u16 {
        data_packets += drain(&mut t, ms(0)).len();
        ack(&mut t, b, ms(0));
    }
    // DATA 5 is sent at t=0 and lost. The client repeats ACK 4 every 0.5 s.
    assert_eq!(drain(&mut t, ms(0)), vec![5]);
    data_packets += 1;
    for k in 1..=3 {
        assert_eq!(ack(&mut t, 4, ms(500 * k)), Reaction::DuplicateAck);
        assert!(
            drain(&mut t, ms(500 * k)).is_empty(),
            "no DATA 6 before ACK 5, no resend per dup"
        );
        t.handle_timeout(ms(500 * k));
    }
    // The deadline was not pushed back by the duplicates: 2 s after the send.
    assert_eq!(t.poll_timeout(), Some(ms(2000)));
    t.handle_timeout(ms(2000));
    assert_eq!(drain(&mut t, ms(2000)), vec![5]);
    data_packets += 1;
    ack(&mut t, 5, ms(2001));
    data_packets += drain(&mut t, ms(2001)).len();
    ack(&mut t, 6, ms(2002));
    data_packets += drain(&mut t, ms(2002)).len();
    ack(&mut t, 7, ms(2003));
    data_packets += drain(&mut t, ms(2003)).len();
    // A delayed duplicate ACK 7: exactly one DATA 8 in total.
    assert_eq!(ack(&mut t, 7, ms(2004)), Reaction::DuplicateAck);
    assert!(drain(&mut t, ms(2004)).is_empty());
    ack(&mut t, 8, ms(2005));
    data_packets += drain(&mut t, ms(2005)).len();
    // A bogus ACK 15 while DATA 9 is outstanding is ignored.
    assert_eq!(ack(&mut t, 15, ms(2006)), Reaction::StaleAck);
    assert!(drain(&mut t, ms(2006)).is_empty());
    for b in 9..=21u16 {
        ack(&mut t, b, ms(2010));
        data_packets += drain(&mut t, ms(2010)).len();
    }
    assert_eq!(t.outcome(), Some(Outcome::Completed));
    // 21 blocks (the last empty) plus the one timeout.
    assert_eq!(data_packets, 21 + 1);
    assert_eq!(t.retransmitted(), 1);
}

#[test]
fn bc_06_windowed_loss_and_reordering() {
    // 102,400 bytes at 1468 = 70 blocks, window 8, timeout 1 s.
    let t0 = Instant::now();
    let opts = [
        ("blksize", "1468"),
        ("tsize", "0"),
        ("windowsize", "8"),
        ("timeout", "1"),
    ];
    let mut t = start(102_400, &opts, &Limits::default(), t0);
    assert_eq!(t.block(70).len, 102_400 - 69 * 1468);
    drain(&mut t, t0);
    ack(&mut t, 0, t0);
    let mut total = 0;
    let w = drain(&mut t, t0);
    assert_eq!(w, (1..=8).collect::<Vec<_>>());
    total += w.len();
    // a. DATA 3 lost: the client acks 2; the next window is 3..10 and never 11.
    assert_eq!(ack(&mut t, 2, t0), Reaction::Accepted);
    let w = drain(&mut t, t0);
    assert_eq!(w, (3..=10).collect::<Vec<_>>());
    total += w.len();
    ack(&mut t, 10, t0);
    let w = drain(&mut t, t0);
    assert_eq!(w, (11..=18).collect::<Vec<_>>());
    total += w.len();
    // b. 14 arrives before 13: EDK2 acks 12 once per out-of-order arrival.
    assert_eq!(ack(&mut t, 12, t0), Reaction::Accepted);
    let w = drain(&mut t, t0);
    assert_eq!(w, (13..=20).collect::<Vec<_>>());
    total += w.len();
    for _ in 0..2 {
        assert_eq!(ack(&mut t, 12, t0), Reaction::DuplicateAck);
        assert!(drain(&mut t, t0).is_empty());
    }
    ack(&mut t, 20, t0);
    let last_window = loop {
        let w = drain(&mut t, t0);
        total += w.len();
        let end = *w.last().unwrap();
        if end == 70 {
            break w;
        }
        ack(&mut t, end as u16, t0);
    };
    assert!(total <= 70 + 2 * 8, "{total}");
    // d. The final ACK 70 is lost: the last short window is resent after
    // the timeout, a bounded number of times, then an ERROR.
    let mut now = t0;
    for _ in 0..5 {
        now += Duration::from_secs(1);
        t.handle_timeout(now);
        assert_eq!(drain(&mut t, now), last_window);
    }
    now += Duration::from_secs(1);
    t.handle_timeout(now);
    assert!(matches!(
        t.poll_transmit(),
        Some(Transmit::Error {
            code: ErrorCode::NotDefined,
            ..
        })
    ));
    t.on_sent(1, now);
    assert!(t.is_done());
    assert_eq!(t.outcome(), Some(Outcome::TimedOut));
}

#[test]
fn bc_01_rollover_wraps_to_zero_with_blksize_8() {
    let t0 = Instant::now();
    let mut t = start(600_000, &[("blksize", "8")], &Limits::default(), t0);
    drain(&mut t, t0);
    ack(&mut t, 0, t0);
    let mut numbers = Vec::new();
    while !t.is_done() {
        let w = drain(&mut t, t0);
        assert_eq!(w.len(), 1);
        let b = t.block(w[0]);
        numbers.push((b.number, b.len));
        assert_eq!(ack(&mut t, b.number, t0), Reaction::Accepted);
    }
    assert_eq!(numbers.len(), 75_001);
    assert_eq!(numbers[65_534], (65_535, 8));
    assert_eq!(numbers[65_535], (0, 8));
    assert_eq!(numbers[65_536], (1, 8));
    assert_eq!(*numbers.last().unwrap(), (9465, 0));
    assert_eq!(t.outcome(), Some(Outcome::Completed));
}

#[test]
fn bc_01_post_wrap_ack_zero_is_not_the_oack_ack() {
    // After the wrap, an ACK 0 acknowledges block 65536; a stale ACK 0
    // before the wrap must not be mistaken for it.
    let t0 = Instant::now();
    let mut t = start(33_555_556, &[("tsize", "0")], &Limits::default(), t0);
    drain(&mut t, t0);
    ack(&mut t, 0, t0);
    for b in 1..=65_535u32 {
        drain(&mut t, t0);
        ack(&mut t, b as u16, t0);
    }
    assert_eq!(drain(&mut t, t0), vec![65_536]);
    assert_eq!(t.block(65_536).number, 0);
    assert_eq!(ack(&mut t, 65_535, t0), Reaction::DuplicateAck);
    assert_eq!(ack(&mut t, 0, t0), Reaction::Accepted);
    for b in 1..=3u16 {
        assert_eq!(drain(&mut t, t0), vec![65_536 + u64::from(b)]);
        ack(&mut t, b, t0);
    }
    assert_eq!(t.block(65_539).len, 100);
    assert_eq!(t.outcome(), Some(Outcome::Completed));
}

#[test]
fn rollover_to_one_when_configured() {
    let lim = Limits {
        rollover: 1,
        ..Limits::default()
    };
    let t = start(600_000, &[("blksize", "8")], &lim, Instant::now());
    assert_eq!(t.block(65_535).number, 65_535);
    assert_eq!(t.block(65_536).number, 1);
    assert_eq!(t.block(65_536 + 65_534).number, 65_535);
    assert_eq!(t.block(65_536 + 65_535).number, 1);
}

#[test]
fn bc_02_client_error_after_oack_ends_quietly() {
    let t0 = Instant::now();
    let mut t = start(
        4096,
        &[("tsize", "0"), ("blksize", "1468")],
        &Limits::default(),
        t0,
    );
    assert!(matches!(t.poll_transmit(), Some(Transmit::Oack(_))));
    t.on_sent(1, t0);
    let err = Packet::Error {
        code: ErrorCode::OptionRefused,
        message: b"User aborted the transfer",
    };
    assert_eq!(t.handle_packet(&err, t0), Reaction::Accepted);
    assert_eq!(
        t.outcome(),
        Some(Outcome::ClientError(ErrorCode::OptionRefused))
    );
    assert!(t.poll_transmit().is_none(), "no OACK resend, no ERROR back");
    assert_eq!(t.poll_timeout(), None);
    t.handle_timeout(t0 + Duration::from_secs(10));
    assert!(t.poll_transmit().is_none());
}

#[test]
fn oack_is_retransmitted_then_abandoned() {
    let t0 = Instant::now();
    let mut t = start(4096, &[("blksize", "1024")], &limits(1000), t0);
    let mut oacks = 0;
    let mut now = t0;
    while !t.is_done() {
        match t.poll_transmit() {
            Some(Transmit::Oack(_)) => oacks += 1,
            Some(Transmit::Error { .. }) => {}
            Some(Transmit::Window { .. }) => panic!("DATA before ACK 0"),
            None => {
                now += Duration::from_secs(1);
                t.handle_timeout(now);
                continue;
            }
        }
        t.on_sent(1, now);
    }
    assert_eq!(oacks, 1 + 5);
    assert_eq!(t.outcome(), Some(Outcome::TimedOut));
}

#[test]
fn partial_window_send_resumes_where_the_kernel_stopped() {
    let t0 = Instant::now();
    let mut t = start(100_000, &[("windowsize", "16")], &Limits::default(), t0);
    t.on_sent(1, t0);
    ack(&mut t, 0, t0);
    assert_eq!(
        t.poll_transmit(),
        Some(Transmit::Window {
            first: 1,
            count: 16
        })
    );
    t.on_sent(5, t0);
    assert_eq!(
        t.poll_transmit(),
        Some(Transmit::Window {
            first: 6,
            count: 11
        })
    );
    t.on_sent(11, t0);
    assert_eq!(t.poll_transmit(), None);
    assert_eq!(t.retransmitted(), 0);
}

#[test]
fn timeout_restarts_from_last_ack_and_counts_retransmits() {
    let t0 = Instant::now();
    let mut t = start(100_000, &[("windowsize", "4")], &limits(1000), t0);
    drain(&mut t, t0);
    ack(&mut t, 0, t0);
    assert_eq!(drain(&mut t, t0), vec![1, 2, 3, 4]);
    ack(&mut t, 2, t0);
    assert_eq!(drain(&mut t, t0), vec![3, 4, 5, 6]);
    t.handle_timeout(t0 + Duration::from_secs(1));
    assert_eq!(drain(&mut t, t0 + Duration::from_secs(1)), vec![3, 4, 5, 6]);
    assert_eq!(t.retransmitted(), 2 + 4);
    // A late ACK from before the timeout still counts as progress.
    assert_eq!(
        ack(&mut t, 6, t0 + Duration::from_secs(1)),
        Reaction::Accepted
    );
    assert_eq!(
        drain(&mut t, t0 + Duration::from_secs(1)),
        vec![7, 8, 9, 10]
    );
}

#[test]
fn abort_sends_one_error_then_done() {
    let t0 = Instant::now();
    let mut t = start(100_000, &[], &Limits::default(), t0);
    drain(&mut t, t0);
    t.abort(ErrorCode::NotDefined, "File changed");
    assert_eq!(
        t.poll_transmit(),
        Some(Transmit::Error {
            code: ErrorCode::NotDefined,
            message: "File changed"
        })
    );
    t.on_sent(1, t0);
    assert!(t.is_done());
    assert_eq!(t.outcome(), Some(Outcome::Aborted));
    assert_eq!(ack(&mut t, 1, t0), Reaction::Unexpected);
}

/// Found by the tftp_transfer fuzz target: an abort (or a give-up after the
/// last retry) queues an ERROR; if the client's own ERROR arrives before it
/// is sent, the queued one must not follow it (RFC 1350 section 7: an ERROR
/// is never answered).
#[test]
fn fuzz_client_error_while_our_error_is_queued_sends_nothing() {
    let t0 = Instant::now();
    // The fuzz input: windowsize and timeout options, ACK 0 twice, abort,
    // then the client's ERROR 0.
    let mut t = start(
        0x3c3c_2a41,
        &[("timeout", "42"), ("windowsize", "2560")],
        &limits(1000),
        t0,
    );
    assert_eq!(ack(&mut t, 0, t0), Reaction::Accepted);
    assert_eq!(ack(&mut t, 0, t0), Reaction::DuplicateAck);
    t.abort(ErrorCode::NotDefined, "Server shutting down");
    let error = Packet::Error {
        code: ErrorCode::NotDefined,
        message: b"",
    };
    assert_eq!(t.handle_packet(&error, t0), Reaction::Accepted);
    assert_eq!(t.poll_transmit(), None);
    assert!(t.is_done());
    assert_eq!(t.poll_timeout(), None);
    assert_eq!(t.outcome(), Some(Outcome::Aborted));

    // The same after giving up on retries: the timeout ERROR is dropped.
    let mut t = start(1000, &[], &limits(1000), t0);
    let mut now = t0;
    for _ in 0..=Limits::default().retries {
        now += Duration::from_secs(1);
        t.handle_timeout(now);
    }
    assert!(matches!(t.poll_transmit(), Some(Transmit::Error { .. })));
    assert_eq!(t.handle_packet(&error, now), Reaction::Accepted);
    assert_eq!(t.poll_transmit(), None);
    assert!(t.is_done());
    assert_eq!(t.outcome(), Some(Outcome::TimedOut));
}

#[test]
fn an_unanswered_oack_waits_the_servers_timeout_not_the_clients() {
    // A spoofed RRQ asking timeout=255 must not hold its slot for 255 s x
    // retries: until ACK 0 arrives, the server's own timeout applies.
    let t0 = Instant::now();
    let mut t = start(4096, &[("timeout", "255")], &limits(1000), t0);
    assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    t.on_sent(1, t0);
    assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(1)));
    // Once the client answers, its negotiated timeout is honoured.
    ack(&mut t, 0, t0);
    drain(&mut t, t0);
    assert_eq!(t.poll_timeout(), Some(t0 + Duration::from_secs(255)));
}
