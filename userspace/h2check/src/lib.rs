//! Checks shared by the fuzz targets (userspace/fuzz) and the seeded tests
//! here: each takes the raw bytes of one input and returns `Err` with what
//! went wrong, so a fuzz target panics on it and a test names its seed.
//!
//! * [`framing`]: the kernel's stream parser (ebpf/lib/h2.h compiled for the
//!   host, driven as strparser drives it) against the agent's
//!   `MessageReader` on the same bytes, split differently.
//! * [`hpack`]: the in-tree HPACK decoder's limits, and its results against
//!   an independent decoder (fluke-hpack).

/// The constants of ebpf/include/rotor.h that the agent's HTTP/2 module
/// reads, where it finds them in the rotor crate.
pub mod ebpf {
    #[allow(dead_code, non_upper_case_globals, clippy::all)]
    pub mod abi {
        include!(concat!(env!("OUT_DIR"), "/abi.rs"));
    }
}

/// The agent's HTTP/2 module, compiled from its source (see Cargo.toml).
#[path = "../../src/h2/mod.rs"]
#[allow(dead_code, clippy::all)]
pub mod h2;

pub mod framing;
pub mod hpack;
pub mod kernel;
pub mod rng;
