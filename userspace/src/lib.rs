//! rotor: per-request HTTP/2 and gRPC load balancing in the kernel.

pub mod agent;
pub mod ebpf;
pub mod h2;
pub mod model;
