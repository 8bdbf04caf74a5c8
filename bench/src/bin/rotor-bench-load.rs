//! `rotor-bench-load`: the benchmark's load generator; see [`rotor_bench::load`].

use clap::Parser;
use rotor_bench::load::{self, Args};

fn main() {
    let args = Args::parse();
    let report = load::run(&args);
    match serde_json::to_string(&report) {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("rotor-bench-load: serializing report: {e}");
            std::process::exit(2);
        }
    }
}
