//! `rotor-load`: HTTP/2 load client for rotor's tests; prints one JSON report.

use clap::Parser;
use rotor_testbed::loadgen::{self, Args};

fn main() {
    let args = Args::parse();
    let report = loadgen::run(&args);
    match serde_json::to_string(&report) {
        Ok(json) => println!("{json}"),
        Err(e) => {
            eprintln!("rotor-load: serializing report: {e}");
            std::process::exit(2);
        }
    }
}
