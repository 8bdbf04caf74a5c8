//! `cargo xtask rule client-sk-msg`: checks, on the running kernel, the rule
//! that keeps the client's socket out of every socket map (ebpf/README.md,
//! R6): a TCP socket that joins one gets `tcp_bpf_recvmsg`, which answers a
//! *blocking* `recv()` woken without data with EAGAIN, whatever program is
//! attached, a pass-all sk_msg program included. A writer thread's send
//! completions share the socket's wait queue with the reader, so a reader
//! beside a writer is woken without data all the time.
//!
//! The check runs the same reader and writer on a loopback connection twice,
//! with the client's socket in no map and then in a socket hash that has only
//! an sk_msg program returning SK_PASS (two instructions, loaded with the
//! `bpf` system call here: no cgroup, no link, nothing outside this process;
//! the map and program go with their descriptors). It passes (the rule
//! holds) when only the second run sees EAGAIN.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_MAP_TYPE_SOCKHASH: u32 = 18;
const BPF_PROG_TYPE_SK_MSG: u32 = 16;
const BPF_SK_MSG_VERDICT: u32 = 7;

/// `union bpf_attr`, zeroed beyond what a command uses (the kernel checks).
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Self {
        Attr([0; 128])
    }
    fn u32(mut self, at: usize, v: u32) -> Self {
        self.0[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(mut self, at: usize, v: u64) -> Self {
        self.0[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

fn bpf(cmd: libc::c_long, attr: &Attr, what: &str) -> Result<libc::c_long> {
    // SAFETY: `attr` is a 128-byte, 8-aligned bpf_attr whose pointers (set
    // by the callers) point at buffers alive for the duration of the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_ptr(), attr.0.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| format!("bpf: {what}"));
    }
    Ok(r)
}

fn owned(fd: libc::c_long) -> Result<OwnedFd> {
    let fd = i32::try_from(fd).context("bpf returned a descriptor out of range")?;
    // SAFETY: the kernel just returned this descriptor, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A socket hash with a pass-all sk_msg program attached.
struct PassAllMap {
    map: OwnedFd,
    _prog: OwnedFd,
}

impl PassAllMap {
    fn new() -> Result<Self> {
        let map = owned(bpf(
            BPF_MAP_CREATE,
            &Attr::new()
                .u32(0, BPF_MAP_TYPE_SOCKHASH)
                .u32(4, 4)
                .u32(8, 4)
                .u32(12, 4),
            "creating a socket hash",
        )?)?;
        // r0 = 1 (SK_PASS); exit
        let insns: [u64; 2] = [
            u64::from_le_bytes([0xb7, 0, 0, 0, 1, 0, 0, 0]),
            u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
        ];
        let license = c"GPL";
        let prog = owned(bpf(
            BPF_PROG_LOAD,
            &Attr::new()
                .u32(0, BPF_PROG_TYPE_SK_MSG)
                .u32(4, insns.len() as u32)
                .u64(8, insns.as_ptr() as u64)
                .u64(16, license.as_ptr() as u64),
            "loading a pass-all sk_msg program",
        )?)?;
        bpf(
            BPF_PROG_ATTACH,
            &Attr::new()
                .u32(0, map.as_raw_fd() as u32)
                .u32(4, prog.as_raw_fd() as u32)
                .u32(8, BPF_SK_MSG_VERDICT),
            "attaching the sk_msg program to the socket hash",
        )?;
        Ok(PassAllMap { map, _prog: prog })
    }

    fn join(&self, sock: &TcpStream) -> Result<()> {
        let key: u32 = 0;
        let value: u32 = sock.as_raw_fd() as u32;
        bpf(
            BPF_MAP_UPDATE_ELEM,
            &Attr::new()
                .u32(0, self.map.as_raw_fd() as u32)
                .u64(8, &key as *const u32 as u64)
                .u64(16, &value as *const u32 as u64),
            "adding the client's socket to the socket hash",
        )?;
        Ok(())
    }
}

/// What a blocking reader saw while another thread wrote on its socket.
struct Seen {
    eagain: u64,
    read: u64,
    writes: u64,
}

/// One run: a reader thread blocked in `recv()` on the client's socket,
/// the main thread writing 4 KiB at a time, the peer reading everything and
/// answering one byte every 50 reads, for `time`.
fn reader_beside_writer(in_map: bool, time: Duration) -> Result<Seen> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding on loopback")?;
    let mut client = TcpStream::connect(listener.local_addr()?).context("connecting")?;
    let (mut peer, _) = listener.accept().context("accepting")?;
    let map = if in_map {
        let m = PassAllMap::new()?;
        m.join(&client)?;
        Some(m)
    } else {
        None
    };
    let stop = Arc::new(AtomicBool::new(false));
    let eagain = Arc::new(AtomicU64::new(0));
    let read = Arc::new(AtomicU64::new(0));
    let reader = {
        let mut sock = client.try_clone()?;
        let (stop, eagain, read) = (stop.clone(), eagain.clone(), read.clone());
        thread::spawn(move || {
            let mut buf = [0u8; 65536];
            while !stop.load(Ordering::Relaxed) {
                match sock.read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => {
                        read.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        eagain.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => return,
                }
            }
        })
    };
    let sink = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut buf = [0u8; 65536];
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match peer.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        reads += 1;
                        if reads.is_multiple_of(50) && peer.write_all(b"x").is_err() {
                            break;
                        }
                    }
                }
            }
            // wakes the reader for good
            let _ = peer.write_all(b"z");
            let _ = peer.shutdown(Shutdown::Both);
        })
    };
    let end = Instant::now() + time;
    let mut writes = 0u64;
    let chunk = [b'y'; 4096];
    while Instant::now() < end {
        client
            .write_all(&chunk)
            .context("writing on the client's socket")?;
        writes += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = client.shutdown(Shutdown::Write);
    let _ = sink.join();
    let _ = reader.join();
    drop(map);
    Ok(Seen {
        eagain: eagain.load(Ordering::Relaxed),
        read: read.load(Ordering::Relaxed),
        writes,
    })
}

pub fn client_sk_msg(seconds: f64) -> Result<bool> {
    let time = Duration::from_secs_f64(seconds);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let plain = reader_beside_writer(false, time)?;
    let mapped = reader_beside_writer(true, time)?;
    for (name, s) in [
        ("in no socket map", &plain),
        ("in a socket hash with a pass-all sk_msg program", &mapped),
    ] {
        println!(
            "xtask: client socket {name}: blocking recv() got EAGAIN {} times ({} bytes read, {} writes of 4 KiB)",
            s.eagain, s.read, s.writes
        );
    }
    if plain.eagain > 0 {
        bail!("EAGAIN without any map: this check cannot tell anything on {release}");
    }
    let holds = mapped.eagain > 0;
    println!(
        "xtask: on {release} the rule {}: {}",
        if holds { "holds" } else { "does not hold" },
        if holds {
            "a client socket in a socket map breaks blocking readers, so C joins none"
        } else {
            "no EAGAIN seen with the sk_msg program (run longer, or the kernel changed)"
        }
    );
    Ok(holds)
}
