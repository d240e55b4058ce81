//! One CGI script process: spawned in its own process group, stdin fed from the request body,
//! stdout read as a stream, stderr logged, the whole group killed on timeout or when the reader
//! is dropped, and the child always reaped.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::CGI_PATH;
use crate::backend::meta::{CgiScript, FeedError, GatewayError, MetaVars, ReadEnd, UpstreamReader, feed_body};
use crate::idle::{Stamp, Timer};

/// Longest stderr line logged as one message; the rest of the line is cut off.
const MAX_STDERR_LINE_BYTES: usize = 4096;

/// The script's stdout as a stream of chunks. Dropping it kills the process group.
pub(crate) type Stdout = UpstreamReader<ChildStdout, ProcessGuard>;

/// Spawns `script`; the slot is held until the process has been reaped.
pub(crate) fn spawn<S, E>(
    script: &CgiScript,
    vars: &MetaVars,
    body: S,
    timeout: Duration,
    total: Duration,
    slot: super::Slot,
) -> Result<Stdout, GatewayError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
{
    let name = script.path.script_name.clone();
    let mut cmd = Command::new(&script.program);
    cmd.env_clear();
    for (k, v) in vars.iter() {
        cmd.env(k, OsStr::from_bytes(v));
    }
    cmd.env("PATH", CGI_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // setpgid(0, 0) in the child: the script and everything it starts form one group that a
        // single kill(-pgid) ends.
        .process_group(0)
        // Backstop only (runtime shutdown): the supervisor below kills the whole group.
        .kill_on_drop(true);
    if let Some(dir) = script.program.parent() {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().map_err(|e| spawn_error(&name, e))?;
    let (Some(stdin), Some(stdout), Some(stderr), Some(pid)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take(), child.id().and_then(|p| i32::try_from(p).ok()))
    else {
        return Err(GatewayError::spawn(name, io::Error::other("the script's pipes are missing")));
    };
    let content_length =
        vars.get("CONTENT_LENGTH").and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.parse::<u64>().ok());
    let progress = Arc::new(Stamp::now());
    let feeder = tokio::spawn(feed_stdin(stdin, body, progress.clone(), content_length, name.clone()));
    tokio::spawn(log_stderr(stderr, name.clone()));
    let (tx, rx) = oneshot::channel();
    let cut = Arc::new(AtomicBool::new(false));
    let deadline = tokio::time::Instant::now() + total;
    let watch = Supervised { pgid: pid, timeout, deadline, total, cut: cut.clone(), name: name.clone() };
    tokio::spawn(supervise(child, rx, watch, slot));
    let guard = ProcessGuard { done: Some(tx), feeder, cut, total };
    Ok(UpstreamReader::new(stdout, guard, Timer::shared(progress, timeout), format!("script {name}")))
}

fn spawn_error(name: &str, e: io::Error) -> GatewayError {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            GatewayError::forbidden(format!("script {name} may not be run")).with_source(e)
        }
        // ENOENT here is a missing interpreter (the script itself was found), ENOEXEC a bad format.
        _ => GatewayError::spawn(name, e),
    }
}

/// Tells the supervisor how reading ended. Dropped without `end(true)`: kill the group now.
pub(crate) struct ProcessGuard {
    done: Option<oneshot::Sender<()>>,
    feeder: JoinHandle<()>,
    /// Set by the supervisor before it kills a script that ran past its total: the end of its output is then a
    /// cut, not the end of the response.
    cut: Arc<AtomicBool>,
    total: Duration,
}

impl ReadEnd for ProcessGuard {
    fn end(&mut self, clean: bool) {
        if clean {
            if let Some(tx) = self.done.take() {
                let _ = tx.send(());
            }
        } else {
            self.done = None;
        }
    }

    fn cut(&self) -> Option<String> {
        self.cut.load(Ordering::SeqCst).then(|| format!("ran past its total of {:?} and was killed", self.total))
    }
}

impl Drop for ProcessGuard {
    fn drop(&mut self) {
        // The client went away or reading is over: stop pulling its body.
        self.feeder.abort();
    }
}

async fn feed_stdin<S, E>(
    mut stdin: tokio::process::ChildStdin,
    body: S,
    progress: Arc<Stamp>,
    limit: Option<u64>,
    name: String,
) where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match feed_body(&mut stdin, body, &progress, limit, |c, out| out.extend_from_slice(&c)).await {
        Ok(()) => {}
        Err(FeedError::Client(e)) => {
            tracing::debug!(script = %name, error = %e, "request body failed")
        }
        // The script exited or closed stdin without reading all of it: its right.
        Err(FeedError::Upstream(e)) => {
            tracing::debug!(script = %name, error = %e, "script stopped reading stdin")
        }
    }
    // Dropping stdin closes the pipe: EOF for the script.
}

async fn log_stderr(stderr: ChildStderr, name: String) {
    let mut reader = BufReader::new(stderr);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_line_capped(&mut reader, &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end();
                if !text.is_empty() {
                    tracing::warn!(script = %name, "{text}");
                }
            }
        }
    }
}

/// Reads one line, keeping at most `MAX_STDERR_LINE_BYTES` of it; returns bytes consumed.
async fn read_line_capped(r: &mut BufReader<ChildStderr>, line: &mut Vec<u8>) -> io::Result<usize> {
    let mut consumed = 0;
    loop {
        let buf = r.fill_buf().await?;
        if buf.is_empty() {
            return Ok(consumed);
        }
        let (take, end) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let room = MAX_STDERR_LINE_BYTES.saturating_sub(line.len());
        line.extend_from_slice(&buf[..take.min(room)]);
        r.consume(take);
        consumed += take;
        if end {
            return Ok(consumed);
        }
    }
}

fn kill_group(pgid: i32) {
    // SAFETY: kill(2) takes no pointers; a negative pid names the process group.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// What the supervisor watches a script for.
struct Supervised {
    pgid: i32,
    /// Silence allowed once output ended cleanly.
    timeout: Duration,
    /// When the script's total (`script_total_secs`) runs out.
    deadline: tokio::time::Instant,
    total: Duration,
    cut: Arc<AtomicBool>,
    name: String,
}

/// Owns the child until it is reaped, so no zombie is left whatever the reader does.
async fn supervise(mut child: Child, done: oneshot::Receiver<()>, w: Supervised, slot: super::Slot) {
    let (pgid, timeout, name) = (w.pgid, w.timeout, w.name.clone());
    let past_total = || {
        // Flagged before the kill, so the reader that sees the output end knows it was cut.
        w.cut.store(true, Ordering::SeqCst);
        tracing::info!(script = %w.name, total = ?w.total, "script ran past its total, killing it");
        kill_group(w.pgid);
    };
    let status = tokio::select! {
        status = child.wait() => status,
        () = tokio::time::sleep_until(w.deadline) => {
            past_total();
            child.wait().await
        }
        end = done => match end {
            // Output ended cleanly: the script may still be finishing; give it the timeout (within its total).
            Ok(()) => match tokio::time::timeout_at(w.deadline.min(tokio::time::Instant::now() + timeout), child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    kill_group(pgid);
                    child.wait().await
                }
            },
            // Timeout, bad output or the reader was dropped (client gone).
            Err(_) => {
                kill_group(pgid);
                child.wait().await
            }
        },
    };
    // Sweep what the script left running in its group (background children). The group id was the
    // leader's pid, reaped just now; Linux hands pids out in increasing order, so a new group with
    // this id this soon is not a practical risk.
    kill_group(pgid);
    match status {
        Ok(s) if s.success() => tracing::debug!(script = %name, "script exited"),
        Ok(s) => tracing::info!(script = %name, status = %s, "script ended unsuccessfully"),
        Err(e) => tracing::warn!(script = %name, error = %e, "waiting for script failed"),
    }
    drop(slot);
}
