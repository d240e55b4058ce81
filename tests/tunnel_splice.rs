//! The spliced pump (tunnel::splice: two plain TCP sockets, bytes moved by splice(2) through a pipe, never through
//! user space), between real loopback sockets: bulk data with sha256 checks both ways, bytes read before the tunnel
//! began delivered first, half-close both ways, idle timeout, and no pipe held while a tunnel idles.

use std::time::{Duration, Instant};

use bytes::Bytes;
use hopgate::tunnel::{self, Ended};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LONG: Duration = Duration::from_secs(60);
/// Every test finishes well before this, or fails.
const DEADLINE: Duration = Duration::from_secs(120);

async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (client.unwrap(), accepted.unwrap().0)
}

/// client <-> [near | splice | far] <-> target, with `early` already read off near (as hyper reads bytes a client
/// sent behind its CONNECT): returns (client, target, the pump's task).
async fn tunnel(
    idle: Duration,
    early: &'static [u8],
) -> (TcpStream, TcpStream, tokio::task::JoinHandle<tunnel::Outcome>) {
    let (client, mut near) = tcp_pair().await;
    let (mut far, target) = tcp_pair().await;
    let task = tokio::spawn(async move {
        tunnel::splice(&mut near, Bytes::from_static(early), &mut far, Bytes::new(), idle).await
    });
    (client, target, task)
}

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

/// Writes `total` bytes of the pattern in uneven chunks, then shuts down writing; returns the sha256 of `first`
/// followed by them.
async fn send<W: AsyncWrite + Unpin>(mut w: W, seed: u64, total: usize, first: &[u8]) -> [u8; 32] {
    let block = pattern(seed, 1 << 20);
    let mut hash = Sha256::new();
    hash.update(first);
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
async fn tens_of_mib_each_way_arrive_intact_early_bytes_first() {
    const EARLY: &[u8] = b"sent behind the CONNECT head\n";
    let total = 48 << 20;
    let (client, target, task) = tunnel(LONG, EARLY).await;
    let (cr, cw) = client.into_split();
    let (tr, tw) = target.into_split();
    let run = async {
        let (up_sent, up_got, down_sent, down_got) =
            tokio::join!(send(cw, 1, total, EARLY), receive(tr), send(tw, 2, total, b""), receive(cr));
        assert_eq!(up_got, (total + EARLY.len(), up_sent), "client -> target");
        assert_eq!(down_got, (total, down_sent), "target -> client");
        let outcome = task.await.unwrap();
        assert!(matches!(outcome.ended, Ended::Closed), "{:?}", outcome.ended);
        assert_eq!((outcome.a_to_b, outcome.b_to_a), ((total + EARLY.len()) as u64, total as u64));
    };
    tokio::time::timeout(DEADLINE, run).await.expect("tunnel finished");
}

/// One side says all it has and shuts down writing; it still receives the whole answer, then EOF.
async fn half_close(client_first: bool) {
    let (mut client, mut target, task) = tunnel(LONG, b"").await;
    let answer = pattern(9, 3 << 20);
    let run = async {
        let (first, second) = if client_first { (&mut client, &mut target) } else { (&mut target, &mut client) };
        first.write_all(b"all I have").await.unwrap();
        first.shutdown().await.unwrap();
        let mut got = Vec::new();
        second.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"all I have");
        second.write_all(&answer).await.unwrap();
        second.shutdown().await.unwrap();
        let mut back = Vec::new();
        first.read_to_end(&mut back).await.unwrap();
        assert!(back == answer, "the answer after the half-close arrived whole ({} bytes)", back.len());
        assert!(matches!(task.await.unwrap().ended, Ended::Closed));
    };
    tokio::time::timeout(DEADLINE, run).await.expect("tunnel finished");
}

#[tokio::test]
async fn half_close_client_first() {
    half_close(true).await;
}

#[tokio::test]
async fn half_close_target_first() {
    half_close(false).await;
}

#[tokio::test]
async fn idle_timeout_ends_a_spliced_tunnel() {
    let (mut client, mut target, task) = tunnel(Duration::from_millis(300), b"").await;
    client.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    target.read_exact(&mut got).await.unwrap();
    let outcome = tokio::time::timeout(DEADLINE, task).await.expect("ended").unwrap();
    assert!(matches!(outcome.ended, Ended::Idle), "{:?}", outcome.ended);
    assert_eq!((outcome.a_to_b, outcome.b_to_a), (4, 0));
    // Both sockets were handed back closed for reading by the peers' view: the client sees EOF once the pump's
    // sockets are dropped (they are dropped with the task).
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn pipes_open() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("pipe:")))
                .count()
        })
        .unwrap_or(0)
}

/// A spliced tunnel holds its pipe only while bytes flow: once idle, no pipe is left open (the memory
/// goal: nothing held per idle tunnel but its sockets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_spliced_tunnel_holds_no_pipe() {
    const TUNNELS: usize = 20;
    let pipes_before = pipes_open();
    let mut open = Vec::new();
    for _ in 0..TUNNELS {
        open.push(tunnel(LONG, b"").await);
    }
    let payload = pattern(3, 1 << 20);
    let mut buf = vec![0u8; payload.len()];
    for (client, target, _) in &mut open {
        client.write_all(&payload).await.unwrap();
        target.read_exact(&mut buf).await.unwrap();
        target.write_all(&payload).await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
    }
    // The last bytes have arrived; a pump may still be finishing its turn before it waits on its sockets.
    let deadline = Instant::now() + Duration::from_secs(10);
    while pipes_open() > pipes_before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let held = pipes_open() - pipes_before;
    assert_eq!(held, 0, "{held} pipe ends open for {TUNNELS} idle tunnels ({} fds in all)", open_fds());
    assert!(open.iter().all(|(_, _, t)| !t.is_finished()), "tunnels still open");
}
