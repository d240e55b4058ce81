//! Heap held per idle tunnel, counted by a global allocator (this file is its own test binary,
//! with a single test so nothing else allocates meanwhile). Prints the numbers and asserts the
//! goal: at most 8 KiB of heap per idle tunnel for the pump.
//!
//! `cargo test --release --test tunnel_mem -- --nocapture`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

#[derive(Clone, Copy, Debug)]
enum Pump {
    Pipe,
    CopyBidirectional8K,
}

/// Heap bytes per idle tunnel held by the pump's task (sockets already exist before it starts).
async fn idle_heap_per_tunnel(pump: Pump) -> usize {
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
    settle().await;
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    for (mut near, mut far) in middles {
        tasks.push(tokio::spawn(async move {
            match pump {
                Pump::Pipe => drop(hopgate::tunnel::pump(near, far, IDLE).await),
                Pump::CopyBidirectional8K => drop(tokio::io::copy_bidirectional(&mut near, &mut far).await),
            }
        }));
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
    settle().await;
    let after = LIVE_BYTES.load(Ordering::Relaxed);
    assert!(tasks.iter().all(|t| !t.is_finished()), "{pump:?}: tunnels still open");
    drop(ends);
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task).await.unwrap().unwrap();
    }
    (after.saturating_sub(before)) / TUNNELS
}

/// Lets every task run until it waits on its sockets.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
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
    let pipe = idle_heap_per_tunnel(Pump::Pipe).await;
    let rss_pipe = rss_kib();
    let copy = idle_heap_per_tunnel(Pump::CopyBidirectional8K).await;
    eprintln!(
        "heap per idle tunnel ({TUNNELS} tunnels, {WARM_BYTES} bytes each way first):\n\
         \x20 tunnel::pump                  {pipe:6} bytes (pump future over DuplexStreams: {future_bytes} bytes)\n\
         \x20 tokio copy_bidirectional 8K   {copy:6} bytes\n\
         process RSS {rss_start} KiB -> {rss_pipe} KiB (incl. the 4 sockets per tunnel of this test)"
    );
    assert!(pipe <= MAX_IDLE_HEAP_BYTES, "{pipe} bytes per idle tunnel");
}
