//! systemd's readiness protocol (`Type=notify`, sd_notify(3)) without libsystemd: one datagram per state change
//! to the unix socket named by `$NOTIFY_SOCKET` (a path, or an abstract name written with a leading `@`). Without
//! the variable (not started by systemd) nothing is sent. `contrib/hopgate.service` uses it.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Listening: sent after every listener is bound, and after a reload.
pub const READY: &str = "READY=1";
/// A reload starts (followed by [`READY`] when it is over, whether or not it succeeded).
pub const RELOADING: &str = "RELOADING=1";
/// A drain starts.
pub const STOPPING: &str = "STOPPING=1";

/// Sends `states` (joined by newlines) to systemd when it started hopgate. `RELOADING=1` gets the
/// `MONOTONIC_USEC=` systemd asks for beside it. Failures are logged, never fatal.
pub fn send(states: &[&str]) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let mut message = states.join("\n");
    if states.contains(&RELOADING) {
        message.push_str(&format!("\nMONOTONIC_USEC={}", monotonic().as_micros()));
    }
    if let Err(e) = send_to(&path, message.as_bytes()) {
        tracing::warn!("systemd notification {message:?} to {path:?}: {e}");
    }
}

fn send_to(path: &std::ffi::OsStr, message: &[u8]) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    let socket = UnixDatagram::unbound()?;
    let bytes = path.as_bytes();
    match bytes.strip_prefix(b"@") {
        Some(name) => {
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(message, &addr)?;
        }
        None => {
            socket.send_to(message, path)?;
        }
    }
    Ok(())
}

/// CLOCK_MONOTONIC now, as systemd reads `MONOTONIC_USEC`.
fn monotonic() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    Duration::new(ts.tv_sec.max(0) as u64, ts.tv_nsec.clamp(0, 999_999_999) as u32)
}
