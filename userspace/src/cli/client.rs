//! One request to the agent's admin socket, and what can go wrong, each
//! with its exit code.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::agent::admin::wire::{Reply, Request};

/// How long the agent may take to answer.
const ANSWER_LIMIT: Duration = Duration::from_secs(30);

/// Exit codes (README, CLI).
pub const EXIT_OK: i32 = 0;
pub const EXIT_AGENT_ERROR: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_NOT_RUNNING: i32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("cannot reach the agent at {}: {source}. Is rotor-agent running on this node (it creates the socket when it starts, and removes it when it stops)? The socket is root-only (mode 0600): run as root. Another socket: --admin PATH", .path.display())]
    NotRunning {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the agent at {} did not answer: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the agent answered something this CLI cannot read ({source}); is it the same version? {}", head(.body))]
    Parse {
        body: String,
        source: serde_json::Error,
    },
    #[error("the agent refused the request: {0}")]
    Agent(String),
    #[error("{0}")]
    Usage(String),
}

fn head(body: &str) -> String {
    body.chars().take(200).collect()
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::NotRunning { .. } => EXIT_NOT_RUNNING,
            CliError::Usage(_) => EXIT_USAGE,
            _ => EXIT_AGENT_ERROR,
        }
    }
}

/// Sends `request` and reads the answer to the end.
pub fn ask<T: DeserializeOwned>(socket: &Path, request: &Request) -> Result<T, CliError> {
    let body = ask_raw(socket, request)?;
    match serde_json::from_slice::<Reply<T>>(&body) {
        Ok(Reply::Ok(doc)) => Ok(doc),
        Ok(Reply::Error(e)) => Err(CliError::Agent(e)),
        Err(source) => Err(CliError::Parse {
            body: String::from_utf8_lossy(&body).into_owned(),
            source,
        }),
    }
}

/// The answer's bytes (`{"ok": ...}` or `{"error": ...}`).
pub fn ask_raw(socket: &Path, request: &Request) -> Result<Vec<u8>, CliError> {
    let not_running = |source| CliError::NotRunning {
        path: socket.to_path_buf(),
        source,
    };
    let io = |source| CliError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let mut sock = UnixStream::connect(socket).map_err(not_running)?;
    sock.set_read_timeout(Some(ANSWER_LIMIT)).map_err(io)?;
    sock.write_all(request.line().as_bytes()).map_err(io)?;
    sock.shutdown(std::net::Shutdown::Write).map_err(io)?;
    let mut body = Vec::new();
    sock.read_to_end(&mut body).map_err(io)?;
    if body.is_empty() {
        return Err(io(std::io::Error::other(
            "empty answer (the agent stopped?)",
        )));
    }
    Ok(body)
}
