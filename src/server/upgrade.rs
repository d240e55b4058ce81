//! Binary upgrade without a dropped connection (`hopgate run FILE --upgrade-socket PATH`), as HAProxy's `-x` and
//! pingora's graceful upgrade do it: the listening sockets themselves are handed from the running process to the
//! new one over a unix socket (SCM_RIGHTS), so their accept queues are never closed; two processes binding the
//! same port with SO_REUSEPORT would instead reset whatever is queued on the socket the old one closes.
//!
//! The exchange on PATH, one connection:
//! 1. the new process connects and writes `HOPGATE-UPGRADE 1\n`;
//! 2. the running process answers with one message: a line per socket (`listener ADDR` or `admin ADDR`, ADDR being
//!    the address the socket was configured with) and the sockets as SCM_RIGHTS, in the same order;
//! 3. the new process binds what it did not receive, builds its listeners on the received sockets, prints its
//!    `listening on` lines and writes `DRAIN\n`;
//! 4. the running process answers `OK\n`, stops offering, and drains as on SIGTERM (its listeners stop accepting;
//!    the sockets live on in the new process); the new process then offers its sockets on PATH for the next
//!    upgrade.
//!
//! With nothing listening on PATH (no file, or a stale one), the new process binds as usual.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpListener;

const HELLO: &[u8] = b"HOPGATE-UPGRADE 1\n";
/// Longest the two processes wait for each other at any step.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// Most sockets one handover carries.
const MAX_SOCKETS: usize = 256;

/// Listening sockets received from the running process, by the address they were configured with.
#[derive(Default)]
pub struct Inherited {
    listeners: HashMap<SocketAddr, std::net::TcpListener>,
    admin: HashMap<SocketAddr, std::net::TcpListener>,
}

impl Inherited {
    /// The socket the running process listened on for `configured`, if it handed one over.
    pub fn take(&mut self, configured: SocketAddr) -> Option<TcpListener> {
        tokio_listener(self.listeners.remove(&configured)?)
    }

    /// The running process's admin socket for `configured`, if it handed one over.
    pub fn take_admin(&mut self, configured: SocketAddr) -> Option<TcpListener> {
        tokio_listener(self.admin.remove(&configured)?)
    }

    /// How many sockets were received and not used (their addresses are no longer configured; they are closed).
    pub fn unused(&self) -> usize {
        self.listeners.len() + self.admin.len()
    }
}

fn tokio_listener(l: std::net::TcpListener) -> Option<TcpListener> {
    l.set_nonblocking(true).ok()?;
    TcpListener::from_std(l).ok()
}

/// The new process's side of a handover in progress: [`Handover::finish`] tells the old process to drain.
pub struct Handover {
    stream: UnixStream,
    path: PathBuf,
}

/// Asks the process offering its sockets on `path` for them. `Ok(None)`: nobody offers (bind as usual).
pub fn take_over(path: &Path) -> io::Result<Option<(Inherited, Handover)>> {
    let mut stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => return Ok(None),
        Err(e) => return Err(e),
    };
    stream.set_read_timeout(Some(STEP_TIMEOUT))?;
    stream.set_write_timeout(Some(STEP_TIMEOUT))?;
    stream.write_all(HELLO)?;
    let mut buf = vec![0u8; 64 * 1024];
    let (n, fds) = recv_with_fds(&stream, &mut buf)?;
    let text = std::str::from_utf8(&buf[..n]).map_err(|_| invalid("the socket list is not UTF-8"))?;
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() != fds.len() {
        return Err(invalid(&format!("{} sockets for {} lines", fds.len(), lines.len())));
    }
    let mut inherited = Inherited::default();
    for (line, fd) in lines.into_iter().zip(fds) {
        let (kind, addr) = line.split_once(' ').ok_or_else(|| invalid(line))?;
        let addr: SocketAddr = addr.parse().map_err(|_| invalid(line))?;
        let listener = std::net::TcpListener::from(fd);
        match kind {
            "listener" => inherited.listeners.insert(addr, listener),
            "admin" => inherited.admin.insert(addr, listener),
            _ => return Err(invalid(line)),
        };
    }
    Ok(Some((inherited, Handover { stream, path: path.to_owned() })))
}

impl Handover {
    /// Tells the old process to drain and waits for its `OK`.
    pub fn finish(mut self) -> io::Result<PathBuf> {
        self.stream.write_all(b"DRAIN\n")?;
        let mut ok = [0u8; 3];
        self.stream.read_exact(&mut ok)?;
        if &ok != b"OK\n" {
            return Err(invalid("the running process did not acknowledge the drain"));
        }
        Ok(self.path)
    }
}

/// The running process's side: offers `sockets` (kind, configured address, fd) on `path` until one new process
/// took them over; then `taken_over` is called (the caller drains). The file at `path` is replaced: a stale one
/// from a process that is gone is removed first.
pub fn offer(path: &Path, sockets: super::Offered, taken_over: impl FnOnce() + Send + 'static) -> io::Result<()> {
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    let path = path.to_owned();
    std::thread::Builder::new().name("hopgate-upgrade".into()).spawn(move || {
        for stream in listener.incoming() {
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("upgrade socket {}: {e}", path.display());
                    continue;
                }
            };
            // The sockets as they are now (a reload may have added or removed listeners); the Arcs keep them
            // open while they are sent.
            let now = sockets.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let list: Vec<(&'static str, SocketAddr, RawFd)> =
                now.iter().map(|(kind, addr, tcp)| (*kind, *addr, tcp.as_raw_fd())).collect();
            match hand_over(stream, &list) {
                Ok(()) => {
                    tracing::info!("a new hopgate took the listening sockets over on {}: draining", path.display());
                    taken_over();
                    return;
                }
                Err(e) => tracing::warn!("upgrade on {} not completed: {e}; still serving", path.display()),
            }
        }
    })?;
    Ok(())
}

fn hand_over(stream: UnixStream, sockets: &[(&'static str, SocketAddr, RawFd)]) -> io::Result<()> {
    if sockets.len() > MAX_SOCKETS {
        return Err(invalid(&format!("more than {MAX_SOCKETS} sockets")));
    }
    stream.set_read_timeout(Some(STEP_TIMEOUT))?;
    stream.set_write_timeout(Some(STEP_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut hello = String::new();
    reader.read_line(&mut hello)?;
    if hello.as_bytes() != HELLO {
        return Err(invalid("not a hopgate upgrade request"));
    }
    let text: String = sockets.iter().map(|(kind, addr, _)| format!("{kind} {addr}\n")).collect();
    let fds: Vec<RawFd> = sockets.iter().map(|(_, _, fd)| *fd).collect();
    send_with_fds(&stream, text.as_bytes(), &fds)?;
    let mut drain = String::new();
    reader.read_line(&mut drain)?;
    if drain != "DRAIN\n" {
        return Err(invalid("the new process did not ask for the drain (it failed to start?)"));
    }
    (&stream).write_all(b"OK\n")?;
    Ok(())
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("upgrade: {what}"))
}

/// One `sendmsg` of `data` with `fds` as SCM_RIGHTS.
fn send_with_fds(stream: &UnixStream, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u8; space.max(1)];
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: an all-zero msghdr is valid; the fields set below point at live buffers of the given lengths.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer is CMSG_SPACE(fd_bytes) long, so the first header and its data fit in it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), fd_bytes);
        }
    }
    // SAFETY: msg and everything it points at live across the call.
    let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != data.len() {
        return Err(invalid("short send"));
    }
    Ok(())
}

/// One `recvmsg` into `buf`, with the SCM_RIGHTS descriptors it carried (close-on-exec).
fn recv_with_fds(stream: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let max_bytes = MAX_SOCKETS * std::mem::size_of::<RawFd>();
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(max_bytes as u32) } as usize;
    let mut control = vec![0u8; space];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: as in send_with_fds.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg points at live buffers of the lengths it names.
    let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled the control buffer; CMSG_FIRSTHDR/NXTHDR walk it within msg_controllen, and each
    // SCM_RIGHTS payload is an array of descriptors now owned by this process.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg);
                let len = (*cmsg).cmsg_len as usize - (data as usize - cmsg as usize);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(invalid("too many sockets"));
    }
    Ok((n as usize, fds))
}
