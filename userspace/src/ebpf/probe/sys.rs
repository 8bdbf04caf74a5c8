//! The raw bpf() calls the probe makes: UAPI constants, map and program
//! creation, attach and link, each failure with its verifier log.

use std::ffi::c_void;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

// Constants from <linux/bpf.h> (stable UAPI values).
pub(super) const BPF_MAP_CREATE: u32 = 0;
pub(super) const BPF_PROG_LOAD: u32 = 5;
pub(super) const BPF_PROG_ATTACH: u32 = 8;
pub(super) const BPF_PROG_DETACH: u32 = 9;
pub(super) const BPF_BTF_LOAD: u32 = 18;
pub(super) const BPF_LINK_CREATE: u32 = 28;

pub(super) const T_MAP_HASH: u32 = 1;
pub(super) const T_MAP_ARRAY: u32 = 2;
pub(super) const T_MAP_PERCPU_ARRAY: u32 = 6;
pub(super) const T_MAP_LRU_HASH: u32 = 9;
pub(super) const T_MAP_SK_STORAGE: u32 = 24;
pub(super) const BPF_F_NO_PREALLOC: u32 = 1;
pub(super) const T_MAP_SOCKHASH: u32 = 18;
pub(super) const T_MAP_RINGBUF: u32 = 27;
pub(super) const BPF_F_MMAPABLE: u32 = 1 << 10;

pub(super) const T_PROG_SOCK_OPS: u32 = 13;
pub(super) const T_PROG_SK_SKB: u32 = 14;
pub(super) const T_PROG_CGROUP_SOCK_ADDR: u32 = 18;

pub(super) const ATTACH_CGROUP_SOCK_OPS: u32 = 3;
pub(super) const ATTACH_SK_SKB_STREAM_PARSER: u32 = 4;
pub(super) const ATTACH_SK_SKB_STREAM_VERDICT: u32 = 5;
pub(super) const ATTACH_CGROUP_INET4_CONNECT: u32 = 10;
pub(super) const ATTACH_CGROUP_INET4_GETPEERNAME: u32 = 29;
pub(super) const ATTACH_CGROUP_INET6_CONNECT: u32 = 11;
pub(super) const ATTACH_CGROUP_INET6_GETPEERNAME: u32 = 30;

pub(super) const FN_MAP_LOOKUP_ELEM: i32 = 1;
pub(super) const FN_MAP_UPDATE_ELEM: i32 = 2;
pub(super) const FN_MAP_DELETE_ELEM: i32 = 3;
pub(super) const FN_GET_CURRENT_PID_TGID: i32 = 14;
pub(super) const FN_SKB_LOAD_BYTES: i32 = 26;
pub(super) const FN_GET_SOCKET_COOKIE: i32 = 46;
pub(super) const FN_SETSOCKOPT: i32 = 49;
pub(super) const FN_SOCK_HASH_UPDATE: i32 = 70;
pub(super) const FN_SK_REDIRECT_HASH: i32 = 72;
pub(super) const FN_SK_STORAGE_GET: i32 = 107;
pub(super) const FN_RINGBUF_RESERVE: i32 = 131;
pub(super) const FN_RINGBUF_SUBMIT: i32 = 132;
pub(super) const FN_LOOP: i32 = 181;

// __sk_buff, bpf_sock_addr field offsets.
pub(super) const SKB_LEN: i16 = 0;
pub(super) const SKB_CB0: i16 = 48;
pub(super) const SKB_REMOTE_IP4: i16 = 92;
pub(super) const SKB_LOCAL_PORT: i16 = 136;
pub(super) const SOCK_ADDR_USER_IP4: i16 = 4;
pub(super) const SOCK_ADDR_USER_PORT: i16 = 24;
pub(super) const SOCK_ADDR_SK: i16 = 64;
pub(super) const SOCK_OPS_SK: i16 = 184;

/// One eBPF instruction, as the kernel reads it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Insn {
    pub(super) code: u8,
    pub(super) regs: u8, // dst in the low nibble, src in the high one
    pub(super) off: i16,
    pub(super) imm: i32,
}

/// Why one bpf() call failed.
#[derive(Debug)]
pub(super) struct BpfFailure {
    pub(super) errno: io::Error,
    pub(super) log: String,
}

impl BpfFailure {
    pub(super) fn summary(&self) -> String {
        let tail = log_tail(&self.log, 3);
        if tail.is_empty() {
            format!("{}", self.errno)
        } else {
            format!("{} (verifier: {tail})", self.errno)
        }
    }

    pub(super) fn is_denied(&self) -> bool {
        matches!(
            self.errno.raw_os_error(),
            Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::ENOSYS)
        ) && self.log.is_empty()
    }
}

/// The last `n` non-empty lines of a verifier log, joined with " | ".
pub(super) fn log_tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("processed ") && !l.starts_with("verification time")
        })
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// True if a verifier log says the called helper does not exist for the program type.
pub(super) fn log_says_unknown_helper(log: &str) -> bool {
    log.contains("unknown func") || log.contains("invalid func")
}

pub(super) fn sys_bpf(cmd: u32, attr: &mut [u64; 16]) -> io::Result<i64> {
    // SAFETY: `attr` is a zeroed 128-byte union bpf_attr with the fields of `cmd`
    // set; the kernel reads at most that many bytes and checks the tail is zero.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr.as_mut_ptr() as *mut c_void,
            std::mem::size_of_val(attr) as libc::c_long,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Writes `v` at byte offset `off` of an attr buffer.
pub(super) fn put_u32(attr: &mut [u64; 16], off: usize, v: u32) {
    // SAFETY: off + 4 <= 128, checked by the callers' fixed layouts.
    assert!(off + 4 <= 128);
    unsafe { std::ptr::write_unaligned((attr.as_mut_ptr() as *mut u8).add(off) as *mut u32, v) }
}

pub(super) fn put_u64(attr: &mut [u64; 16], off: usize, v: u64) {
    assert!(off + 8 <= 128);
    // SAFETY: in bounds, as asserted.
    unsafe { std::ptr::write_unaligned((attr.as_mut_ptr() as *mut u8).add(off) as *mut u64, v) }
}

pub(super) fn owned(fd: i64) -> OwnedFd {
    // SAFETY: a file descriptor bpf() just returned to us and nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

pub(super) fn map_create(
    map_type: u32,
    key: u32,
    value: u32,
    entries: u32,
    flags: u32,
) -> Result<OwnedFd, BpfFailure> {
    let mut attr = [0u64; 16];
    put_u32(&mut attr, 0, map_type);
    put_u32(&mut attr, 4, key);
    put_u32(&mut attr, 8, value);
    put_u32(&mut attr, 12, entries);
    put_u32(&mut attr, 16, flags);
    sys_bpf(BPF_MAP_CREATE, &mut attr)
        .map(owned)
        .map_err(|errno| BpfFailure {
            errno,
            log: String::new(),
        })
}

/// Minimal BTF: [1] `int`, [2] `int[4]` (16 bytes), for a socket storage map.
pub(super) fn btf_blob() -> Vec<u8> {
    let mut types = Vec::new();
    for w in [1u32, 1 << 24, 4, (1 << 24) | 32] {
        types.extend(w.to_le_bytes()); // INT "int", size 4, signed, 32 bits
    }
    for w in [0u32, 3 << 24, 0, 1, 1, 4] {
        types.extend(w.to_le_bytes()); // ARRAY of 4 × [1], indexed by [1]
    }
    let strings = b"\0int\0";
    let mut b = Vec::new();
    b.extend(0xeb9fu16.to_le_bytes());
    b.extend([1u8, 0]);
    for w in [
        24u32,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ] {
        b.extend(w.to_le_bytes());
    }
    b.extend(types);
    b.extend(strings);
    b
}

pub(super) fn btf_load() -> Result<OwnedFd, BpfFailure> {
    let blob = btf_blob();
    let mut log = vec![0u8; 4096];
    let mut attr = [0u64; 16];
    put_u64(&mut attr, 0, blob.as_ptr() as u64);
    put_u64(&mut attr, 8, log.as_mut_ptr() as u64);
    put_u32(&mut attr, 16, blob.len() as u32);
    put_u32(&mut attr, 20, log.len() as u32);
    put_u32(&mut attr, 24, 1);
    sys_bpf(BPF_BTF_LOAD, &mut attr)
        .map(owned)
        .map_err(|errno| {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            BpfFailure {
                errno,
                log: String::from_utf8_lossy(&log[..end]).trim().to_string(),
            }
        })
}

/// A socket storage map (`int` key, 16-byte value, described by BTF).
pub(super) fn sk_storage_create() -> Result<OwnedFd, BpfFailure> {
    let btf = btf_load()?;
    let mut attr = [0u64; 16];
    put_u32(&mut attr, 0, T_MAP_SK_STORAGE);
    put_u32(&mut attr, 4, 4);
    put_u32(&mut attr, 8, 16);
    put_u32(&mut attr, 12, 0);
    put_u32(&mut attr, 16, BPF_F_NO_PREALLOC);
    put_u32(&mut attr, 48, btf.as_raw_fd() as u32);
    put_u32(&mut attr, 52, 1);
    put_u32(&mut attr, 56, 2);
    sys_bpf(BPF_MAP_CREATE, &mut attr)
        .map(owned)
        .map_err(|errno| BpfFailure {
            errno,
            log: String::new(),
        })
}

pub(super) const LICENSE: &[u8] = b"GPL\0";

pub(super) fn prog_load_once(
    prog_type: u32,
    attach: u32,
    insns: &[Insn],
    log: Option<&mut Vec<u8>>,
) -> io::Result<OwnedFd> {
    let mut attr = [0u64; 16];
    put_u32(&mut attr, 0, prog_type);
    put_u32(&mut attr, 4, insns.len() as u32);
    put_u64(&mut attr, 8, insns.as_ptr() as u64);
    put_u64(&mut attr, 16, LICENSE.as_ptr() as u64);
    if let Some(buf) = log {
        buf.iter_mut().for_each(|b| *b = 0);
        put_u32(&mut attr, 24, 1);
        put_u32(&mut attr, 28, buf.len() as u32);
        put_u64(&mut attr, 32, buf.as_mut_ptr() as u64);
    }
    put_u32(&mut attr, 68, attach); // expected_attach_type
    sys_bpf(BPF_PROG_LOAD, &mut attr).map(owned)
}

/// Loads a program; on failure, loads it again with the verifier log on.
pub(super) fn prog_load(
    prog_type: u32,
    attach: u32,
    insns: &[Insn],
) -> Result<OwnedFd, BpfFailure> {
    match prog_load_once(prog_type, attach, insns, None) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            let mut buf = vec![0u8; 64 * 1024];
            match prog_load_once(prog_type, attach, insns, Some(&mut buf)) {
                Ok(fd) => Ok(fd), // a transient failure (e.g. EAGAIN): it loads
                Err(errno) => {
                    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                    let log = String::from_utf8_lossy(&buf[..end]).trim().to_string();
                    let errno = if errno.raw_os_error() == first.raw_os_error() {
                        first
                    } else {
                        errno
                    };
                    Err(BpfFailure { errno, log })
                }
            }
        }
    }
}

pub(super) fn prog_attach(prog: &OwnedFd, target: RawFd, attach: u32) -> Result<(), BpfFailure> {
    let mut attr = [0u64; 16];
    put_u32(&mut attr, 0, target as u32);
    put_u32(&mut attr, 4, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 8, attach);
    sys_bpf(BPF_PROG_ATTACH, &mut attr)
        .map(|_| ())
        .map_err(|errno| BpfFailure {
            errno,
            log: String::new(),
        })
}

pub(super) fn prog_detach(prog: &OwnedFd, target: RawFd, attach: u32) {
    let mut attr = [0u64; 16];
    put_u32(&mut attr, 0, target as u32);
    put_u32(&mut attr, 4, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 8, attach);
    let _ = sys_bpf(BPF_PROG_DETACH, &mut attr);
}

pub(super) fn link_create(
    prog: &OwnedFd,
    target: RawFd,
    attach: u32,
) -> Result<OwnedFd, BpfFailure> {
    let mut attr = [0u64; 16];
    put_u32(&mut attr, 0, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 4, target as u32);
    put_u32(&mut attr, 8, attach);
    sys_bpf(BPF_LINK_CREATE, &mut attr)
        .map(owned)
        .map_err(|errno| BpfFailure {
            errno,
            log: String::new(),
        })
}

/// A memory-mapped array map can be mapped (BPF_F_MMAPABLE).
pub(super) fn check_mmapable() -> Result<(), BpfFailure> {
    let map = map_create(T_MAP_ARRAY, 4, 64, 64, BPF_F_MMAPABLE)?;
    let len = 64 * 64;
    // SAFETY: mapping `len` bytes of an mmapable array of 64 × 64-byte values.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            map.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(BpfFailure {
            errno: io::Error::last_os_error(),
            log: "mmap of the map failed".into(),
        });
    }
    // SAFETY: unmapping exactly what we mapped.
    unsafe { libc::munmap(ptr, len) };
    Ok(())
}
