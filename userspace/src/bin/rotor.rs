//! rotor: shows what the agent balances, and why traffic is or is not
//! balanced. Exit codes: 0 ok, 1 the agent answered with an error or
//! something unreadable, 2 usage, 3 the agent is not running or its socket
//! cannot be read.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::Serialize;

use rotor::agent::admin::wire::{ConnStatus, EndpointsReport, Explanation, Request, Status};
use rotor::cli::client::{ask, CliError, EXIT_OK};
use rotor::cli::{render, render_more, top, Output};

#[derive(Parser)]
#[command(version, about = "Inspect the rotor agent on this node")]
struct Args {
    /// The agent's admin socket.
    #[arg(long, global = true, default_value = "/run/rotor/admin.sock")]
    admin: PathBuf,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    output: Output,
    /// Print again every second until interrupted (JSON: one document a line).
    #[arg(short = 'w', long, global = true)]
    watch: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The agent: version, kernel, programs, source, counts, kernel counters.
    Status {
        /// The same as -o json.
        #[arg(long)]
        json: bool,
    },
    /// Every balanced Service and its endpoints: state, requests/s, share, latency.
    Services {
        /// Rates and shares over about this many seconds (1-10).
        #[arg(long, default_value_t = 10)]
        window: u64,
    },
    /// One Service's endpoints (its name, with or without the port).
    Endpoints {
        service: String,
        #[arg(long, default_value_t = 10)]
        window: u64,
    },
    /// Client connections: path (kernel, agent, spliced) and per-upstream counters.
    Conns {
        #[arg(long)]
        service: Option<String>,
    },
    /// A live view of each endpoint's rate and share, worst share first; q quits.
    Top {
        #[arg(long, default_value_t = 3)]
        window: u64,
        #[arg(long)]
        service: Option<String>,
    },
    /// Why traffic to a Service address, a Service or from a client IP is or is not balanced.
    Explain {
        /// VIP:PORT, a Service name, or a client's IP address.
        target: String,
    },
}

fn main() {
    let args = Args::parse();
    let code = match run(&args) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            eprintln!("rotor: {e}");
            e.exit_code()
        }
    };
    std::process::exit(code);
}

fn run(args: &Args) -> Result<(), CliError> {
    let output = match args.command {
        Command::Status { json: true } => Output::Json,
        _ => args.output,
    };
    let socket = args.admin.as_path();
    if let Command::Top { window, service } = &args.command {
        return top::run(socket, *window, service.as_deref());
    }
    loop {
        let text = once(socket, &args.command, output)?;
        if !args.watch {
            print!("{text}");
            return Ok(());
        }
        let mut out = std::io::stdout();
        let clear = if output == Output::Table {
            "\x1b[H\x1b[2J"
        } else {
            ""
        };
        let _ = write!(out, "{clear}{text}");
        let _ = out.flush();
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn json<T: Serialize>(doc: &T, output: Output) -> Option<String> {
    (output == Output::Json).then(|| serde_json::to_string(doc).unwrap_or_default() + "\n")
}

/// One answer, printed as asked.
fn once(socket: &Path, command: &Command, output: Output) -> Result<String, CliError> {
    Ok(match command {
        Command::Status { .. } => {
            let s: Status = ask(socket, &Request::Status)?;
            json(&s, output).unwrap_or_else(|| render::status_table(&s))
        }
        Command::Services { window } | Command::Endpoints { window, .. } => {
            let wanted = match command {
                Command::Endpoints { service, .. } => Some(service.as_str()),
                _ => None,
            };
            let r: EndpointsReport = ask(socket, &Request::Endpoints { window_s: *window })?;
            let view = render::services_view(&r, wanted);
            if let (Some(w), true) = (wanted, view.services.is_empty()) {
                return Err(CliError::Agent(format!(
                    "no balanced Service named {w} (rotor services lists them; rotor explain {w} says why)"
                )));
            }
            json(&view, output).unwrap_or_else(|| render::services_table(&view))
        }
        Command::Conns { service } => {
            let c: Vec<ConnStatus> = ask(
                socket,
                &Request::Conns {
                    service: service.clone(),
                },
            )?;
            let rows = render::conn_rows(&c);
            json(&rows, output).unwrap_or_else(|| render::conns_table(&rows))
        }
        Command::Explain { target } => {
            let e: Explanation = ask(
                socket,
                &Request::Explain {
                    target: target.clone(),
                },
            )?;
            json(&e, output).unwrap_or_else(|| render_more::explain_table(&e))
        }
        Command::Top { .. } => String::new(),
    })
}
