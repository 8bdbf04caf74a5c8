//! `rotor-h2-backend`: a small HTTP/2 (h2c) server for benchmarks; see
//! [`rotor_tests::bench::backend`].

use clap::Parser;
use rotor_tests::bench::backend::{self, Args};

fn main() {
    let args = Args::parse();
    if let Err(e) = backend::run(&args) {
        eprintln!("rotor-h2-backend: {e:#}");
        std::process::exit(1);
    }
}
