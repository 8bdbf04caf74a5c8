//! `cargo xtask`: project tasks (system dependencies, demo, tests, benchmark).

mod deps;
mod fuzz;
mod image;
mod kernels;
mod rule;
mod test;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "rotor project tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RuleName {
    ClientSkMsg,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the system packages rotor needs (Debian, as root), if any is missing.
    Deps,
    /// Build everything and show h2load over one connection, without and with rotor.
    Demo {
        /// Requests h2load sends in each phase.
        #[arg(long, default_value_t = 3000)]
        requests: u64,
        /// Concurrent streams on the connection.
        #[arg(long, default_value_t = 8)]
        streams: u32,
        /// Skip `cargo build --release --workspace` (use the binaries already built).
        #[arg(long)]
        no_build: bool,
    },
    /// Benchmark rotor against a direct connection, kube-proxy-style DNAT and HAProxy;
    /// writes bench.md, bench.json and bench.svg under target/bench/.
    Bench {
        /// A short run (1 repeat, 2 s per measurement; about 5 minutes).
        #[arg(long)]
        quick: bool,
        /// Repeats of every measurement (default 3, 1 with --quick).
        #[arg(long)]
        repeat: Option<usize>,
        /// Seconds measured per run (default 5, 2 with --quick).
        #[arg(long)]
        duration: Option<f64>,
        /// Open-loop request rate (requests per second over 4 connections).
        #[arg(long)]
        rate: Option<f64>,
        /// Only scenarios whose id contains this (repeatable), e.g. `--only 100b`;
        /// the issue-17 rows: `upstreams` (connections per endpoint), `win64k`
        /// (h2load with 64 KiB windows), `1000` (1,000 active and idle
        /// connections), `open-sat` (open loop near saturation; runs
        /// `4x16-100b` first for its rate).
        #[arg(long)]
        only: Vec<String>,
        /// An argument for the rotor path's agent (repeatable), e.g.
        /// `--rotor-arg=--dedicated-upstreams --rotor-arg=0` to measure every
        /// stream through the endpoints' multiplexers (shared upstreams).
        #[arg(long = "rotor-arg", allow_hyphen_values = true, value_name = "ARG")]
        rotor_args: Vec<String>,
        /// Skip `cargo build --release --workspace --bins`.
        #[arg(long)]
        no_build: bool,
        /// Only the agent's memory per connection (0, 1,000, 5,000 idle and
        /// 1,000 busy connections; about 3 minutes): target/bench/conn-memory.md.
        #[arg(long)]
        conn_memory: bool,
        /// Only the memory with 5,000 Services (bench/src/services_memory.rs);
        /// writes services-memory.md and .json under target/bench/.
        #[arg(long)]
        services_memory: bool,
        /// Only what the kernel's per-endpoint counting and stream
        /// timestamps cost per request (bench/src/endpoint_stats.rs):
        /// target/bench/endpoint-stats.md.
        #[arg(long)]
        endpoint_stats: bool,
    },
    /// Run the cargo-fuzz targets (userspace/fuzz) on stable, each for a time;
    /// installs cargo-fuzz if missing. Fails on a crash and names the reproducer.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Targets to run (default: all): message_reader, header_rewrite,
        /// hpack_decode, kernel_framing.
        targets: Vec<String>,
    },
    /// Build the agent's OCI image from scratch (umoci): target/image/rotor-agent.oci.tar.
    Image {
        /// Skip `cargo build --release -p rotor` (use the agent already built).
        #[arg(long)]
        no_build: bool,
    },
    /// Remove namespaces and cgroups left by test runs that were killed (owner process gone).
    Clean,
    /// Build everything and run the test suite: `cargo xtask test [CARGO TEST ARGS] [-- TEST BINARY ARGS]`.
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Check a kernel rule the design rests on (ebpf/README.md) against the
    /// running kernel; exits 1 if it does not hold here.
    Rule {
        /// `client-sk-msg` (R6): a client socket in a socket map, even with
        /// only a pass-all sk_msg program, answers a blocking recv() beside
        /// a writer thread with EAGAIN.
        name: RuleName,
        /// Seconds per run (two runs: without and with the map).
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// Boot Debian's kernels under QEMU (virtme-ng) and run the smoke subset on each: a table kernel × test.
    Kernels {
        /// Kernels to run: host, 5.10, 6.1, 6.12, newest (repeatable; default: all).
        #[arg(long = "kernel", value_name = "NAME")]
        kernels: Vec<String>,
        /// Run again even if target/kernels/<release>/result.json matches these binaries.
        #[arg(long)]
        force: bool,
        /// Every integration test target of rotor-tests (as cargo lists them),
        /// each in its own VM, instead of the smoke subset.
        #[arg(long)]
        full: bool,
        /// Only this integration test target, whole or with a test-name
        /// filter (`churn`, `churn:added`); repeatable; one VM each.
        #[arg(long = "test", value_name = "TARGET[:FILTER]")]
        tests: Vec<String>,
        /// Skip `cargo build --release --workspace --bins`.
        #[arg(long)]
        no_build: bool,
        /// Guest memory.
        #[arg(long, default_value = "4G")]
        memory: String,
        /// Print the whole-suite matrix (target × kernel, from the results
        /// kept in tests/kernels/results) as a Markdown table, and run nothing.
        #[arg(long)]
        table: bool,
        /// Limit per VM (boot and tests), seconds [default: 900, with
        /// --full or --test 7200 per target: `timing` takes about 201 s on
        /// a 2-core host, so about 90 min under QEMU's 27x].
        #[arg(long)]
        timeout: Option<u64>,
    },
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Cargo's target directory: `CARGO_TARGET_DIR`, else the workspace's `target`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// `cargo args...` in the workspace root; returns its exit code.
fn cargo(args: &[String]) -> Result<i32> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!("xtask: cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running {}", cargo.to_string_lossy()))?;
    Ok(status.code().unwrap_or(1))
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.cmd {
        Cmd::Deps => {
            deps::ensure()?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Fuzz { seconds, targets } => {
            // clang-16 instruments the kernel parser for the fuzz build
            deps::ensure()?;
            Ok(if fuzz::run(seconds, &targets)? {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Image { no_build } => image_command(no_build),
        Cmd::Rule { name, seconds } => {
            let holds = match name {
                RuleName::ClientSkMsg => rule::client_sk_msg(seconds)?,
            };
            Ok(if holds {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Clean => {
            let swept = rotor_testbed::sweep::sweep()?;
            for n in &swept.netns {
                println!("xtask: removed netns {n}");
            }
            for c in &swept.cgroups {
                println!("xtask: removed cgroup {}", c.display());
            }
            println!(
                "xtask: {} namespaces, {} cgroups removed",
                swept.netns.len(),
                swept.cgroups.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo {
            requests,
            streams,
            no_build,
        } => {
            deps::ensure()?;
            if !no_build {
                let code = cargo(&strings(&["build", "--release", "--workspace"]))?;
                if code != 0 {
                    return Ok(exit(code));
                }
            }
            let opts = rotor_demo::DemoOptions {
                requests,
                streams,
                ..Default::default()
            };
            let result = rotor_demo::run_demo(&opts)?;
            match result.with_rotor {
                Ok(_) => Ok(ExitCode::SUCCESS),
                Err(_) => Ok(ExitCode::FAILURE),
            }
        }
        Cmd::Bench {
            quick,
            repeat,
            duration,
            rate,
            only,
            no_build,
            conn_memory,
            services_memory,
            endpoint_stats,
            rotor_args,
        } => {
            deps::ensure()?;
            if !no_build {
                let code = cargo(&strings(&["build", "--release", "--workspace", "--bins"]))?;
                if code != 0 {
                    return Ok(exit(code));
                }
            }
            if services_memory {
                return bench_services_memory();
            }
            let mut opts = rotor_bench::BenchOptions::new(quick, repeat);
            if let Some(d) = duration {
                opts.duration = d;
            }
            if let Some(r) = rate {
                opts.rate = r;
            }
            let whole = only.is_empty() && !conn_memory && !endpoint_stats;
            opts.only = only;
            opts.rotor_args = rotor_args;
            if endpoint_stats || whole {
                let cost = rotor_bench::endpoint_stats::run(&Default::default())?;
                std::fs::create_dir_all(&opts.out_dir)?;
                std::fs::write(opts.out_dir.join("endpoint-stats.md"), cost.markdown())?;
                std::fs::write(
                    opts.out_dir.join("endpoint-stats.json"),
                    serde_json::to_string_pretty(&cost)?,
                )?;
                println!("\n{}", cost.markdown());
                if !whole {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            if !conn_memory {
                let report = rotor_bench::run_bench(&opts)?;
                println!("\n{}", report.markdown());
                println!(
                    "xtask: wrote {0}/bench.md, {0}/bench.json, {0}/bench.svg",
                    opts.out_dir.display()
                );
            }
            if conn_memory || whole {
                let mem = rotor_bench::conn_memory::run(&Default::default())?;
                println!("\n{}", mem.markdown());
                println!(
                    "xtask: wrote {0}/conn-memory.md, {0}/conn-memory.json",
                    opts.out_dir.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Kernels {
            kernels,
            force,
            full,
            tests,
            no_build,
            memory,
            table,
            timeout,
        } => {
            if table {
                kernels::print_full_table()?;
                return Ok(ExitCode::SUCCESS);
            }
            let per_target = full || !tests.is_empty();
            let timeout = timeout.unwrap_or(if per_target { 7200 } else { 900 });
            let kernels = if kernels.is_empty() {
                kernels::DEFAULT.iter().map(|s| s.to_string()).collect()
            } else {
                kernels
                    .iter()
                    .flat_map(|k| k.split(','))
                    .map(str::to_string)
                    .collect()
            };
            let opts = kernels::Options {
                kernels,
                force,
                full,
                tests,
                no_build,
                memory,
                timeout: std::time::Duration::from_secs(timeout),
            };
            let green = kernels::run_kernels(&opts)?;
            Ok(if green {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Cmd::Test { args } => test::run(&args),
    }
}

fn image_command(no_build: bool) -> Result<ExitCode> {
    deps::ensure_image_tools()?;
    if !no_build {
        let code = cargo(&strings(&["build", "--release", "-p", "rotor", "--bins"]))?;
        if code != 0 {
            return Ok(exit(code));
        }
    }
    let target = target_dir();
    let built = image::build(
        &target.join("release").join("rotor-agent"),
        &target.join("image"),
    )?;
    for f in &built.files {
        println!("xtask: image: /{f}");
    }
    println!("xtask: wrote {}", built.archive.display());
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask bench --services-memory`: that section alone.
fn bench_services_memory() -> anyhow::Result<ExitCode> {
    let r = rotor_bench::services_memory::run(&Default::default())?;
    let dir = rotor_testbed::util::target_dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("services-memory.md"), r.markdown())?;
    std::fs::write(
        dir.join("services-memory.json"),
        serde_json::to_string_pretty(&r)?,
    )?;
    println!(
        "\n{}\nxtask: wrote {1}/services-memory.md, {1}/services-memory.json",
        r.markdown(),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
