//! Heap held per idle tunnel, counted by a global allocator (this file is its own test binary,
//! with a single test so nothing else allocates meanwhile). Prints the number and asserts the
//! goal: at most 8 KiB of heap per idle tunnel for the pump. `bench/run E` measures the whole
//! process per idle tunnel against Squid.
//!
//! `cargo test --release --test tunnel_mem -- --nocapture`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::wait_until_async;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

mod support;

struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to System unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Tunnels per measurement: 4 sockets each in this process (client, near, far, target).
const TUNNELS: usize = 1000;
/// Bytes each way through every tunnel before it goes idle, so the pump has worked.
const WARM_BYTES: usize = 100_000;
const IDLE: Duration = Duration::from_secs(600);
/// Goal from the tunnels issue.
const MAX_IDLE_HEAP_BYTES: usize = 8 * 1024;

async fn tcp_pair(listener: &TcpListener) -> (TcpStream, TcpStream) {
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.unwrap(), accepted.unwrap().0)
}

/// Heap bytes per idle tunnel held by the pump's task (sockets already exist before it starts), once it is at most
/// `goal`, or as it is after waiting 10 s for that.
async fn idle_heap_per_tunnel(goal: usize) -> usize {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut ends = Vec::with_capacity(TUNNELS);
    let mut middles = Vec::with_capacity(TUNNELS);
    for _ in 0..TUNNELS {
        let (client, near) = tcp_pair(&listener).await;
        let (far, target) = tcp_pair(&listener).await;
        ends.push((client, target));
        middles.push((near, far));
    }
    let mut tasks = Vec::with_capacity(TUNNELS);
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    for (near, far) in middles {
        tasks.push(tokio::spawn(async move { drop(hopgate::tunnel::pump(near, far, IDLE).await) }));
    }
    // Warm every tunnel both ways, then let it sit idle.
    let payload = vec![7u8; WARM_BYTES];
    let mut buf = vec![0u8; WARM_BYTES];
    for (client, target) in &mut ends {
        client.write_all(&payload).await.unwrap();
        target.read_exact(&mut buf).await.unwrap();
        target.write_all(&payload).await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
    }
    // The last bytes have arrived; the pumps may still be finishing their turn before they wait on their sockets.
    let per_tunnel = || LIVE_BYTES.load(Ordering::Relaxed).saturating_sub(before) / TUNNELS;
    wait_until_async(Duration::from_secs(10), || per_tunnel() <= goal).await;
    let held = per_tunnel();
    assert!(tasks.iter().all(|t| !t.is_finished()), "tunnels still open");
    drop(ends);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task).await.unwrap().unwrap();
    }
    held
}

fn rss_kib() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4
}

#[tokio::test]
async fn idle_tunnel_holds_no_buffer() {
    let (a, _a) = tokio::io::duplex(1);
    let (b, _b) = tokio::io::duplex(1);
    let future_bytes = std::mem::size_of_val(&hopgate::tunnel::pump(a, b, IDLE));
    let rss_start = rss_kib();
    let pipe = idle_heap_per_tunnel(MAX_IDLE_HEAP_BYTES).await;
    let rss_pipe = rss_kib();
    eprintln!(
        "heap per idle tunnel ({TUNNELS} tunnels, {WARM_BYTES} bytes each way first): tunnel::pump {pipe} bytes \
         (the pump future over DuplexStreams: {future_bytes} bytes); process RSS {rss_start} KiB -> {rss_pipe} KiB \
         (incl. the 4 sockets per tunnel of this test)"
    );
    assert!(pipe <= MAX_IDLE_HEAP_BYTES, "{pipe} bytes per idle tunnel");
}
