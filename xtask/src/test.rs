//! `cargo xtask test`: the whole suite, then the shared pass.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result};

use crate::{cargo, deps, exit, strings, workspace_root};

/// Everything; `args` go to cargo before a `--` and to the test binaries
/// after it. With none, the shared pass follows.
pub fn run(args: &[String]) -> Result<ExitCode> {
    deps::ensure()?;
    let code = cargo(&strings(&["build", "--release", "--workspace", "--bins"]))?;
    if code != 0 {
        return Ok(exit(code));
    }
    // Split at the first `--`: cargo's arguments before, the test binaries' after.
    let (cargo_args, test_args) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[][..]),
    };
    let mut full = strings(&["test", "--release", "--workspace", "--no-fail-fast"]);
    full.extend(cargo_args.iter().cloned());
    full.push("--".into());
    if !test_args.iter().any(|a| a.starts_with("--test-threads")) {
        full.push("--test-threads=2".into());
    }
    full.extend(test_args.iter().cloned());
    let code = cargo(&full)?;
    // The whole run with no arguments also runs the shared pass.
    if !args.is_empty() {
        return Ok(exit(code));
    }
    let shared = shared_pass()?;
    Ok(exit(if code != 0 { code } else { shared }))
}

/// Targets run again with every stream through the multiplexers
/// (`--dedicated-upstreams 0`, README "Connections to each endpoint"):
/// the test beds have fewer client connections than the dedicated
/// upstreams a node keeps, so the full run alone would hardly reach them.
const SHARED_PASS: &[&str] = &[
    "bodies",
    "split_writes",
    "peers",
    "clients",
    "grpc",
    "grpc_interop",
    "transparency",
    "idle",
    "metrics",
    "limits",
    "bad_input",
    "hostile_headers",
    "failures",
];

/// Tests of those targets whose premise is a connection's own upstream,
/// which the multiplexer is not: each named with why.
const SHARED_PASS_SKIP: &[(&str, &str)] = &[
    (
        "endpoint_goaway_stops_new_streams_in_the_kernel",
        "stops the agent and wants the kernel to carry on: the multiplexer is the agent",
    ),
    (
        "streams_the_agent_holds_and_carries_count_too",
        "wants the endpoints' room (2 x 4 streams) below the client's 48: the multiplexer \
         opens up to --shared-upstreams connections to each (room for 64), so whether a stream \
         waits is a race",
    ),
];

/// `cargo xtask test`'s second pass: SHARED_PASS with every stream shared.
fn shared_pass() -> Result<i32> {
    let mut args = strings(&["test", "--release", "-p", "rotor-tests", "--no-fail-fast"]);
    for t in SHARED_PASS {
        args.push("--test".into());
        args.push(t.to_string());
    }
    args.push("--".into());
    args.push("--test-threads=2".into());
    for (name, why) in SHARED_PASS_SKIP {
        println!("xtask: shared pass: skipping {name}: {why}");
        args.push("--skip".into());
        args.push(name.to_string());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!(
        "xtask: ROTOR_TEST_AGENT_ARGS='--dedicated-upstreams 0' cargo {}",
        args.join(" ")
    );
    let status = Command::new(&cargo)
        .args(&args)
        .env("ROTOR_TEST_AGENT_ARGS", "--dedicated-upstreams 0")
        .current_dir(workspace_root())
        .status()
        .context("cargo test (shared pass)")?;
    Ok(status.code().unwrap_or(1))
}
