//! Kernel feature probe, run before the datapath loads.
//!
//! Every map type, program type, helper, instruction class and attach type
//! the programs in `ebpf/` use is checked by creating a small map or loading
//! a tiny program that uses just that feature (raw `bpf()` calls, no ELF),
//! so a kernel that lacks one is refused with its name, the kernel version
//! and what to do, instead of a verifier log from the middle of the real
//! object. Nothing is left behind: every fd is closed before returning, and
//! the optional cgroup check attaches a pass-through program for an instant.
//!
//! Helpers are checked the way bpftool does: a program calling the helper
//! with unset arguments is rejected either for its arguments (the helper
//! exists for that program type) or with "unknown func" / "invalid func"
//! (it does not). Combinations the real programs rely on (atomics on map
//! values, ring buffer reserve/submit, context fields, redirects) are then
//! loaded as valid programs.

use std::ffi::c_void;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// The oldest kernel line rotor is tested on (README, "Kernels").
pub const KERNEL_FLOOR: &str = "6.1";

/// One thing rotor needs from the kernel.
#[derive(Debug, PartialEq, Eq)]
pub struct Feature {
    /// What it is, as the kernel documentation names it.
    pub name: &'static str,
    /// First mainline release that has it, where that is one release.
    pub since: Option<&'static str>,
    /// What rotor uses it for.
    pub used_for: &'static str,
}

/// A feature the running kernel lacks, with the kernel's answer.
#[derive(Debug)]
pub struct Missing {
    pub feature: &'static Feature,
    /// errno and the last lines of the verifier log, if any.
    pub detail: String,
    /// The whole verifier log (empty if the kernel gave none).
    pub log: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (used for {}", self.feature.name, self.feature.used_for)?;
        if let Some(since) = self.feature.since {
            write!(f, "; Linux {since}+")?;
        }
        write!(f, "): {}", self.detail)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "kernel {kernel} lacks {} rotor needs: {}. Run rotor on nodes with Linux {KERNEL_FLOOR} or newer \
         (tested: 6.1, 6.12 and newer; see README, Kernels); without it, Services keep their per-connection balancing",
        if .missing.len() == 1 { "a feature".to_string() } else { format!("{} features", .missing.len()) },
        .missing.iter().map(|m| m.to_string()).collect::<Vec<_>>().join("; ")
    )]
    Missing { kernel: String, missing: Vec<Missing> },
    #[error(
        "cannot use bpf() on kernel {kernel}: {source}; run rotor-agent as root, or with CAP_BPF, CAP_NET_ADMIN \
         and CAP_PERFMON (Linux 5.8+) or CAP_SYS_ADMIN, and without a seccomp profile that blocks bpf()"
    )]
    Denied { kernel: String, source: io::Error },
}

impl ProbeError {
    /// The features the kernel lacks (empty for `Denied`).
    pub fn missing(&self) -> &[Missing] {
        match self {
            ProbeError::Missing { missing, .. } => missing,
            ProbeError::Denied { .. } => &[],
        }
    }
}

/// What a successful probe checked.
#[derive(Debug)]
pub struct KernelSupport {
    pub kernel: String,
    pub checked: Vec<&'static Feature>,
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

macro_rules! features {
    ($($id:ident = $name:expr, $since:expr, $for:expr;)*) => {
        $(pub static $id: Feature = Feature { name: $name, since: $since, used_for: $for };)*
        /// Every feature [`probe_kernel`] checks, in the order it checks them.
        pub static ALL: &[&Feature] = &[$(&$id),*];
    };
}

features! {
    MAP_HASH = "hash maps (BPF_MAP_TYPE_HASH)", Some("3.19"), "per-socket and per-stream state";
    MAP_ARRAY = "array maps (BPF_MAP_TYPE_ARRAY)", Some("3.19"), "the agent's configuration";
    MAP_LRU_HASH = "LRU hash maps (BPF_MAP_TYPE_LRU_HASH)", Some("4.10"), "destinations of connects that may never complete";
    MAP_PERCPU_ARRAY = "per-CPU array maps (BPF_MAP_TYPE_PERCPU_ARRAY)", Some("4.6"), "kernel counters";
    MAP_SOCKHASH = "socket hash maps (BPF_MAP_TYPE_SOCKHASH)", Some("4.18"), "the sockets frames are redirected between";
    MAP_RINGBUF = "ring buffer maps (BPF_MAP_TYPE_RINGBUF)", Some("5.8"), "flow-control events to the agent";
    MAP_SK_STORAGE = "socket-local storage maps (BPF_MAP_TYPE_SK_STORAGE, with BTF)", Some("5.2"), "a balanced socket's Service address, for getpeername";
    MAP_MMAPABLE = "memory-mapped array maps (BPF_F_MMAPABLE)", Some("5.5"), "the connection table the agent writes in place";
    PROG_CONNECT4 = "cgroup/connect4 programs (BPF_PROG_TYPE_CGROUP_SOCK_ADDR, BPF_CGROUP_INET4_CONNECT)", Some("4.17"), "sending a Service's connections to the agent";
    PROG_GETPEERNAME4 = "cgroup/getpeername4 programs (BPF_CGROUP_INET4_GETPEERNAME)", Some("5.8"), "showing a client the Service address as its peer";
    PROG_CONNECT6 = "cgroup/connect6 programs (BPF_CGROUP_INET6_CONNECT)", Some("4.17"), "balancing dual-stack clients that dial ::ffff:VIP";
    PROG_GETPEERNAME6 = "cgroup/getpeername6 programs (BPF_CGROUP_INET6_GETPEERNAME)", Some("5.8"), "showing a dual-stack client the Service address as its peer";
    PROG_SOCKOPS = "sockops programs (BPF_PROG_TYPE_SOCK_OPS)", Some("4.13"), "adding sockets to socket hashes at ESTABLISHED";
    PROG_SK_SKB = "sk_skb programs (BPF_PROG_TYPE_SK_SKB)", Some("4.14"), "the HTTP/2 frame parser and verdicts";
    H_CONNECT4_LOOKUP = "bpf_map_lookup_elem in cgroup/connect4", None, "looking up Services";
    H_CONNECT4_UPDATE = "bpf_map_update_elem in cgroup/connect4", None, "recording a connection's original destination";
    H_CONNECT4_PID = "bpf_get_current_pid_tgid in cgroup/connect4", None, "leaving the agent's own connections alone";
    H_CONNECT4_COOKIE = "bpf_get_socket_cookie in cgroup/connect4", None, "keying a connection's original destination";
    H_CONNECT4_SK_STORAGE = "bpf_sk_storage_get in cgroup/connect4", None, "keeping the Service address of a reconnecting socket";
    H_GETPEERNAME4_SK_STORAGE = "bpf_sk_storage_get in cgroup/getpeername4", None, "reading a socket's Service address";
    H_SOCKOPS_SK_STORAGE = "bpf_sk_storage_get in sockops", None, "storing a socket's Service address";
    H_SOCKOPS_LOOKUP = "bpf_map_lookup_elem in sockops", None, "finding a connection's original destination";
    H_SOCKOPS_UPDATE = "bpf_map_update_elem in sockops", None, "publishing a client's original destination";
    H_SOCKOPS_DELETE = "bpf_map_delete_elem in sockops", None, "dropping consumed destinations";
    H_SOCKOPS_COOKIE = "bpf_get_socket_cookie in sockops", None, "naming sockets";
    H_SOCKOPS_SETSOCKOPT = "bpf_setsockopt in sockops", None, "sizing receive buffers for redirected frames";
    H_SOCKOPS_HASH_UPDATE = "bpf_sock_hash_update in sockops", None, "adding sockets to socket hashes";
    H_SKB_LOOKUP = "bpf_map_lookup_elem in sk_skb", None, "connection and stream state";
    H_SKB_UPDATE = "bpf_map_update_elem in sk_skb", None, "opening streams";
    H_SKB_DELETE = "bpf_map_delete_elem in sk_skb", None, "closing streams";
    H_SKB_COOKIE = "bpf_get_socket_cookie in sk_skb", None, "per-socket parser state";
    H_SKB_LOAD_BYTES = "bpf_skb_load_bytes in sk_skb", None, "reading HTTP/2 frame headers";
    H_SKB_REDIRECT_HASH = "bpf_sk_redirect_hash in sk_skb", None, "moving frames between sockets";
    H_SKB_RINGBUF_RESERVE = "bpf_ringbuf_reserve in sk_skb", Some("5.8"), "flow-control events";
    H_SKB_RINGBUF_SUBMIT = "bpf_ringbuf_submit in sk_skb", Some("5.8"), "flow-control events";
    INSN_JMP32 = "32-bit jumps (BPF_JMP32, clang -mcpu=v3)", Some("5.1"), "the compiled programs (-mcpu=v3)";
    INSN_ATOMIC_ADD_W = "32-bit atomic add (BPF_ATOMIC BPF_ADD, BPF_W)", None, "per-upstream stream counts";
    INSN_ATOMIC_FETCH_ADD_W = "32-bit atomic fetch-and-add (BPF_ATOMIC BPF_ADD|BPF_FETCH, BPF_W)", Some("5.12"), "per-upstream stream counts";
    INSN_ATOMIC_OR_W = "32-bit atomic or (BPF_ATOMIC BPF_OR, BPF_W)", Some("5.12"), "connection flags";
    INSN_ATOMIC_AND_W = "32-bit atomic and (BPF_ATOMIC BPF_AND, BPF_W)", Some("5.12"), "releasing a stream from the agent";
    INSN_ATOMIC_FETCH_OR_W = "32-bit atomic fetch-and-or (BPF_ATOMIC BPF_OR|BPF_FETCH, BPF_W)", Some("5.12"), "ending a stream once from either side";
    INSN_ATOMIC_FETCH_ADD_DW = "64-bit atomic fetch-and-add (BPF_ATOMIC BPF_ADD|BPF_FETCH, BPF_DW)", Some("5.12"), "flow-control byte counters";
    CTX_CONNECT4 = "cgroup/connect4 rewriting user_ip4/user_port with socket cookie and map update", None, "sending a Service's connections to the agent";
    CTX_GETPEERNAME4 = "cgroup/getpeername4 reading ctx->sk into bpf_sk_storage_get", None, "showing a client the Service address as its peer";
    CTX_SOCKOPS = "sockops with bpf_setsockopt(SO_RCVBUF), bpf_sk_storage_get(skops->sk) and bpf_sock_hash_update", None, "adding sockets to socket hashes at ESTABLISHED";
    CTX_PARSER = "sk_skb stream parser reading cb[0], addresses, ports and bytes", None, "cutting the byte stream into frames";
    CTX_VERDICT = "sk_skb verdict with bpf_sk_redirect_hash(BPF_F_INGRESS) keyed by socket cookie", None, "moving frames between sockets";
    CTX_RINGBUF = "bpf_ringbuf_reserve/bpf_ringbuf_submit from sk_skb", Some("5.8"), "flow-control events";
    ATTACH_PARSER = "attaching a stream parser to a socket hash (BPF_SK_SKB_STREAM_PARSER)", Some("4.18"), "the frame parser";
    ATTACH_VERDICT = "attaching a stream verdict to a socket hash (BPF_SK_SKB_STREAM_VERDICT)", Some("4.18"), "the verdicts";
    LINK_CONNECT4 = "bpf links for cgroup/connect4 (BPF_LINK_CREATE)", Some("5.7"), "detaching when the agent exits (fail-open)";
    LINK_GETPEERNAME4 = "bpf links for cgroup/getpeername4 (BPF_LINK_CREATE)", Some("5.8"), "detaching when the agent exits (fail-open)";
    LINK_SOCKOPS = "bpf links for sockops (BPF_LINK_CREATE)", Some("5.7"), "detaching when the agent exits (fail-open)";
}

// Constants from <linux/bpf.h> (stable UAPI values).
const BPF_MAP_CREATE: u32 = 0;
const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_ATTACH: u32 = 8;
const BPF_PROG_DETACH: u32 = 9;
const BPF_BTF_LOAD: u32 = 18;
const BPF_LINK_CREATE: u32 = 28;

const T_MAP_HASH: u32 = 1;
const T_MAP_ARRAY: u32 = 2;
const T_MAP_PERCPU_ARRAY: u32 = 6;
const T_MAP_LRU_HASH: u32 = 9;
const T_MAP_SK_STORAGE: u32 = 24;
const BPF_F_NO_PREALLOC: u32 = 1;
const T_MAP_SOCKHASH: u32 = 18;
const T_MAP_RINGBUF: u32 = 27;
const BPF_F_MMAPABLE: u32 = 1 << 10;

const T_PROG_SOCK_OPS: u32 = 13;
const T_PROG_SK_SKB: u32 = 14;
const T_PROG_CGROUP_SOCK_ADDR: u32 = 18;

const ATTACH_CGROUP_SOCK_OPS: u32 = 3;
const ATTACH_SK_SKB_STREAM_PARSER: u32 = 4;
const ATTACH_SK_SKB_STREAM_VERDICT: u32 = 5;
const ATTACH_CGROUP_INET4_CONNECT: u32 = 10;
const ATTACH_CGROUP_INET4_GETPEERNAME: u32 = 29;
const ATTACH_CGROUP_INET6_CONNECT: u32 = 11;
const ATTACH_CGROUP_INET6_GETPEERNAME: u32 = 30;

const FN_MAP_LOOKUP_ELEM: i32 = 1;
const FN_MAP_UPDATE_ELEM: i32 = 2;
const FN_MAP_DELETE_ELEM: i32 = 3;
const FN_GET_CURRENT_PID_TGID: i32 = 14;
const FN_SKB_LOAD_BYTES: i32 = 26;
const FN_GET_SOCKET_COOKIE: i32 = 46;
const FN_SETSOCKOPT: i32 = 49;
const FN_SOCK_HASH_UPDATE: i32 = 70;
const FN_SK_REDIRECT_HASH: i32 = 72;
const FN_SK_STORAGE_GET: i32 = 107;
const FN_RINGBUF_RESERVE: i32 = 131;
const FN_RINGBUF_SUBMIT: i32 = 132;

// __sk_buff, bpf_sock_addr field offsets.
const SKB_LEN: i16 = 0;
const SKB_CB0: i16 = 48;
const SKB_REMOTE_IP4: i16 = 92;
const SKB_LOCAL_PORT: i16 = 136;
const SOCK_ADDR_USER_IP4: i16 = 4;
const SOCK_ADDR_USER_PORT: i16 = 24;
const SOCK_ADDR_SK: i16 = 64;
const SOCK_OPS_SK: i16 = 184;

/// One eBPF instruction, as the kernel reads it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    regs: u8, // dst in the low nibble, src in the high one
    off: i16,
    imm: i32,
}

/// A minimal assembler for the probe programs.
mod asm {
    use super::Insn;

    pub const R0: u8 = 0;
    pub const R1: u8 = 1;
    pub const R2: u8 = 2;
    pub const R3: u8 = 3;
    pub const R4: u8 = 4;
    pub const R5: u8 = 5;
    pub const R6: u8 = 6;
    pub const R10: u8 = 10;

    pub const ATOMIC_ADD: i32 = 0x00;
    pub const ATOMIC_OR: i32 = 0x40;
    pub const ATOMIC_AND: i32 = 0x50;
    pub const FETCH: i32 = 0x01;

    pub fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn { code, regs: (src << 4) | (dst & 0xf), off, imm }
    }
    pub fn mov64_imm(dst: u8, imm: i32) -> Insn {
        insn(0xb7, dst, 0, 0, imm) // BPF_ALU64 | BPF_MOV | BPF_K
    }
    pub fn mov64_reg(dst: u8, src: u8) -> Insn {
        insn(0xbf, dst, src, 0, 0) // BPF_ALU64 | BPF_MOV | BPF_X
    }
    pub fn add64_imm(dst: u8, imm: i32) -> Insn {
        insn(0x07, dst, 0, 0, imm) // BPF_ALU64 | BPF_ADD | BPF_K
    }
    pub fn call(helper: i32) -> Insn {
        insn(0x85, 0, 0, 0, helper) // BPF_JMP | BPF_CALL
    }
    pub fn exit() -> Insn {
        insn(0x95, 0, 0, 0, 0) // BPF_JMP | BPF_EXIT
    }
    /// `dst = map` (two instruction slots, BPF_PSEUDO_MAP_FD).
    pub fn ld_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
        [insn(0x18, dst, 1, 0, fd), insn(0, 0, 0, 0, 0)] // BPF_LD | BPF_IMM | BPF_DW
    }
    /// `*(u32 *)(dst + off) = imm`
    pub fn st_w(dst: u8, off: i16, imm: i32) -> Insn {
        insn(0x62, dst, 0, off, imm) // BPF_ST | BPF_MEM | BPF_W
    }
    /// `*(u64 *)(dst + off) = imm`
    pub fn st_dw(dst: u8, off: i16, imm: i32) -> Insn {
        insn(0x7a, dst, 0, off, imm) // BPF_ST | BPF_MEM | BPF_DW
    }
    /// `*(u32 *)(dst + off) = src`
    pub fn stx_w(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x63, dst, src, off, 0) // BPF_STX | BPF_MEM | BPF_W
    }
    /// `*(u64 *)(dst + off) = src`
    pub fn stx_dw(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x7b, dst, src, off, 0) // BPF_STX | BPF_MEM | BPF_DW
    }
    /// `dst = *(u64 *)(src + off)`
    pub fn ldx_dw(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x79, dst, src, off, 0) // BPF_LDX | BPF_MEM | BPF_DW
    }
    /// `dst = *(u32 *)(src + off)`
    pub fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x61, dst, src, off, 0) // BPF_LDX | BPF_MEM | BPF_W
    }
    /// `if dst == imm goto pc + off` (64-bit compare)
    pub fn jeq_imm(dst: u8, imm: i32, off: i16) -> Insn {
        insn(0x15, dst, 0, off, imm) // BPF_JMP | BPF_JEQ | BPF_K
    }
    /// `if (u32)dst == imm goto pc + off`
    pub fn jeq32_imm(dst: u8, imm: i32, off: i16) -> Insn {
        insn(0x16, dst, 0, off, imm) // BPF_JMP32 | BPF_JEQ | BPF_K
    }
    /// 32-bit atomic `op` of `src` into `*(u32 *)(dst + off)`.
    pub fn atomic_w(dst: u8, src: u8, off: i16, op: i32) -> Insn {
        insn(0xc3, dst, src, off, op) // BPF_STX | BPF_ATOMIC | BPF_W
    }
    /// 64-bit atomic `op` of `src` into `*(u64 *)(dst + off)`.
    pub fn atomic_dw(dst: u8, src: u8, off: i16, op: i32) -> Insn {
        insn(0xdb, dst, src, off, op) // BPF_STX | BPF_ATOMIC | BPF_DW
    }
}

/// Why one bpf() call failed.
#[derive(Debug)]
struct BpfFailure {
    errno: io::Error,
    log: String,
}

impl BpfFailure {
    fn summary(&self) -> String {
        let tail = log_tail(&self.log, 3);
        if tail.is_empty() {
            format!("{}", self.errno)
        } else {
            format!("{} (verifier: {tail})", self.errno)
        }
    }

    fn is_denied(&self) -> bool {
        matches!(self.errno.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::ENOSYS))
            && self.log.is_empty()
    }
}

/// The last `n` non-empty lines of a verifier log, joined with " | ".
fn log_tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("processed ") && !l.starts_with("verification time"))
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// True if a verifier log says the called helper does not exist for the program type.
fn log_says_unknown_helper(log: &str) -> bool {
    log.contains("unknown func") || log.contains("invalid func")
}

fn sys_bpf(cmd: u32, attr: &mut [u64; 16]) -> io::Result<i64> {
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
fn put_u32(attr: &mut [u64; 16], off: usize, v: u32) {
    // SAFETY: off + 4 <= 128, checked by the callers' fixed layouts.
    assert!(off + 4 <= 128);
    unsafe { std::ptr::write_unaligned((attr.as_mut_ptr() as *mut u8).add(off) as *mut u32, v) }
}

fn put_u64(attr: &mut [u64; 16], off: usize, v: u64) {
    assert!(off + 8 <= 128);
    // SAFETY: in bounds, as asserted.
    unsafe { std::ptr::write_unaligned((attr.as_mut_ptr() as *mut u8).add(off) as *mut u64, v) }
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: a file descriptor bpf() just returned to us and nobody else owns.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

fn map_create(map_type: u32, key: u32, value: u32, entries: u32, flags: u32) -> Result<OwnedFd, BpfFailure> {
    let mut attr = [0u64; 16];
    put_u32(&mut attr, 0, map_type);
    put_u32(&mut attr, 4, key);
    put_u32(&mut attr, 8, value);
    put_u32(&mut attr, 12, entries);
    put_u32(&mut attr, 16, flags);
    sys_bpf(BPF_MAP_CREATE, &mut attr).map(owned).map_err(|errno| BpfFailure { errno, log: String::new() })
}

/// Minimal BTF: [1] `int`, [2] `int[4]` (16 bytes), for a socket storage map.
fn btf_blob() -> Vec<u8> {
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
    for w in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
        b.extend(w.to_le_bytes());
    }
    b.extend(types);
    b.extend(strings);
    b
}

fn btf_load() -> Result<OwnedFd, BpfFailure> {
    let blob = btf_blob();
    let mut log = vec![0u8; 4096];
    let mut attr = [0u64; 16];
    put_u64(&mut attr, 0, blob.as_ptr() as u64);
    put_u64(&mut attr, 8, log.as_mut_ptr() as u64);
    put_u32(&mut attr, 16, blob.len() as u32);
    put_u32(&mut attr, 20, log.len() as u32);
    put_u32(&mut attr, 24, 1);
    sys_bpf(BPF_BTF_LOAD, &mut attr).map(owned).map_err(|errno| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        BpfFailure { errno, log: String::from_utf8_lossy(&log[..end]).trim().to_string() }
    })
}

/// A socket storage map (`int` key, 16-byte value, described by BTF).
fn sk_storage_create() -> Result<OwnedFd, BpfFailure> {
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
    sys_bpf(BPF_MAP_CREATE, &mut attr).map(owned).map_err(|errno| BpfFailure { errno, log: String::new() })
}

const LICENSE: &[u8] = b"GPL\0";

fn prog_load_once(prog_type: u32, attach: u32, insns: &[Insn], log: Option<&mut Vec<u8>>) -> io::Result<OwnedFd> {
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
fn prog_load(prog_type: u32, attach: u32, insns: &[Insn]) -> Result<OwnedFd, BpfFailure> {
    match prog_load_once(prog_type, attach, insns, None) {
        Ok(fd) => Ok(fd),
        Err(first) => {
            let mut buf = vec![0u8; 64 * 1024];
            match prog_load_once(prog_type, attach, insns, Some(&mut buf)) {
                Ok(fd) => Ok(fd), // a transient failure (e.g. EAGAIN): it loads
                Err(errno) => {
                    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                    let log = String::from_utf8_lossy(&buf[..end]).trim().to_string();
                    let errno = if errno.raw_os_error() == first.raw_os_error() { first } else { errno };
                    Err(BpfFailure { errno, log })
                }
            }
        }
    }
}

fn prog_attach(prog: &OwnedFd, target: RawFd, attach: u32) -> Result<(), BpfFailure> {
    let mut attr = [0u64; 16];
    put_u32(&mut attr, 0, target as u32);
    put_u32(&mut attr, 4, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 8, attach);
    sys_bpf(BPF_PROG_ATTACH, &mut attr).map(|_| ()).map_err(|errno| BpfFailure { errno, log: String::new() })
}

fn prog_detach(prog: &OwnedFd, target: RawFd, attach: u32) {
    let mut attr = [0u64; 16];
    put_u32(&mut attr, 0, target as u32);
    put_u32(&mut attr, 4, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 8, attach);
    let _ = sys_bpf(BPF_PROG_DETACH, &mut attr);
}

fn link_create(prog: &OwnedFd, target: RawFd, attach: u32) -> Result<OwnedFd, BpfFailure> {
    let mut attr = [0u64; 16];
    put_u32(&mut attr, 0, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 4, target as u32);
    put_u32(&mut attr, 8, attach);
    sys_bpf(BPF_LINK_CREATE, &mut attr).map(owned).map_err(|errno| BpfFailure { errno, log: String::new() })
}

/// `r0 = ret; exit`
fn trivial(ret: i32) -> Vec<Insn> {
    vec![asm::mov64_imm(asm::R0, ret), asm::exit()]
}

/// Records a feature's result.
struct Checker {
    checked: Vec<&'static Feature>,
    missing: Vec<Missing>,
}

impl Checker {
    fn record<T>(&mut self, feature: &'static Feature, r: Result<T, BpfFailure>) -> Option<T> {
        self.checked.push(feature);
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.missing.push(Missing { feature, detail: e.summary(), log: e.log });
                None
            }
        }
    }

    /// bpftool-style helper check: only "unknown func" counts as missing.
    fn helper(&mut self, feature: &'static Feature, prog_type: u32, attach: u32, helper: i32) {
        self.checked.push(feature);
        let prog = [asm::call(helper), asm::mov64_imm(asm::R0, 0), asm::exit()];
        if let Err(e) = prog_load(prog_type, attach, &prog) {
            if log_says_unknown_helper(&e.log) {
                self.missing.push(Missing { feature, detail: e.summary(), log: e.log });
            }
        }
    }
}

/// Checks everything rotor needs. With `cgroup`, also attaches a pass-through
/// cgroup/connect4 and sockops program there through bpf links, for an instant.
/// Raises RLIMIT_MEMLOCK when it is limited: kernels before 5.11 charge maps to it.
pub fn probe_kernel(cgroup: Option<&Path>) -> Result<KernelSupport, ProbeError> {
    let kernel = kernel_release();
    raise_memlock();

    // The bpf() syscall itself: a small hash map.
    let hash = map_create(T_MAP_HASH, 8, 8, 16, 0).map_err(|e| {
        if e.is_denied() || e.errno.raw_os_error() == Some(libc::ENOSYS) {
            ProbeError::Denied { kernel: kernel.clone(), source: e.errno }
        } else {
            ProbeError::Missing {
                kernel: kernel.clone(),
                missing: vec![Missing { feature: &MAP_HASH, detail: e.summary(), log: e.log }],
            }
        }
    })?;
    let mut c = Checker { checked: vec![&MAP_HASH], missing: Vec::new() };

    let array = c.record(&MAP_ARRAY, map_create(T_MAP_ARRAY, 4, 16, 4, 0));
    c.record(&MAP_LRU_HASH, map_create(T_MAP_LRU_HASH, 8, 16, 16, 0));
    c.record(&MAP_PERCPU_ARRAY, map_create(T_MAP_PERCPU_ARRAY, 4, 8, 4, 0));
    let sockhash = c.record(&MAP_SOCKHASH, map_create(T_MAP_SOCKHASH, 8, 4, 16, 0));
    let ringbuf = c.record(&MAP_RINGBUF, map_create(T_MAP_RINGBUF, 0, 0, 4096 * 4, 0));
    let sk_storage = c.record(&MAP_SK_STORAGE, sk_storage_create());
    c.record(&MAP_MMAPABLE, check_mmapable());

    let connect4 = c.record(&PROG_CONNECT4, prog_load(T_PROG_CGROUP_SOCK_ADDR, ATTACH_CGROUP_INET4_CONNECT, &trivial(1)));
    let getpeername4 =
        c.record(&PROG_GETPEERNAME4, prog_load(T_PROG_CGROUP_SOCK_ADDR, ATTACH_CGROUP_INET4_GETPEERNAME, &trivial(1)));
    c.record(&PROG_CONNECT6, prog_load(T_PROG_CGROUP_SOCK_ADDR, ATTACH_CGROUP_INET6_CONNECT, &trivial(1)));
    c.record(&PROG_GETPEERNAME6, prog_load(T_PROG_CGROUP_SOCK_ADDR, ATTACH_CGROUP_INET6_GETPEERNAME, &trivial(1)));
    let sockops = c.record(&PROG_SOCKOPS, prog_load(T_PROG_SOCK_OPS, 0, &trivial(1)));
    let skskb = c.record(&PROG_SK_SKB, prog_load(T_PROG_SK_SKB, 0, &trivial(0)));

    if connect4.is_some() {
        let (t, a) = (T_PROG_CGROUP_SOCK_ADDR, ATTACH_CGROUP_INET4_CONNECT);
        c.helper(&H_CONNECT4_LOOKUP, t, a, FN_MAP_LOOKUP_ELEM);
        c.helper(&H_CONNECT4_UPDATE, t, a, FN_MAP_UPDATE_ELEM);
        c.helper(&H_CONNECT4_PID, t, a, FN_GET_CURRENT_PID_TGID);
        c.helper(&H_CONNECT4_COOKIE, t, a, FN_GET_SOCKET_COOKIE);
        c.helper(&H_CONNECT4_SK_STORAGE, t, a, FN_SK_STORAGE_GET);
    }
    if getpeername4.is_some() {
        c.helper(&H_GETPEERNAME4_SK_STORAGE, T_PROG_CGROUP_SOCK_ADDR, ATTACH_CGROUP_INET4_GETPEERNAME, FN_SK_STORAGE_GET);
    }
    if sockops.is_some() {
        let t = T_PROG_SOCK_OPS;
        c.helper(&H_SOCKOPS_LOOKUP, t, 0, FN_MAP_LOOKUP_ELEM);
        c.helper(&H_SOCKOPS_UPDATE, t, 0, FN_MAP_UPDATE_ELEM);
        c.helper(&H_SOCKOPS_DELETE, t, 0, FN_MAP_DELETE_ELEM);
        c.helper(&H_SOCKOPS_COOKIE, t, 0, FN_GET_SOCKET_COOKIE);
        c.helper(&H_SOCKOPS_SETSOCKOPT, t, 0, FN_SETSOCKOPT);
        c.helper(&H_SOCKOPS_HASH_UPDATE, t, 0, FN_SOCK_HASH_UPDATE);
        c.helper(&H_SOCKOPS_SK_STORAGE, t, 0, FN_SK_STORAGE_GET);
    }
    if skskb.is_some() {
        let t = T_PROG_SK_SKB;
        c.helper(&H_SKB_LOOKUP, t, 0, FN_MAP_LOOKUP_ELEM);
        c.helper(&H_SKB_UPDATE, t, 0, FN_MAP_UPDATE_ELEM);
        c.helper(&H_SKB_DELETE, t, 0, FN_MAP_DELETE_ELEM);
        c.helper(&H_SKB_COOKIE, t, 0, FN_GET_SOCKET_COOKIE);
        c.helper(&H_SKB_LOAD_BYTES, t, 0, FN_SKB_LOAD_BYTES);
        c.helper(&H_SKB_REDIRECT_HASH, t, 0, FN_SK_REDIRECT_HASH);
        c.helper(&H_SKB_RINGBUF_RESERVE, t, 0, FN_RINGBUF_RESERVE);
        c.helper(&H_SKB_RINGBUF_SUBMIT, t, 0, FN_RINGBUF_SUBMIT);
    }

    if skskb.is_some() {
        c.record(&INSN_JMP32, prog_load(T_PROG_SK_SKB, 0, &jmp32_prog()));
        if let Some(array) = &array {
            let fd = array.as_raw_fd();
            c.record(&INSN_ATOMIC_ADD_W, prog_load(T_PROG_SK_SKB, 0, &atomic_prog(fd, false, asm::ATOMIC_ADD, 0)));
            c.record(
                &INSN_ATOMIC_FETCH_ADD_W,
                prog_load(T_PROG_SK_SKB, 0, &atomic_prog(fd, false, asm::ATOMIC_ADD | asm::FETCH, 0)),
            );
            c.record(&INSN_ATOMIC_OR_W, prog_load(T_PROG_SK_SKB, 0, &atomic_prog(fd, false, asm::ATOMIC_OR, 0)));
            c.record(&INSN_ATOMIC_AND_W, prog_load(T_PROG_SK_SKB, 0, &atomic_prog(fd, false, asm::ATOMIC_AND, 0)));
            c.record(
                &INSN_ATOMIC_FETCH_OR_W,
                prog_load(T_PROG_SK_SKB, 0, &atomic_prog(fd, false, asm::ATOMIC_OR | asm::FETCH, 0)),
            );
            c.record(
                &INSN_ATOMIC_FETCH_ADD_DW,
                prog_load(T_PROG_SK_SKB, 0, &atomic_prog(fd, true, asm::ATOMIC_ADD | asm::FETCH, 8)),
            );
        }
    }
    if connect4.is_some() {
        let p = connect4_prog(hash.as_raw_fd());
        c.record(&CTX_CONNECT4, prog_load(T_PROG_CGROUP_SOCK_ADDR, ATTACH_CGROUP_INET4_CONNECT, &p));
    }
    if let (Some(_), Some(storage)) = (&getpeername4, &sk_storage) {
        let p = getpeername4_prog(storage.as_raw_fd());
        c.record(&CTX_GETPEERNAME4, prog_load(T_PROG_CGROUP_SOCK_ADDR, ATTACH_CGROUP_INET4_GETPEERNAME, &p));
    }
    if let (Some(_), Some(sockhash), Some(storage)) = (&sockops, &sockhash, &sk_storage) {
        let p = sockops_prog(sockhash.as_raw_fd(), storage.as_raw_fd());
        c.record(&CTX_SOCKOPS, prog_load(T_PROG_SOCK_OPS, 0, &p));
    }
    let mut parser = None;
    let mut verdict = None;
    if skskb.is_some() {
        parser = c.record(&CTX_PARSER, prog_load(T_PROG_SK_SKB, 0, &parser_prog()));
        if let Some(sockhash) = &sockhash {
            verdict = c.record(&CTX_VERDICT, prog_load(T_PROG_SK_SKB, 0, &verdict_prog(sockhash.as_raw_fd())));
        }
        if let Some(ringbuf) = &ringbuf {
            c.record(&CTX_RINGBUF, prog_load(T_PROG_SK_SKB, 0, &ringbuf_prog(ringbuf.as_raw_fd())));
        }
    }

    // Attach both to a fresh socket hash (no sockets: nothing runs).
    if let (Some(parser), Some(verdict)) = (&parser, &verdict) {
        if let Some(target) = c.record(&MAP_SOCKHASH, map_create(T_MAP_SOCKHASH, 8, 4, 16, 0)) {
            c.checked.pop(); // counted once
            let fd = target.as_raw_fd();
            if c.record(&ATTACH_PARSER, prog_attach(parser, fd, ATTACH_SK_SKB_STREAM_PARSER)).is_some() {
                prog_detach(parser, fd, ATTACH_SK_SKB_STREAM_PARSER);
            }
            if c.record(&ATTACH_VERDICT, prog_attach(verdict, fd, ATTACH_SK_SKB_STREAM_VERDICT)).is_some() {
                prog_detach(verdict, fd, ATTACH_SK_SKB_STREAM_VERDICT);
            }
        }
    }

    if let Some(cgroup) = cgroup {
        if let Ok(dir) = std::fs::File::open(cgroup) {
            let fd = dir.as_raw_fd();
            // Pass-through programs (allow everything): attached for an instant.
            if let Some(p) = &connect4 {
                c.record(&LINK_CONNECT4, link_create(p, fd, ATTACH_CGROUP_INET4_CONNECT));
            }
            if let Some(p) = &getpeername4 {
                c.record(&LINK_GETPEERNAME4, link_create(p, fd, ATTACH_CGROUP_INET4_GETPEERNAME));
            }
            if let Some(p) = &sockops {
                c.record(&LINK_SOCKOPS, link_create(p, fd, ATTACH_CGROUP_SOCK_OPS));
            }
        } // an unreadable cgroup is the datapath's error to report, with its path
    }

    if c.missing.is_empty() {
        Ok(KernelSupport { kernel, checked: c.checked })
    } else {
        Err(ProbeError::Missing { kernel, missing: c.missing })
    }
}

fn raise_memlock() {
    let mut cur = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut cur) == 0 && cur.rlim_cur != libc::RLIM_INFINITY {
            let want = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
            let _ = libc::setrlimit(libc::RLIMIT_MEMLOCK, &want);
        }
    }
}

fn check_mmapable() -> Result<(), BpfFailure> {
    let map = map_create(T_MAP_ARRAY, 4, 64, 64, BPF_F_MMAPABLE)?;
    let len = 64 * 64;
    // SAFETY: mapping `len` bytes of an mmapable array of 64 × 64-byte values.
    let ptr = unsafe {
        libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, map.as_raw_fd(), 0)
    };
    if ptr == libc::MAP_FAILED {
        return Err(BpfFailure { errno: io::Error::last_os_error(), log: "mmap of the map failed".into() });
    }
    // SAFETY: unmapping exactly what we mapped.
    unsafe { libc::munmap(ptr, len) };
    Ok(())
}

/// `*(u32 *)(r10 - 4) = 0; r0 = lookup(map, r10 - 4)`, then `body` on a non-null r0.
fn with_array_value(map_fd: RawFd, body: &[Insn]) -> Vec<Insn> {
    use asm::*;
    let mut p = Vec::new();
    p.push(st_w(R10, -4, 0));
    p.extend(ld_map_fd(R1, map_fd));
    p.push(mov64_reg(R2, R10));
    p.push(add64_imm(R2, -4));
    p.push(call(FN_MAP_LOOKUP_ELEM));
    p.push(jeq_imm(R0, 0, body.len() as i16));
    p.extend_from_slice(body);
    p.push(mov64_imm(R0, 0));
    p.push(exit());
    p
}

fn atomic_prog(map_fd: RawFd, dw: bool, op: i32, off: i16) -> Vec<Insn> {
    use asm::*;
    let a = if dw { atomic_dw(R0, R1, off, op) } else { atomic_w(R0, R1, off, op) };
    with_array_value(map_fd, &[mov64_imm(R1, 1), a])
}

fn jmp32_prog() -> Vec<Insn> {
    use asm::*;
    vec![ldx_w(R2, R1, SKB_LEN), mov64_imm(R0, 0), jeq32_imm(R2, 0, 1), mov64_imm(R0, 0), exit()]
}

fn connect4_prog(hash_fd: RawFd) -> Vec<Insn> {
    use asm::*;
    let mut p = vec![
        mov64_reg(R6, R1),
        call(FN_GET_CURRENT_PID_TGID),
        mov64_reg(R1, R6),
        call(FN_GET_SOCKET_COOKIE),
        stx_dw(R10, R0, -8),
        st_dw(R10, -16, 0),
    ];
    p.extend(ld_map_fd(R1, hash_fd));
    p.extend([
        mov64_reg(R2, R10),
        add64_imm(R2, -8),
        mov64_reg(R3, R10),
        add64_imm(R3, -16),
        mov64_imm(R4, 0),
        call(FN_MAP_UPDATE_ELEM),
        // a rewrite that is never attached: 127.0.0.1:15001
        mov64_imm(R1, 0x0100_007f),
        stx_w(R6, R1, SOCK_ADDR_USER_IP4),
        mov64_imm(R1, (15001u16.to_be()) as i32),
        stx_w(R6, R1, SOCK_ADDR_USER_PORT),
        mov64_imm(R0, 1),
        exit(),
    ]);
    p
}

fn getpeername4_prog(storage_fd: RawFd) -> Vec<Insn> {
    use asm::*;
    let mut p = vec![mov64_reg(R6, R1), ldx_dw(R2, R6, SOCK_ADDR_SK), jeq_imm(R2, 0, 8)];
    p.extend(ld_map_fd(R1, storage_fd));
    p.extend([
        mov64_imm(R3, 0),
        mov64_imm(R4, 0),
        call(FN_SK_STORAGE_GET),
        jeq_imm(R0, 0, 2),
        ldx_w(R1, R0, 0),
        stx_w(R6, R1, SOCK_ADDR_USER_IP4),
        mov64_imm(R0, 1),
        exit(),
    ]);
    p
}

fn sockops_prog(sockhash_fd: RawFd, storage_fd: RawFd) -> Vec<Insn> {
    use asm::*;
    let mut p = vec![mov64_reg(R6, R1), ldx_dw(R2, R6, SOCK_OPS_SK), jeq_imm(R2, 0, 5)];
    p.extend(ld_map_fd(R1, storage_fd));
    // BPF_SK_STORAGE_GET_F_CREATE
    p.extend([mov64_imm(R3, 0), mov64_imm(R4, 1), call(FN_SK_STORAGE_GET)]);
    p.extend([
        mov64_reg(R1, R6),
        call(FN_GET_SOCKET_COOKIE),
        stx_dw(R10, R0, -8),
        st_w(R10, -16, 1 << 20),
        mov64_reg(R1, R6),
        mov64_imm(R2, libc::SOL_SOCKET),
        mov64_imm(R3, libc::SO_RCVBUF),
        mov64_reg(R4, R10),
        add64_imm(R4, -16),
        mov64_imm(R5, 4),
        call(FN_SETSOCKOPT),
        mov64_reg(R1, R6),
    ]);
    p.extend(ld_map_fd(R2, sockhash_fd));
    p.extend([
        mov64_reg(R3, R10),
        add64_imm(R3, -8),
        mov64_imm(R4, 0),
        call(FN_SOCK_HASH_UPDATE),
        mov64_imm(R0, 1),
        exit(),
    ]);
    p
}

fn parser_prog() -> Vec<Insn> {
    use asm::*;
    vec![
        mov64_reg(R6, R1),
        ldx_w(R2, R6, SKB_CB0),
        ldx_w(R2, R6, SKB_REMOTE_IP4),
        ldx_w(R2, R6, SKB_LOCAL_PORT),
        mov64_reg(R1, R6),
        mov64_imm(R2, 0),
        mov64_reg(R3, R10),
        add64_imm(R3, -16),
        mov64_imm(R4, 9),
        call(FN_SKB_LOAD_BYTES),
        ldx_w(R0, R6, SKB_LEN),
        exit(),
    ]
}

fn verdict_prog(sockhash_fd: RawFd) -> Vec<Insn> {
    use asm::*;
    let mut p = vec![mov64_reg(R6, R1), call(FN_GET_SOCKET_COOKIE), stx_dw(R10, R0, -8), mov64_reg(R1, R6)];
    p.extend(ld_map_fd(R2, sockhash_fd));
    p.extend([
        mov64_reg(R3, R10),
        add64_imm(R3, -8),
        mov64_imm(R4, 1), // BPF_F_INGRESS
        call(FN_SK_REDIRECT_HASH),
        exit(),
    ]);
    p
}

fn ringbuf_prog(ringbuf_fd: RawFd) -> Vec<Insn> {
    use asm::*;
    let mut p = Vec::new();
    p.extend(ld_map_fd(R1, ringbuf_fd));
    p.extend([
        mov64_imm(R2, 16),
        mov64_imm(R3, 0),
        call(FN_RINGBUF_RESERVE),
        jeq_imm(R0, 0, 4),
        st_dw(R0, 0, 0),
        mov64_reg(R1, R0),
        mov64_imm(R2, 0),
        call(FN_RINGBUF_SUBMIT),
        mov64_imm(R0, 0),
        exit(),
    ]);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn instructions_encode_like_the_kernel_reads_them() {
        assert_eq!(std::mem::size_of::<Insn>(), 8);
        let [a, b] = asm::ld_map_fd(asm::R2, 7);
        assert_eq!((a.code, a.regs, a.imm), (0x18, 0x12, 7));
        assert_eq!(b, asm::insn(0, 0, 0, 0, 0));
        let f = asm::atomic_w(asm::R0, asm::R1, 4, asm::ATOMIC_OR | asm::FETCH);
        assert_eq!((f.code, f.regs, f.off, f.imm), (0xc3, 0x10, 4, 0x41));
        assert_eq!(asm::jeq_imm(asm::R0, 0, 3).off, 3);
    }

    #[test]
    fn jumps_in_probe_programs_stay_inside() {
        let progs = [
            atomic_prog(3, false, asm::ATOMIC_ADD, 0),
            ringbuf_prog(3),
            jmp32_prog(),
            connect4_prog(3),
            sockops_prog(3, 4),
            getpeername4_prog(3),
            parser_prog(),
            verdict_prog(3),
        ];
        for p in progs {
            assert_eq!(p.last(), Some(&asm::exit()));
            for (i, insn) in p.iter().enumerate() {
                if matches!(insn.code, 0x15 | 0x16) {
                    let to = i as i64 + 1 + insn.off as i64;
                    assert!((0..p.len() as i64).contains(&to), "jump out of program at {i}");
                }
            }
        }
    }

    #[test]
    fn unknown_helper_logs_are_recognised() {
        assert!(log_says_unknown_helper("0: (85) call bpf_ringbuf_reserve#131\nunknown func bpf_ringbuf_reserve#131\n"));
        assert!(log_says_unknown_helper("0: (85) call unknown#195\ninvalid func unknown#195\n"));
        assert!(!log_says_unknown_helper("0: (85) call bpf_map_lookup_elem#1\nR1 type=ctx expected=map_ptr\n"));
        assert!(!log_says_unknown_helper("R2 !read_ok"));
    }

    #[test]
    fn log_tail_skips_statistics() {
        let log = "0: (b7) r0 = 0\n1: (c3) unknown opcode c3\n\nprocessed 2 insns (limit 1000000)\n";
        assert_eq!(log_tail(log, 3), "0: (b7) r0 = 0 | 1: (c3) unknown opcode c3");
    }

    #[test]
    fn refusal_names_feature_kernel_and_what_to_do() {
        let e = ProbeError::Missing {
            kernel: "5.10.0-32-amd64".into(),
            missing: vec![Missing {
                feature: &INSN_ATOMIC_FETCH_ADD_W,
                detail: "Invalid argument (verifier: BPF_ATOMIC uses invalid atomic opcode 01)".into(),
                log: String::new(),
            }],
        };
        let s = e.to_string();
        for want in ["5.10.0-32-amd64", "fetch-and-add", "Linux 5.12+", "invalid atomic opcode", "Linux 6.1 or newer", "a feature"] {
            assert!(s.contains(want), "{want:?} not in {s}");
        }
        assert_eq!(e.missing().len(), 1);
        let d = ProbeError::Denied { kernel: "6.1.0".into(), source: io::Error::from_raw_os_error(libc::EPERM) };
        assert!(d.to_string().contains("CAP_BPF"));
    }

    #[test]
    fn every_feature_is_listed_once() {
        for (i, a) in ALL.iter().enumerate() {
            for b in &ALL[i + 1..] {
                assert_ne!(a.name, b.name);
            }
        }
    }

    /// The probe on the running kernel. `cargo xtask kernels` runs this test in
    /// each VM and reads the `ROTOR-PROBE` line.
    #[test]
    fn this_kernel() {
        if !is_root() {
            eprintln!("skipped: needs root (bpf)");
            return;
        }
        match probe_kernel(None) {
            Ok(s) => println!("ROTOR-PROBE ok kernel={} features={}", s.kernel, s.checked.len()),
            Err(e) => {
                println!("ROTOR-PROBE refused {e}");
                for m in e.missing() {
                    if !m.log.is_empty() {
                        println!("ROTOR-PROBE-LOG {}:\n{}", m.feature.name, m.log);
                    }
                }
                panic!("{e}");
            }
        }
    }

    /// A helper no kernel has is reported as missing, by name.
    #[test]
    fn a_missing_helper_is_reported() {
        if !is_root() {
            eprintln!("skipped: needs root (bpf)");
            return;
        }
        static BOGUS: Feature = Feature { name: "bpf_bogus#100000", since: None, used_for: "this test" };
        let mut c = Checker { checked: vec![], missing: vec![] };
        c.helper(&H_SKB_COOKIE, T_PROG_SK_SKB, 0, FN_GET_SOCKET_COOKIE);
        assert!(c.missing.is_empty(), "{:?}", c.missing);
        c.helper(&BOGUS, T_PROG_SK_SKB, 0, 100_000);
        assert_eq!(c.missing.len(), 1);
        assert_eq!(c.missing[0].feature.name, "bpf_bogus#100000");
        assert!(log_says_unknown_helper(&c.missing[0].log), "{}", c.missing[0].log);
    }

    /// Links to a cgroup made for the test, removed afterwards.
    #[test]
    fn cgroup_links() {
        if !is_root() || !Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            eprintln!("skipped: needs root and cgroup v2");
            return;
        }
        let dir = std::path::PathBuf::from(format!("/sys/fs/cgroup/rotor-probe-test-{}", std::process::id()));
        std::fs::create_dir(&dir).expect("create test cgroup");
        let r = probe_kernel(Some(&dir));
        let _ = std::fs::remove_dir(&dir);
        match r {
            Ok(s) => assert!(s.checked.contains(&&LINK_CONNECT4) && s.checked.contains(&&LINK_SOCKOPS)),
            // a kernel refused for something else (this_kernel says what) must still have links
            Err(e) => {
                let links = [&LINK_CONNECT4, &LINK_GETPEERNAME4, &LINK_SOCKOPS];
                assert!(!e.missing().iter().any(|m| links.contains(&m.feature)), "{e}");
            }
        }
    }
}
