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

mod features;
mod programs;
#[allow(unsafe_code)] // the raw bpf() calls, fenced here
mod sys;

pub use features::*;
#[cfg(test)]
mod handover_tests;
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
    crate::sys::unlimit_locked_memory();

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
        c.helper(&H_SKB_LOOP, t, 0, FN_LOOP);
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
