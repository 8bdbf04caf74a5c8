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

/// A loopback connection whose accepted end is in a fresh socket hash
/// with a verdict that drops every message: while the hash holds it, what
/// the client writes never arrives.
struct Judged {
    client: std::net::TcpStream,
    accepted: std::net::TcpStream,
    /// The loader's descriptors: dropped as when it exits.
    hash: Option<OwnedFd>,
    progs: Vec<OwnedFd>,
}

fn judged() -> Judged {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let hash = map_create(T_MAP_SOCKHASH, 8, 4, 16, 0).expect("socket hash (root?)");
    let parser = prog_load(T_PROG_SK_SKB, 0, &parser_prog()).expect("parser");
    let verdict = prog_load(T_PROG_SK_SKB, 0, &trivial(SK_DROP)).expect("verdict");
    prog_attach(&parser, hash.as_raw_fd(), ATTACH_SK_SKB_STREAM_PARSER).unwrap();
    prog_attach(&verdict, hash.as_raw_fd(), ATTACH_SK_SKB_STREAM_VERDICT).unwrap();
    put_socket(
        &hash,
        crate::sys::socket_cookie(&accepted).unwrap(),
        &accepted,
    );
    Judged {
        client,
        accepted,
        hash: Some(hash),
        progs: vec![parser, verdict],
    }
}

/// Writes to `c` every 50 ms until its accepted end reads something.
/// The bound stretches with ROTOR_TIME_SCALE, as the test bed's do
/// (testbed/src/bounds.rs), for kernels run under emulation.
fn until_readable(c: &mut Judged, limit: Duration) -> bool {
    let scale = std::env::var("ROTOR_TIME_SCALE")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 1.0)
        .unwrap_or(1.0);
    let limit = limit.mul_f64(scale);
    let start = Instant::now();
    while start.elapsed() < limit {
        c.client.write_all(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        if readable(&c.accepted) > 0 {
            return true;
        }
    }
    false
}

#[test]
fn a_socket_hash_held_by_a_passed_descriptor_keeps_its_programs_and_sockets() {
    // Two generations: `kept` is handed over, `let_go` is not (the control:
    // a hash nobody holds lets its socket go, here and now).
    let mut kept = judged();
    let mut let_go = judged();

    // handed over, then every descriptor of the sender goes, as when it exits
    let (old, new) = UnixStream::pair().unwrap();
    let hash = kept.hash.as_ref().expect("the hash").as_fd();
    crate::sys::scm::send_with_fds(&old, b"g", &[hash]).unwrap();
    let mut one = [0u8; 1];
    let (_, mut fds) = crate::sys::scm::recv_with_fds(&new, &mut one).unwrap();
    let held = fds.pop().expect("the socket hash's descriptor");
    for c in [&mut kept, &mut let_go] {
        c.hash = None;
        c.progs.clear();
    }
    drop(old);

    assert!(
        until_readable(&mut let_go, Duration::from_secs(5)),
        "a socket hash nobody holds still judges its socket's bytes after 5 s"
    );
    kept.client.write_all(b"still parsed and judged").unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        readable(&kept.accepted),
        0,
        "the bytes reached the socket: its programs went with the sender's descriptors"
    );

    // The last descriptor goes: the socket leaves the hash and bytes take
    // the plain TCP path again (fail-open).
    drop(held);
    assert!(
        until_readable(&mut kept, Duration::from_secs(5)),
        "the socket hash outlived its last descriptor"
    );
}
