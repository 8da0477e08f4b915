//! No allocation per packet: the engine runs in this process under a
//! counting global allocator while real clients (curl lock-step at blksize
//! 1432, dls-bench with windowsize 16) fetch a small and a large file. The
//! large file has thousands more packets; the allocations counted during its
//! transfer may exceed the small one's only by a small constant (request
//! handling, process spawning, client output), never by anything that
//! grows with the packet count.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dls::config::Config;
use dls::engine::Engine;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is the only addition.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations the large transfers may add over the small ones: per-request
/// and per-process costs whose size varies a little (output lengths, a
/// timer re-armed once per timeout period). One allocation per packet would
/// add about 5,000 (curl) or 600 (dls-bench, one ACK per window of 16).
const SLACK: u64 = 32;

const SMALL: usize = 1 << 20;
const LARGE: usize = 8 << 20;

fn counted(run: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    run();
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

fn curl(port: u16, name: &str, out: &Path) {
    let (ok, text) = common::run(
        Command::new("curl")
            .args(["-s", "-S", "--tftp-blksize", "1432", "-o"])
            .arg(out)
            .arg(format!("tftp://127.0.0.1:{port}/{name}")),
        Duration::from_secs(60),
    );
    assert!(ok, "curl failed: {text}");
}

fn bench(port: u16, name: &str, source: &Path) {
    let (ok, text) = common::run(
        Command::new(env!("CARGO_BIN_EXE_dls-bench"))
            .args(["tftp", "--server", &format!("127.0.0.1:{port}")])
            .args(["--file", name, "--clients", "2", "--transfers", "2"])
            .args(["--blksize", "1468", "--windowsize", "16", "--source"])
            .arg(source),
        Duration::from_secs(60),
    );
    assert!(
        ok,
        "dls-bench failed (exit status says a transfer failed): {text}"
    );
}

#[test]
fn allocations_do_not_grow_with_packets() {
    common::require_tool("curl", "curl");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let small = common::pattern(SMALL, 1);
    let large = common::pattern(LARGE, 2);
    std::fs::write(root.join("small"), &small).unwrap();
    std::fs::write(root.join("large"), &large).unwrap();
    let port = common::free_udp_port();
    let text = format!(
        "[engine]\nworkers = 1\n[http]\nenabled = false\n[tftp]\nlisten = [\"127.0.0.1:{port}\"]\nroot = {root:?}\nmax_windowsize = 64\n"
    );
    let config = Config::parse(&text, &dir.path().join("dls.toml")).unwrap();
    let engine = Engine::start(&config).unwrap();
    let got = dir.path().join("got");

    // Warm-up: buffers and pools reach their working size here.
    curl(port, "small", &got);
    bench(port, "small", &root.join("small"));

    let curl_small = counted(|| curl(port, "small", &got));
    assert_eq!(std::fs::read(&got).unwrap(), small);
    let curl_large = counted(|| curl(port, "large", &got));
    assert!(
        std::fs::read(&got).unwrap() == large,
        "curl got other bytes"
    );
    let bench_small = counted(|| bench(port, "small", &root.join("small")));
    let bench_large = counted(|| bench(port, "large", &root.join("large")));

    engine.shutdown();
    assert!(engine.join(), "engine workers did not stop cleanly");
    let packets = (LARGE - SMALL) / 1432;
    eprintln!(
        "allocations: curl {curl_small} -> {curl_large}, dls-bench {bench_small} -> {bench_large}, for {packets} more DATA per curl transfer"
    );
    assert!(
        curl_large <= curl_small + SLACK,
        "lock-step: {curl_small} allocations for {SMALL} bytes, {curl_large} for {LARGE}"
    );
    assert!(
        bench_large <= bench_small + SLACK,
        "windowed: {bench_small} allocations for {SMALL} bytes, {bench_large} for {LARGE}"
    );
}
