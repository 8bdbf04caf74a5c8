//! `rotor-peer`: HTTP/2 peers for rotor's robustness tests that rotor did not
//! write its data path for:
//!
//! * `grpc-server` / `grpc-client`: tonic 0.14 (hyper's and the h2 crate's
//!   HTTP/2), serving and calling `rotor.test.Echo` (`tests/peers/echo.proto`).
//! * `hyper`: a hyper 1 HTTP/2 (prior knowledge) client: many streams on one
//!   connection, large bodies both ways, many and large request headers.
//! * `interop-server` / `interop-client`: tonic serving and calling
//!   `rotor.interop.TestService` (`tests/peers/interop.proto`), for the
//!   differential gRPC suite.
//! * `badinput`: malformed HTTP/2 over many connections (named cases and a
//!   seeded generator), with what the server answered to each.
//!
//! Every client prints one JSON report on stdout and exits 0 whenever it could
//! report; the tests decide what counts as a failure.

mod badinput;
mod grpc;
mod hyper_client;
mod interop;
mod interop_client;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "rotor-peer", about = "HTTP/2 and gRPC test peers for rotor")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// tonic gRPC server for rotor.test.Echo; prints `listening ADDR` when bound.
    GrpcServer(grpc::ServerArgs),
    /// tonic gRPC client over one channel (one HTTP/2 connection): prints a JSON report.
    GrpcClient(grpc::ClientArgs),
    /// tonic gRPC server for rotor.interop.TestService; prints `listening ADDR` when bound.
    InteropServer(interop::ServerArgs),
    /// tonic client running the interop cases over one channel: prints a JSON report.
    InteropClient(interop_client::ClientArgs),
    /// hyper HTTP/2 client over one connection: prints a JSON report.
    Hyper(hyper_client::Args),
    /// Malformed HTTP/2: named cases or generated ones; prints a JSON report.
    Badinput(badinput::Args),
}

fn main() -> anyhow::Result<()> {
    // ROTOR_PEER_LOG=h2=trace,hyper=debug: the HTTP/2 stacks' own logs on stderr.
    if let Ok(filter) = std::env::var("ROTOR_PEER_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .init();
    }
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Badinput(a) => badinput::main(a),
        cmd => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            rt.block_on(async move {
                match cmd {
                    Cmd::GrpcServer(a) => grpc::serve(a).await,
                    Cmd::GrpcClient(a) => grpc::client(a).await,
                    Cmd::InteropServer(a) => interop::serve(a).await,
                    Cmd::InteropClient(a) => interop_client::run(a).await,
                    Cmd::Hyper(a) => hyper_client::run(a).await,
                    Cmd::Badinput(_) => unreachable!(),
                }
            })
        }
    }
}
