//! When a request's bytes arrived: the kernel's receive time of the last TCP segment they were read from
//! (`SO_TIMESTAMPNS`), for rooms that may answer from a look at the file system taken after that moment instead of
//! taking one of their own (the static room's directory notes, docs/files.md "What is noted between requests").
//!
//! A look taken after a request's bytes arrived is taken after the client began to send it, so answering from it
//! is answering as of a moment within the request's own lifetime: what a look of its own would give, had it come
//! a little later. The stamp is the receive time of the *last* segment read (a later moment than the request's
//! first byte, so never too early). The kernel stamps received segments with the system clock (`CLOCK_REALTIME`),
//! the clock [`std::time::SystemTime`] reads; a step back of that clock between a look and a request's arrival could
//! make the look seem later than it was (docs/files.md says so).
//!
//! The kernel turns stamping on for the whole system a moment after the first socket asks for it (and off a
//! moment after the last one closes): segments received before that have no stamp, and their requests none.
//!
//! The connection that read a request makes its stamp [`arrived`] for the rooms while it polls the request's
//! service ([`during`]); anything else (HTTP/2, TLS, a throttled connection, a read without a stamp) has none,
//! and the rooms look for themselves.

use std::cell::Cell;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

thread_local! {
    static ARRIVED: Cell<Option<SystemTime>> = const { Cell::new(None) };
}

/// The arrival of the request whose service this thread is polling, if its connection knows it.
pub fn arrived() -> Option<SystemTime> {
    ARRIVED.with(Cell::get)
}

/// Runs `f` (a poll of a request's service) with `at` as [`arrived`]; what was there before is put back.
pub fn during<R>(at: Option<SystemTime>, f: impl FnOnce() -> R) -> R {
    let before = ARRIVED.with(|a| a.replace(at));
    let r = f();
    ARRIVED.with(|a| a.set(before));
    r
}

/// Asks the kernel to stamp what the socket receives (`SO_TIMESTAMPNS`); whether it will.
pub fn enable(fd: RawFd) -> bool {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int from the pointer it is given, for the length given.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}

/// Room for one `SCM_TIMESTAMPNS` control message (and a spare one), aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Control([u8; 64]);

/// recvmsg(2) into `spare`: how many bytes, and the receive time of the last segment they came from when the
/// kernel stamped it (the socket was [`enable`]d before it arrived).
pub fn recv(fd: RawFd, spare: &mut [MaybeUninit<u8>]) -> io::Result<(usize, Option<SystemTime>)> {
    let mut iov = libc::iovec { iov_base: spare.as_mut_ptr().cast(), iov_len: spare.len() };
    let mut control = Control([0; 64]);
    // SAFETY: an all-zero msghdr is a valid, empty one; its pointers are set below to live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.0.as_mut_ptr().cast();
    msg.msg_controllen = control.0.len() as _;
    // SAFETY: recvmsg writes at most `iov_len` bytes into `spare` and at most `msg_controllen` into `control`,
    // both alive for the call.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: the CMSG_* walk stays within the control buffer recvmsg filled (msg_controllen was set by it).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                stamp = time(ts);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, stamp))
}

/// A kernel timespec as a SystemTime; None before 1970 or out of range.
fn time(ts: libc::timespec) -> Option<SystemTime> {
    let secs = u64::try_from(ts.tv_sec).ok()?;
    let nanos = u32::try_from(ts.tv_nsec).ok().filter(|n| *n < 1_000_000_000)?;
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_stamped_socket_says_when_its_bytes_arrived() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert!(enable(server.as_raw_fd()));
        // The kernel turns stamping on for the system a moment after the first socket asks (a deferred switch):
        // what arrives before that has no stamp.
        for _ in 0..100 {
            let before = SystemTime::now();
            client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            let mut buf = [MaybeUninit::uninit(); 64];
            let (n, stamp) = recv(server.as_raw_fd(), &mut buf).unwrap();
            let after = SystemTime::now();
            assert_eq!(n, 18);
            if let Some(stamp) = stamp {
                assert!(before <= stamp && stamp <= after, "{before:?} <= {stamp:?} <= {after:?}");
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no receive time in a second");
    }

    #[test]
    fn an_unstamped_socket_says_nothing() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        client.write_all(b"x").unwrap();
        let mut buf = [MaybeUninit::uninit(); 8];
        assert_eq!(recv(server.as_raw_fd(), &mut buf).unwrap(), (1, None));
    }

    #[test]
    fn during_sets_and_puts_back() {
        let t = UNIX_EPOCH + Duration::from_secs(5);
        assert_eq!(arrived(), None);
        let seen = during(Some(t), || (arrived(), during(None, arrived)));
        assert_eq!(seen, (Some(t), None));
        assert_eq!(arrived(), None);
    }
}
