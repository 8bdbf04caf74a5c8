//! rotor: shows what the agent balances.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "Inspect the rotor agent")]
struct Args {
    /// The agent's admin socket.
    #[arg(long, global = true, default_value = "/run/rotor/admin.sock")]
    admin: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Services, live connections and kernel counters.
    Status {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut sock = UnixStream::connect(&args.admin).with_context(|| {
        format!(
            "connecting to the agent at {} (is rotor-agent running?)",
            args.admin.display()
        )
    })?;
    let mut body = String::new();
    sock.read_to_string(&mut body)
        .context("reading the agent's status")?;
    let Command::Status { json } = args.command;
    if json {
        println!("{body}");
        return Ok(());
    }
    let status: rotor::agent::Status =
        serde_json::from_str(&body).context("parsing the agent's status")?;
    println!("SOURCE {}", status.source);
    println!("SERVICES");
    for s in &status.services {
        println!(
            "  {:<20} {:<22} {:<14} {}",
            s.name,
            s.vip,
            s.policy,
            s.endpoints.join(" ")
        );
    }
    println!("CONNECTIONS ({})", status.connections.len());
    for c in &status.connections {
        let i = &c.info;
        let path = if i.fast { "kernel" } else { "agent" };
        println!(
            "  #{:<5} {:<16} {:<22} {:<7} {}",
            i.id,
            i.service,
            i.client,
            path,
            i.upstreams.join(", ")
        );
    }
    println!("OPEN STREAMS {}", status.open_streams);
    let b = &status.budget;
    println!(
        "QUEUED {} of {} bytes (peak {}){}; cut: {} clients, {} endpoints; left on their original path while over: {}",
        b.queued_bytes,
        b.max_queued_bytes,
        b.peak_queued_bytes,
        if b.over { ", OVER: new connections stay on their original path" } else { "" },
        b.cut_clients,
        b.cut_endpoints,
        b.fail_open
    );
    print_endpoints(&status.endpoints);
    println!("KERNEL");
    for (k, v) in &status.kernel {
        println!("  {k:<20} {v}");
    }
    Ok(())
}

/// Per-endpoint totals since the agent started; p50/p99 are the upper
/// bounds of the histogram buckets they fall in.
fn print_endpoints(endpoints: &[rotor::agent::metrics_counts::EndpointTotals]) {
    println!("ENDPOINTS ({})", endpoints.len());
    println!(
        "  {:<20} {:<22} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9}",
        "SERVICE", "ENDPOINT", "OPENED", "IN-FLIGHT", "ANSWERED", "RESETS", "P50", "P99"
    );
    let ms = |q: Option<f64>| match q {
        Some(s) if s.is_finite() => format!("{:.3}ms", s * 1e3),
        Some(_) => "+Inf".into(),
        None => "-".into(),
    };
    for e in endpoints {
        let resets: u64 = e.resets.iter().flatten().sum();
        println!(
            "  {:<20} {:<22} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9}",
            e.service,
            e.endpoint,
            e.opened,
            e.in_flight(),
            e.answered,
            resets,
            ms(e.ttfb_quantile(0.5)),
            ms(e.ttfb_quantile(0.99))
        );
    }
}
