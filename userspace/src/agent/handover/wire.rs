//! The handover channel's framing: a 4-byte big-endian length, then that
//! many bytes of JSON (`Message`), with the message's descriptors attached
//! to the same sendmsg. The peer is the other agent on a root-only socket,
//! but what it sends is still checked: bounded length, the descriptor
//! count the message names, nothing else in the control data.

use std::io::{Read, Write};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use super::Message;
use crate::sys::scm;

/// The largest message: a connection's state is a few KiB; a connection
/// with frames still queued is drained, not handed over.
pub const MAX_MESSAGE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the other agent closed the channel")]
    Closed,
    #[error("handover channel: {0}")]
    Io(#[from] std::io::Error),
    #[error("a message of {0} bytes (at most {MAX_MESSAGE})")]
    TooLong(usize),
    #[error("a message that is not one: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{got} descriptors with a message that names {want}")]
    Descriptors { got: usize, want: usize },
}

/// Sends one message with its descriptors (as many as it names).
pub fn send(sock: &UnixStream, msg: &Message, fds: &[BorrowedFd<'_>]) -> Result<(), WireError> {
    if fds.len() != msg.descriptors() {
        return Err(WireError::Descriptors {
            got: fds.len(),
            want: msg.descriptors(),
        });
    }
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_MESSAGE {
        return Err(WireError::TooLong(body.len()));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    let sent = scm::send_with_fds(sock, &frame, fds)?;
    (&*sock).write_all(&frame[sent..])?;
    Ok(())
}

/// Receives one message and the descriptors that came with it.
pub fn recv(sock: &UnixStream) -> Result<(Message, Vec<OwnedFd>), WireError> {
    let mut len = [0u8; 4];
    // The descriptors come with the first byte of the frame: the length.
    let (n, fds) = scm::recv_with_fds(sock, &mut len)?;
    if n == 0 {
        return Err(WireError::Closed);
    }
    (&*sock).read_exact(&mut len[n..]).map_err(closed)?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(WireError::TooLong(len));
    }
    let mut body = vec![0u8; len];
    (&*sock).read_exact(&mut body).map_err(closed)?;
    let msg: Message = serde_json::from_slice(&body)?;
    if fds.len() != msg.descriptors() {
        return Err(WireError::Descriptors {
            got: fds.len(),
            want: msg.descriptors(),
        });
    }
    Ok((msg, fds))
}

fn closed(e: std::io::Error) -> WireError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        WireError::Closed
    } else {
        WireError::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_connection_message_carries_its_sockets() {
        let (a, b) = UnixStream::pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let msg = Message::Conn {
            id: 42,
            slots: vec![3],
            state: serde_json::json!({"last_stream": 9}),
        };
        send(&a, &msg, &[accepted.as_fd(), client.as_fd()]).unwrap();
        send(&a, &Message::Done, &[]).unwrap();
        let (got, fds) = recv(&b).unwrap();
        assert_eq!((got, fds.len()), (msg, 2));
        let (done, none) = recv(&b).unwrap();
        assert_eq!((done, none.len()), (Message::Done, 0));
        drop(a);
        assert!(matches!(recv(&b), Err(WireError::Closed)));
    }

    #[test]
    fn a_wrong_descriptor_count_is_refused_on_both_sides() {
        let (a, b) = UnixStream::pair().unwrap();
        let conn = Message::Conn {
            id: 1,
            slots: vec![0, 1],
            state: serde_json::Value::Null,
        };
        assert!(matches!(
            send(&a, &conn, &[a.as_fd()]),
            Err(WireError::Descriptors { got: 1, want: 3 })
        ));
        // a sender that does not check: the receiver does
        let body = serde_json::to_vec(&conn).unwrap();
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&body);
        scm::send_with_fds(&a, &frame, &[a.as_fd()]).unwrap();
        assert!(matches!(
            recv(&b),
            Err(WireError::Descriptors { got: 1, want: 3 })
        ));
    }

    #[test]
    fn oversized_and_garbled_messages_are_errors() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&(MAX_MESSAGE as u32 + 1).to_be_bytes())
            .unwrap();
        assert!(matches!(recv(&b), Err(WireError::TooLong(_))));
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&5u32.to_be_bytes()).unwrap();
        (&a).write_all(b"{nope").unwrap();
        assert!(matches!(recv(&b), Err(WireError::Json(_))));
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&[0, 0]).unwrap();
        drop(a);
        assert!(matches!(recv(&b), Err(WireError::Closed)));
    }
}
