//! `rotor-h2-backend`: a small HTTP/2 (h2c) server for benchmarks; see
//! [`rotor_bench::backend`].

use clap::Parser;
use rotor_bench::backend::{self, Args};

fn main() {
    let args = Args::parse();
    if let Err(e) = backend::run(&args) {
        eprintln!("rotor-h2-backend: {e:#}");
        std::process::exit(1);
    }
}
