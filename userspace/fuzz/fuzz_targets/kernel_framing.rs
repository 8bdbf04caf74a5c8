//! Differential: the kernel's stream parser (ebpf/lib/h2.h compiled for the
//! host, driven as strparser drives it: skbs of fuzzed sizes, sequence
//! numbers from a fuzzed ISN, coalesced skbs revisited) against the agent's
//! `MessageReader` (pushes of other sizes) on the same bytes. Checks
//! (rotor_h2check::framing::check): the same messages, boundaries and
//! kinds; the parser never aborts the connection.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = rotor_h2check::framing::check(data) {
        panic!("{e}");
    }
});
