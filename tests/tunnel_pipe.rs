//! The tunnel byte pump as a unit, between real loopback TCP sockets: bulk data with sha256 checks, half-close both
//! ways, idle timeout. Its throughput against direct loopback is measured by `bench/run C` (a CONNECT tunnel through
//! `hopgate proxy`, which is this pump).

use std::time::Duration;

use hopgate::tunnel::{self, Ended};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LONG: Duration = Duration::from_secs(60);
/// Every test finishes well before this, or fails.
const DEADLINE: Duration = Duration::from_secs(120);

/// A connected loopback pair: (connecting side, accepted side).
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.unwrap(), accepted.unwrap().0)
}

/// client <-> [near | pump | far] <-> target: returns (client, target, the pump's task).
async fn tunnel(idle: Duration) -> (TcpStream, TcpStream, tokio::task::JoinHandle<tunnel::Outcome>) {
    let (client, near) = tcp_pair().await;
    let (far, target) = tcp_pair().await;
    let task = tokio::spawn(tunnel::pump(near, far, idle));
    (client, target, task)
}

/// Deterministic pseudo-random bytes (xorshift), so corruption cannot hide in repetition.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `total` bytes of the pattern in uneven chunks, then shuts down writing; returns the sha256.
async fn send<W: AsyncWrite + Unpin>(mut w: W, seed: u64, total: usize) -> [u8; 32] {
    let block = pattern(seed, 1 << 20);
    let mut hash = Sha256::new();
    let (mut sent, mut step) = (0, 1000);
    while sent < total {
        let n = step.min(total - sent).min(block.len());
        w.write_all(&block[..n]).await.unwrap();
        hash.update(&block[..n]);
        sent += n;
        step = step * 7 % (block.len() - 1) + 1;
    }
    w.shutdown().await.unwrap();
    hash.finalize().into()
}

/// Reads to EOF; returns (bytes, sha256).
async fn receive<R: AsyncRead + Unpin>(mut r: R) -> (usize, [u8; 32]) {
    let mut buf = vec![0; 100_000];
    let (mut total, mut hash) = (0, Sha256::new());
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            return (total, hash.finalize().into());
        }
        hash.update(&buf[..n]);
        total += n;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tens_of_mib_each_way_arrive_intact() {
    const SIZE: usize = 24 << 20;
    let (client, target, task) = tunnel(LONG).await;
    let (client_r, client_w) = client.into_split();
    let (target_r, target_w) = target.into_split();
    let work = async {
        tokio::join!(send(client_w, 1, SIZE), receive(target_r), send(target_w, 2, SIZE + 7), receive(client_r))
    };
    let (up_sent, up_got, down_sent, down_got) = tokio::time::timeout(DEADLINE, work).await.unwrap();
    assert_eq!(up_got, (SIZE, up_sent), "client -> target intact");
    assert_eq!(down_got, (SIZE + 7, down_sent), "target -> client intact");
    let outcome = task.await.unwrap();
    assert!(matches!(outcome.ended, Ended::Closed), "{outcome:?}");
    assert_eq!((outcome.a_to_b, outcome.b_to_a), (SIZE as u64, SIZE as u64 + 7));
}

/// One side says all it has and shuts down writing; it still receives the whole answer, then EOF.
async fn half_close(client_first: bool) {
    let (client, target, task) = tunnel(LONG).await;
    let (first, second) = if client_first { (client, target) } else { (target, client) };
    let (mut first_r, first_w) = first.into_split();
    let (mut second_r, mut second_w) = second.into_split();
    let work = async {
        let question = send(first_w, 3, 3 << 20).await;
        let (n, got) = receive(&mut second_r).await; // EOF arrives: the pump half-closed
        assert_eq!((n, got), (3 << 20, question), "question intact");
        // Only after seeing EOF does the second side answer, on the still-open direction.
        let answer = pattern(4, 2 << 20);
        second_w.write_all(&answer).await.unwrap();
        second_w.shutdown().await.unwrap();
        let mut got = Vec::new();
        first_r.read_to_end(&mut got).await.unwrap();
        assert!(got == answer, "answer intact after half-close ({} bytes)", got.len());
    };
    tokio::time::timeout(DEADLINE, work).await.unwrap();
    let outcome = tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
    assert!(matches!(outcome.ended, Ended::Closed), "{outcome:?}");
}

#[tokio::test]
async fn half_close_client_first() {
    half_close(true).await;
}

#[tokio::test]
async fn half_close_target_first() {
    half_close(false).await;
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_counts_from_the_last_byte() {
    let (a, mut a_peer) = tokio::io::duplex(1024);
    let (b, mut b_peer) = tokio::io::duplex(1024);
    let start = tokio::time::Instant::now();
    let task = tokio::spawn(tunnel::pump(a, b, Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_secs(6)).await;
    a_peer.write_all(b"ping").await.unwrap();
    let mut got = [0; 4];
    b_peer.read_exact(&mut got).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(!task.is_finished(), "traffic at 6s re-armed the idle timer");
    let outcome = task.await.unwrap();
    assert!(matches!(outcome.ended, Ended::Idle), "{outcome:?}");
    assert_eq!((outcome.a_to_b, outcome.b_to_a), (4, 0));
    let ended_after = start.elapsed();
    assert!(ended_after >= Duration::from_secs(16) && ended_after < Duration::from_secs(17), "{ended_after:?}");
}

#[tokio::test]
async fn idle_timeout_ends_real_tunnels() {
    let (mut client, mut target, task) = tunnel(Duration::from_millis(300)).await;
    client.write_all(b"hello").await.unwrap();
    let mut got = [0; 5];
    target.read_exact(&mut got).await.unwrap();
    let outcome = tokio::time::timeout(DEADLINE, task).await.unwrap().unwrap();
    assert!(matches!(outcome.ended, Ended::Idle), "{outcome:?}");
    // The pump dropped both sockets: both peers see EOF.
    assert_eq!(client.read(&mut got).await.unwrap(), 0);
    assert_eq!(target.read(&mut got).await.unwrap(), 0);
    let (a, _a_peer) = tokio::io::duplex(64);
    let (b, _b_peer) = tokio::io::duplex(64);
    let err = tunnel::pipe(a, b, Duration::from_millis(50)).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
}
