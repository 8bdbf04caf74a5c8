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

use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
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
        write!(
            f,
            "{} (used for {}",
            self.feature.name, self.feature.used_for
        )?;
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
    Missing {
        kernel: String,
        missing: Vec<Missing>,
    },
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

mod programs;
mod sys;
#[cfg(test)]
mod tests;

use programs::*;
use sys::*;

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
                self.missing.push(Missing {
                    feature,
                    detail: e.summary(),
                    log: e.log,
                });
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
                self.missing.push(Missing {
                    feature,
                    detail: e.summary(),
                    log: e.log,
                });
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
            ProbeError::Denied {
                kernel: kernel.clone(),
                source: e.errno,
            }
        } else {
            ProbeError::Missing {
                kernel: kernel.clone(),
                missing: vec![Missing {
                    feature: &MAP_HASH,
                    detail: e.summary(),
                    log: e.log,
                }],
            }
        }
    })?;
    let mut c = Checker {
        checked: vec![&MAP_HASH],
        missing: Vec::new(),
    };

    let array = c.record(&MAP_ARRAY, map_create(T_MAP_ARRAY, 4, 16, 4, 0));
    c.record(&MAP_LRU_HASH, map_create(T_MAP_LRU_HASH, 8, 16, 16, 0));
    c.record(
        &MAP_PERCPU_ARRAY,
        map_create(T_MAP_PERCPU_ARRAY, 4, 8, 4, 0),
    );
    let sockhash = c.record(&MAP_SOCKHASH, map_create(T_MAP_SOCKHASH, 8, 4, 16, 0));
    let ringbuf = c.record(&MAP_RINGBUF, map_create(T_MAP_RINGBUF, 0, 0, 4096 * 4, 0));
    let sk_storage = c.record(&MAP_SK_STORAGE, sk_storage_create());
    c.record(&MAP_MMAPABLE, check_mmapable());

    let connect4 = c.record(
        &PROG_CONNECT4,
        prog_load(
            T_PROG_CGROUP_SOCK_ADDR,
            ATTACH_CGROUP_INET4_CONNECT,
            &trivial(1),
        ),
    );
    let getpeername4 = c.record(
        &PROG_GETPEERNAME4,
        prog_load(
            T_PROG_CGROUP_SOCK_ADDR,
            ATTACH_CGROUP_INET4_GETPEERNAME,
            &trivial(1),
        ),
    );
    c.record(
        &PROG_CONNECT6,
        prog_load(
            T_PROG_CGROUP_SOCK_ADDR,
            ATTACH_CGROUP_INET6_CONNECT,
            &trivial(1),
        ),
    );
    c.record(
        &PROG_GETPEERNAME6,
        prog_load(
            T_PROG_CGROUP_SOCK_ADDR,
            ATTACH_CGROUP_INET6_GETPEERNAME,
            &trivial(1),
        ),
    );
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
        c.helper(
            &H_GETPEERNAME4_SK_STORAGE,
            T_PROG_CGROUP_SOCK_ADDR,
            ATTACH_CGROUP_INET4_GETPEERNAME,
            FN_SK_STORAGE_GET,
        );
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
            c.record(
                &INSN_ATOMIC_ADD_W,
                prog_load(
                    T_PROG_SK_SKB,
                    0,
                    &atomic_prog(fd, false, asm::ATOMIC_ADD, 0),
                ),
            );
            c.record(
                &INSN_ATOMIC_FETCH_ADD_W,
                prog_load(
                    T_PROG_SK_SKB,
                    0,
                    &atomic_prog(fd, false, asm::ATOMIC_ADD | asm::FETCH, 0),
                ),
            );
            c.record(
                &INSN_ATOMIC_OR_W,
                prog_load(T_PROG_SK_SKB, 0, &atomic_prog(fd, false, asm::ATOMIC_OR, 0)),
            );
            c.record(
                &INSN_ATOMIC_AND_W,
                prog_load(
                    T_PROG_SK_SKB,
                    0,
                    &atomic_prog(fd, false, asm::ATOMIC_AND, 0),
                ),
            );
            c.record(
                &INSN_ATOMIC_FETCH_OR_W,
                prog_load(
                    T_PROG_SK_SKB,
                    0,
                    &atomic_prog(fd, false, asm::ATOMIC_OR | asm::FETCH, 0),
                ),
            );
            c.record(
                &INSN_ATOMIC_FETCH_ADD_DW,
                prog_load(
                    T_PROG_SK_SKB,
                    0,
                    &atomic_prog(fd, true, asm::ATOMIC_ADD | asm::FETCH, 8),
                ),
            );
        }
    }
    if connect4.is_some() {
        let p = connect4_prog(hash.as_raw_fd());
        c.record(
            &CTX_CONNECT4,
            prog_load(T_PROG_CGROUP_SOCK_ADDR, ATTACH_CGROUP_INET4_CONNECT, &p),
        );
    }
    if let (Some(_), Some(storage)) = (&getpeername4, &sk_storage) {
        let p = getpeername4_prog(storage.as_raw_fd());
        c.record(
            &CTX_GETPEERNAME4,
            prog_load(T_PROG_CGROUP_SOCK_ADDR, ATTACH_CGROUP_INET4_GETPEERNAME, &p),
        );
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
            verdict = c.record(
                &CTX_VERDICT,
                prog_load(T_PROG_SK_SKB, 0, &verdict_prog(sockhash.as_raw_fd())),
            );
        }
        if let Some(ringbuf) = &ringbuf {
            c.record(
                &CTX_RINGBUF,
                prog_load(T_PROG_SK_SKB, 0, &ringbuf_prog(ringbuf.as_raw_fd())),
            );
        }
    }

    // Attach both to a fresh socket hash (no sockets: nothing runs).
    if let (Some(parser), Some(verdict)) = (&parser, &verdict) {
        if let Some(target) = c.record(&MAP_SOCKHASH, map_create(T_MAP_SOCKHASH, 8, 4, 16, 0)) {
            c.checked.pop(); // counted once
            let fd = target.as_raw_fd();
            if c.record(
                &ATTACH_PARSER,
                prog_attach(parser, fd, ATTACH_SK_SKB_STREAM_PARSER),
            )
            .is_some()
            {
                prog_detach(parser, fd, ATTACH_SK_SKB_STREAM_PARSER);
            }
            if c.record(
                &ATTACH_VERDICT,
                prog_attach(verdict, fd, ATTACH_SK_SKB_STREAM_VERDICT),
            )
            .is_some()
            {
                prog_detach(verdict, fd, ATTACH_SK_SKB_STREAM_VERDICT);
            }
        }
    }

    if let Some(cgroup) = cgroup {
        if let Ok(dir) = std::fs::File::open(cgroup) {
            let fd = dir.as_raw_fd();
            // Pass-through programs (allow everything): attached for an instant.
            if let Some(p) = &connect4 {
                c.record(
                    &LINK_CONNECT4,
                    link_create(p, fd, ATTACH_CGROUP_INET4_CONNECT),
                );
            }
            if let Some(p) = &getpeername4 {
                c.record(
                    &LINK_GETPEERNAME4,
                    link_create(p, fd, ATTACH_CGROUP_INET4_GETPEERNAME),
                );
            }
            if let Some(p) = &sockops {
                c.record(&LINK_SOCKOPS, link_create(p, fd, ATTACH_CGROUP_SOCK_OPS));
            }
        } // an unreadable cgroup is the datapath's error to report, with its path
    }

    if c.missing.is_empty() {
        Ok(KernelSupport {
            kernel,
            checked: c.checked,
        })
    } else {
        Err(ProbeError::Missing {
            kernel,
            missing: c.missing,
        })
    }
}

fn raise_memlock() {
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

fn check_mmapable() -> Result<(), BpfFailure> {
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
