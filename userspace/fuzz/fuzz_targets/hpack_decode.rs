//! The in-tree HPACK decoder (`rotor::h2::hpack`, through rotor-h2check):
//! a connection's header blocks and table size changes from the fuzz bytes.
//! Checks (rotor_h2check::hpack::check): no panic; an accepted header list
//! within the limit it was decoded with, and its size right; the dynamic
//! table never over the size in force; the same fields as fluke-hpack on
//! every block both accept.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = rotor_h2check::hpack::check(data) {
        panic!("{e}");
    }
});
