//! A misbehaving FTP server for the tests, scripted in Rust: a PASV reply naming another address, data
//! connections dropped mid-file, short transfers, 421 greetings, silence, oversized listings, control
//! connections it closes on request, and replies with HTML in them. It records every command it got.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::timeout;

/// What RETR does after its 150.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Retr {
    Whole,
    /// Half the file, close the data connection, then `426`.
    DropThen426,
    /// Half the file, then close data and control without a word.
    DropAndHangUp,
    /// Half the file, then a cheerful `226`.
    ShortThen226,
}

#[derive(Clone)]
pub struct Script {
    pub greeting: &'static str,
    pub epsv: bool,
    /// The address PASV names (the data listener is on 127.0.0.1 regardless).
    pub pasv_names: Ipv4Addr,
    pub retr: Retr,
    pub file: Vec<u8>,
    pub list: Vec<u8>,
    /// The reply to SIZE, MDTM, CWD, RETR and STOR of any path containing `missing`.
    pub missing: &'static str,
    /// Not 0: the port EPSV names (on the control connection's address) instead of a data listener of its own;
    /// settable once the server runs.
    pub epsv_port: Arc<AtomicU16>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            greeting: "220 rogue ready",
            epsv: true,
            pasv_names: Ipv4Addr::LOCALHOST,
            retr: Retr::Whole,
            file: (0..200_000u32).map(|i| (i % 251) as u8).collect(),
            list: Vec::new(),
            missing: "550 <missing> & gone",
            epsv_port: Arc::new(AtomicU16::new(0)),
        }
    }
}

#[derive(Clone, Default)]
pub struct Seen {
    pub commands: Arc<Mutex<Vec<String>>>,
    pub logins: Arc<AtomicUsize>,
    /// Connections to the address PASV named instead of the control peer.
    pub decoy_hits: Arc<AtomicUsize>,
    /// Notified: every control connection closes.
    pub hang_up: Arc<Notify>,
    /// Control connections that have ended (closed by either side).
    pub ended: Arc<AtomicUsize>,
}

impl Seen {
    pub fn commands(&self) -> Vec<String> {
        self.commands.lock().unwrap().clone()
    }
    pub fn count(&self, verb: &str) -> usize {
        self.commands().iter().filter(|c| c.starts_with(verb)).count()
    }
    pub fn logins(&self) -> usize {
        self.logins.load(Ordering::SeqCst)
    }
    pub fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }
}

/// Starts the rogue server on 127.0.0.1:0; it lives as long as the test's runtime.
pub async fn rogue(script: Script) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Seen::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let s = s.clone();
            let script = script.clone();
            tokio::spawn(async move {
                serve(conn, script, s.clone()).await;
                s.ended.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, seen)
}

async fn serve(conn: TcpStream, script: Script, seen: Seen) {
    let (rd, mut wr) = conn.into_split();
    let mut rd = BufReader::new(rd);
    if script.greeting.is_empty() {
        // say nothing for longer than a client's reply timeout (30 s); bounded so that the task ends
        tokio::time::sleep(Duration::from_secs(45)).await;
        return;
    }
    let _ = wr.write_all(format!("{}\r\n", script.greeting).as_bytes()).await;
    if script.greeting.starts_with("421") {
        return;
    }
    let mut data: Option<TcpListener> = None;
    for _ in 0..1000 {
        let mut line = String::new();
        let read = tokio::select! {
            r = rd.read_line(&mut line) => r,
            _ = seen.hang_up.notified() => return,
        };
        if !matches!(read, Ok(n) if n > 0) {
            return;
        }
        let line = line.trim_end().to_string();
        seen.commands.lock().unwrap().push(line.clone());
        let (verb, arg) = line.split_once(' ').unwrap_or((&line, ""));
        let upper = verb.to_ascii_uppercase();
        if matches!(upper.as_str(), "SIZE" | "MDTM" | "CWD" | "RETR" | "STOR") && arg.contains("missing") {
            let _ = wr.write_all(format!("{}\r\n", script.missing).as_bytes()).await;
            continue;
        }
        let reply = match upper.as_str() {
            "USER" => "331 password please".to_string(),
            "PASS" if arg == "bad" => "530 Login incorrect.".to_string(),
            "PASS" => {
                seen.logins.fetch_add(1, Ordering::SeqCst);
                "230 in".to_string()
            }
            "FEAT" if script.epsv => "211-Features:\r\n SIZE\r\n EPSV\r\n211 End".to_string(),
            "FEAT" => "211-Features:\r\n SIZE\r\n211 End".to_string(),
            "TYPE" | "NOOP" => "200 ok".to_string(),
            "PWD" => "257 \"/\" is cwd".to_string(),
            "CWD" => "250 ok".to_string(),
            "SIZE" => format!("213 {}", script.file.len()),
            "EPSV" if script.epsv && script.epsv_port.load(Ordering::SeqCst) != 0 => {
                data = None;
                format!("229 Entering Extended Passive Mode (|||{}|)", script.epsv_port.load(Ordering::SeqCst))
            }
            "EPSV" if script.epsv => {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let port = l.local_addr().unwrap().port();
                data = Some(l);
                format!("229 Entering Extended Passive Mode (|||{port}|)")
            }
            "PASV" => {
                let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                let port = l.local_addr().unwrap().port();
                if script.pasv_names != Ipv4Addr::LOCALHOST {
                    // a decoy on the named address and the same port counts who goes there
                    let decoy = TcpListener::bind((script.pasv_names, port)).await.unwrap();
                    let hits = seen.decoy_hits.clone();
                    tokio::spawn(async move {
                        while decoy.accept().await.is_ok() {
                            hits.fetch_add(1, Ordering::SeqCst);
                        }
                    });
                }
                data = Some(l);
                let [a, b, c, d] = script.pasv_names.octets();
                format!("227 Entering Passive Mode ({a},{b},{c},{d},{},{})", port >> 8, port & 255)
            }
            "RETR" | "LIST" | "MLSD" => {
                let Some(l) = data.take() else {
                    let _ = wr.write_all(b"425 Use PASV first\r\n").await;
                    continue;
                };
                let _ = wr.write_all(b"150 here it comes\r\n").await;
                let Ok(Ok((mut d, _))) = timeout(Duration::from_secs(5), l.accept()).await else {
                    return;
                };
                let body = if verb == "RETR" { &script.file } else { &script.list };
                let mode = if verb == "RETR" { script.retr } else { Retr::Whole };
                let cut = if mode == Retr::Whole { body.len() } else { body.len() / 2 };
                let _ = d.write_all(&body[..cut]).await;
                drop(d);
                match mode {
                    Retr::Whole | Retr::ShortThen226 => "226 done".to_string(),
                    Retr::DropThen426 => "426 Connection closed; transfer aborted.".to_string(),
                    Retr::DropAndHangUp => return,
                }
            }
            "QUIT" => {
                let _ = wr.write_all(b"221 bye\r\n").await;
                return;
            }
            _ => "502 not here".to_string(),
        };
        let _ = wr.write_all(format!("{reply}\r\n").as_bytes()).await;
    }
}

/// Starts the rogue server on a runtime of its own (for tests that are not async); the thread and the
/// server live until the test process ends.
pub fn rogue_in_thread(script: Script) -> (SocketAddr, Seen) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            return;
        };
        rt.block_on(async move {
            let started = rogue(script).await;
            let _ = tx.send(started);
            std::future::pending::<()>().await;
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("rogue FTP server started")
}
