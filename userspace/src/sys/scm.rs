//! Descriptors passed between processes over a Unix socket (SCM_RIGHTS):
//! how an agent hands its sockets and kernel objects to the one replacing
//! it (agent/handover). The kernel object behind a descriptor lives as long
//! as any process holds one, so what is passed outlives the sender.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// The most descriptors one message carries. The kernel's own limit is
/// SCM_MAX_FD (253); a connection needs 1 + 16 upstreams + a few.
pub const MAX_FDS: usize = 64;

fn cmsg_space(fds: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic on its argument.
    unsafe { libc::CMSG_SPACE((fds * std::mem::size_of::<RawFd>()) as u32) as usize }
}

/// One sendmsg(2) of `bytes` with `fds` attached. Returns the bytes sent;
/// the descriptors go with the first of them.
pub fn send_with_fds(
    sock: &impl AsRawFd,
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} descriptors in one message (at most {MAX_FDS})",
                fds.len()
            ),
        ));
    }
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // u64 words: the control buffer must be aligned for cmsghdr.
    let mut control = vec![0u64; cmsg_space(MAX_FDS).div_ceil(8)];
    // SAFETY: msghdr is plain data; all-zero is valid (no name, no control).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = cmsg_space(fds.len()) as _;
        // SAFETY: the control buffer holds CMSG_SPACE(fds) bytes, aligned;
        // CMSG_FIRSTHDR of a msghdr with that buffer is its start, and
        // CMSG_DATA has room for fds.len() descriptors.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len =
                libc::CMSG_LEN((fds.len() * std::mem::size_of::<RawFd>()) as u32) as _;
            let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    // SAFETY: msg points at our iovec and control buffer, alive for the call.
    let n = unsafe { libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// One recvmsg(2) into `buf`: the bytes read and the descriptors that came
/// with them (close-on-exec). A message whose descriptors did not all fit
/// is an error (the kernel closed the rest: MSG_CTRUNC), as is a control
/// message of another kind.
pub fn recv_with_fds(sock: &impl AsRawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = vec![0u64; cmsg_space(MAX_FDS).div_ceil(8)];
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = cmsg_space(MAX_FDS) as _;
    // SAFETY: msg points at our buffers, alive for the call.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    let mut other = false;
    // SAFETY: the kernel filled msg_control up to msg_controllen; the CMSG
    // macros walk it within those bounds, and each SCM_RIGHTS entry holds
    // (cmsg_len - CMSG_LEN(0)) / sizeof(int) descriptors now ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            } else {
                other = true;
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "descriptors cut off (more than the receiver takes)",
        ));
    }
    if other {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a control message other than SCM_RIGHTS",
        ));
    }
    Ok((n as usize, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_socket_passed_keeps_its_connection_after_the_sender_closes_it() {
        let (a, b) = UnixStream::pair().unwrap();
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
        let (accepted, _) = server.accept().unwrap();
        let (r, w) = std::io::pipe().unwrap();
        let sent = send_with_fds(&a, b"conn", &[accepted.as_fd(), w.as_fd()]).unwrap();
        assert_eq!(sent, 4);
        // the sender's copies go, as when the old agent exits
        drop((accepted, w));

        let mut buf = [0u8; 16];
        let (n, mut fds) = recv_with_fds(&b, &mut buf).unwrap();
        assert_eq!((&buf[..n], fds.len()), (&b"conn"[..], 2));
        let mut pipe_w = std::fs::File::from(fds.pop().unwrap());
        let mut adopted = std::net::TcpStream::from(fds.pop().unwrap());
        client.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        adopted.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        adopted.write_all(b"pong").unwrap();
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong");
        pipe_w.write_all(b"x").unwrap();
        let mut r = r;
        let mut one = [0u8; 1];
        r.read_exact(&mut one).unwrap();
        assert_eq!(&one, b"x");
    }

    #[test]
    fn bytes_without_descriptors_and_too_many_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        send_with_fds(&a, b"plain", &[]).unwrap();
        let mut buf = [0u8; 8];
        let (n, fds) = recv_with_fds(&b, &mut buf).unwrap();
        assert_eq!((n, fds.len()), (5, 0));
        let (r, _w) = std::io::pipe().unwrap();
        let many: Vec<_> = (0..=MAX_FDS).map(|_| r.as_fd()).collect();
        let e = send_with_fds(&a, b"x", &many).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
