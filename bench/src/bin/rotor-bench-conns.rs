//! `rotor-bench-conns`: holds many idle HTTP/2 connections for the memory
//! benchmark; see [`rotor_bench::conn_memory::client`].

use clap::Parser;
use rotor_bench::conn_memory::client::{self, ConnArgs};

fn main() {
    let args = ConnArgs::parse();
    if let Err(e) = client::run(&args) {
        eprintln!("rotor-bench-conns: {e:#}");
        std::process::exit(1);
    }
}
