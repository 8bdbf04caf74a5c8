//! rotor: per-request HTTP/2 and gRPC load balancing in the kernel.

// Unsafe code lives in three fenced places, each allowed where it is
// declared: crate::sys (the agent's raw syscalls), ebpf::conn_table (the
// memory-mapped connection table) and ebpf::probe's bpf() calls, plus the
// aya::Pod impls of the generated ABI structs.
#![deny(unsafe_code)]
// A panic on a value from outside (a peer's bytes, a file, the kernel) is a
// bug; tests may unwrap (clippy.toml: allow-unwrap-in-tests).
#![deny(clippy::unwrap_used)]

pub mod agent;
#[forbid(unsafe_code)]
pub mod cli;
pub mod ebpf;
#[forbid(unsafe_code)]
pub mod h2;
#[forbid(unsafe_code)]
pub mod model;
#[allow(unsafe_code)]
pub mod sys;
