//! The agent's system calls that Rust's standard library and tokio do not
//! wrap, in one place: everything else in the crate is `unsafe`-free
//! (`#![deny(unsafe_code)]` in lib.rs; h2 and model forbid it). The raw
//! bpf() calls of the feature probe and the memory-mapped connection table
//! live with the kernel side they serve (ebpf/probe/sys.rs,
//! ebpf/conn_table.rs).

use std::io;
use std::os::fd::AsRawFd;

use tokio::io::unix::AsyncFd;

/// A socket's cookie (SO_COOKIE): the key the programs use for it.
pub fn socket_cookie(sock: &impl AsRawFd) -> io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: SO_COOKIE writes a u64 into the buffer we pass with its size.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cookie)
}

/// What TCP_INFO says of a socket's receive side.
#[derive(Debug, Clone, Copy)]
pub struct TcpReceived {
    /// Payload bytes received: tcpi_bytes_received, less the one sequence
    /// number the peer's FIN takes once it has arrived (a half-closed client
    /// looked like one byte waiting unparsed).
    pub bytes: u64,
    /// The connection was reset: no more bytes will reach its parser.
    pub reset: bool,
}

// The kernel's TCP states (include/net/tcp_states.h).
const TCP_FIN_WAIT2: u8 = 5;
const TCP_TIME_WAIT: u8 = 6;
const TCP_CLOSE: u8 = 7;
const TCP_CLOSE_WAIT: u8 = 8;
const TCP_LAST_ACK: u8 = 9;
const TCP_CLOSING: u8 = 11;

pub fn tcp_received(sock: &impl AsRawFd) -> io::Result<TcpReceived> {
    let info = tcp_info(sock)?;
    let fin_in = matches!(
        info.tcpi_state,
        TCP_CLOSE_WAIT | TCP_LAST_ACK | TCP_CLOSING | TCP_TIME_WAIT
    );
    Ok(TcpReceived {
        bytes: info.tcpi_bytes_received - u64::from(fin_in && info.tcpi_bytes_received > 0),
        reset: info.tcpi_state == TCP_CLOSE,
    })
}

/// Whether the peer has acknowledged our FIN, and so every byte before it
/// (FIN_WAIT2, TIME_WAIT; CLOSE after LAST_ACK or a reset).
pub fn tcp_fin_acked(sock: &impl AsRawFd) -> io::Result<bool> {
    let state = tcp_info(sock)?.tcpi_state;
    Ok(matches!(state, TCP_FIN_WAIT2 | TCP_TIME_WAIT | TCP_CLOSE))
}

fn tcp_info(sock: &impl AsRawFd) -> io::Result<libc::tcp_info> {
    // SAFETY: tcp_info is plain integers; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: TCP_INFO writes at most `len` bytes into the buffer we pass.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(info)
}

/// One non-blocking recv(2), whatever tokio believes about readiness:
/// `Ok(None)` when nothing is queued.
pub fn recv_dontwait(sock: &impl AsRawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: recv into a buffer we own, with its length.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::WouldBlock {
        Ok(None)
    } else {
        Err(e)
    }
}

/// IPV6_V6ONLY: an IPv6 socket that takes no IPv4 (mapped) peers. The
/// agent's IPv6 listener is one: its IPv4 clients come to the IPv4
/// listener, so that each accepted socket has one family (sockops.c).
pub fn set_ipv6_only(sock: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt(2) reads an int from the buffer we pass with its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IPV6,
            libc::IPV6_V6ONLY,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// shutdown(SHUT_WR): the peer reads an end of stream, we may still read.
pub fn shutdown_write(sock: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: shutdown(2) on a descriptor the caller owns.
    if unsafe { libc::shutdown(sock.as_raw_fd(), libc::SHUT_WR) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Registers an object that owns its descriptor (aya's ring buffer) with
/// tokio's reactor. It moves into the `AsyncFd`, so the descriptor stays
/// open, and the same, for as long as it is registered.
pub fn register_owned<T: AsRawFd>(owner: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `owner` owns its fd and moves into the AsyncFd: the fd stays
    // open and names the same file for the AsyncFd's whole life.
    unsafe { AsyncFd::register(owner) }.map_err(|e| e.into_parts().1)
}

/// Raises the soft limit of open files to the hard one. Returns the soft
/// limit before and after (equal when it already was the hard one).
pub fn raise_open_files() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur >= lim.rlim_max {
        return Ok((before, before));
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: setrlimit reads only the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((before, lim.rlim_cur))
}

/// The soft limit of open files, if it can be read.
pub fn open_files_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct we pass.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_cur)
}

/// Lifts RLIMIT_MEMLOCK, if it is limited: kernels before 5.11 charge bpf
/// maps to it. Best effort: without the right to raise it, a map that
/// does not fit fails later and says so.
pub fn unlimit_locked_memory() {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut cur) == 0
            && cur.rlim_cur != libc::RLIM_INFINITY
        {
            let want = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            let _ = libc::setrlimit(libc::RLIMIT_MEMLOCK, &want);
        }
    }
}

/// A terminal in raw mode (`rotor top`): keys arrive one by one, unechoed;
/// the previous mode comes back when this is dropped.
pub struct RawTerminal {
    fd: i32,
    before: libc::termios,
}

impl RawTerminal {
    pub fn enter(fd: &impl AsRawFd) -> io::Result<RawTerminal> {
        let fd = fd.as_raw_fd();
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        let mut before: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr writes the termios we pass.
        if unsafe { libc::tcgetattr(fd, &mut before) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = before;
        // SAFETY: cfmakeraw edits the termios we pass in place.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: tcsetattr reads the termios we pass.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RawTerminal { fd, before })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the termios read in enter.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.before) };
    }
}

/// The terminal's width in columns, if `fd` is one.
pub fn terminal_width(fd: &impl AsRawFd) -> Option<u16> {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it or fails.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes a winsize into the pointer we pass.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some(ws.ws_col)
}

pub mod scm;

/// Has the stream parser of a socket that just joined a socket hash parse
/// what was queued before the join, which it would otherwise leave until
/// more bytes arrive (ebpf/README.md, R1): setting SO_RCVLOWAT calls
/// `tcp_data_ready()`, and the socket's data-ready is its parser's by then
/// (tcp_set_rcvlowat, net/ipv4/tcp.c; 1 is the default, so nothing else
/// changes).
pub fn kick_parser(sock: &impl AsRawFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: the option takes a c_int, passed with its size.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// SO_RCVBUFFORCE (the agent has CAP_NET_ADMIN), else SO_RCVBUF, which
/// net.core.rmem_max caps.
pub fn set_receive_buffer(sock: &impl AsRawFd, bytes: usize) -> io::Result<()> {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let mut rc = -1;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: the option takes a c_int, passed with its size.
        rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            break;
        }
    }
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
