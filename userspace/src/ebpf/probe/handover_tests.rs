//! The kernel fact a live handover of connections rests on (README,
//! "Upgrades and stopping"): a socket hash is held by any descriptor of it,
//! in whichever process, and while one is held its sk_skb programs stay
//! attached and its sockets stay in it. So an agent that passes its socket
//! hashes' descriptors (SCM_RIGHTS) to its successor can exit without a
//! single psock being dropped (dropping one frees the stream parser's
//! partly assembled frame and the queued redirects: net/core/skmsg.c,
//! sk_psock_destroy), and the generation goes, fail-open, when the last
//! descriptor does. Needs root, as the probe tests do.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::programs::{parser_prog, trivial};
use super::sys::*;

const BPF_MAP_UPDATE_ELEM: u32 = 2;
const SK_DROP: i32 = 0;

fn put_socket(hash: &OwnedFd, cookie: u64, sock: &impl AsRawFd) {
    let key = cookie.to_ne_bytes();
    let value = (sock.as_raw_fd() as u32).to_ne_bytes();
    let mut attr = [0u64; 16];
    put_u32(&mut attr, 0, hash.as_raw_fd() as u32);
    put_u64(&mut attr, 8, key.as_ptr() as u64);
    put_u64(&mut attr, 16, value.as_ptr() as u64);
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut attr).expect("the socket into the socket hash");
}

fn readable(sock: &std::net::TcpStream) -> usize {
    let mut buf = [0u8; 64];
    crate::sys::recv_dontwait(sock, &mut buf)
        .expect("recv")
        .unwrap_or(0)
}

#[test]
fn a_socket_hash_held_by_a_passed_descriptor_keeps_its_programs_and_sockets() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();

    // The old agent's generation: a socket hash whose verdict drops every
    // message, so that its being attached shows as bytes that never arrive.
    let hash = map_create(T_MAP_SOCKHASH, 8, 4, 16, 0).expect("socket hash (root?)");
    let parser = prog_load(T_PROG_SK_SKB, 0, &parser_prog()).expect("parser");
    let verdict = prog_load(T_PROG_SK_SKB, 0, &trivial(SK_DROP)).expect("verdict");
    prog_attach(&parser, hash.as_raw_fd(), ATTACH_SK_SKB_STREAM_PARSER).unwrap();
    prog_attach(&verdict, hash.as_raw_fd(), ATTACH_SK_SKB_STREAM_VERDICT).unwrap();
    put_socket(&hash, crate::sys::socket_cookie(&accepted).unwrap(), &accepted);

    // handed over, then every descriptor of the sender goes, as when it exits
    let (old, new) = UnixStream::pair().unwrap();
    crate::sys::scm::send_with_fds(&old, b"g", &[hash.as_fd()]).unwrap();
    let mut one = [0u8; 1];
    let (_, mut fds) = crate::sys::scm::recv_with_fds(&new, &mut one).unwrap();
    let held = fds.pop().expect("the socket hash's descriptor");
    drop((hash, parser, verdict, old));

    client.write_all(b"still parsed and judged").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        readable(&accepted),
        0,
        "the bytes reached the socket: its programs went with the sender's descriptors"
    );

    // The last descriptor goes: the map is freed (deferred), the socket
    // leaves it, and bytes take the plain TCP path again (fail-open).
    drop(held);
    let start = Instant::now();
    let mut got = 0;
    while got == 0 && start.elapsed() < Duration::from_secs(5) {
        client.write_all(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        got = readable(&accepted);
    }
    assert!(got > 0, "the socket hash outlived its last descriptor");
}
