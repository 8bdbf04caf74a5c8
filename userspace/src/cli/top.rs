//! `rotor top`: the per-endpoint rates and shares, redrawn every second on
//! the terminal's alternate screen until `q` (or Ctrl-C) is pressed.

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use super::client::{ask, CliError};
use super::render::services_view;
use super::render_more::top_frame;
use crate::agent::admin::wire::{EndpointsReport, Request};

const REFRESH: Duration = Duration::from_secs(1);
/// Ctrl-C arrives as a byte in raw mode, not as SIGINT.
const CTRL_C: u8 = 3;

pub fn run(socket: &std::path::Path, window_s: u64, service: Option<&str>) -> Result<(), CliError> {
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let raw = crate::sys::RawTerminal::enter(&stdin)
        .map_err(|e| CliError::Usage(format!("rotor top needs a terminal: {e}")))?;
    let (keys_tx, keys) = mpsc::channel();
    // The thread blocks in read() until a key; it ends with the process.
    std::thread::spawn(move || {
        let mut b = [0u8; 1];
        while let Ok(1) = std::io::stdin().read(&mut b) {
            if keys_tx.send(b[0]).is_err() {
                break;
            }
        }
    });
    let _ = write!(stdout, "\x1b[?1049h\x1b[?25l");
    let result = (|| loop {
        let report: EndpointsReport = ask(socket, &Request::Endpoints { window_s })?;
        let width = crate::sys::terminal_width(&stdout).unwrap_or(120) as usize;
        let frame = top_frame(&services_view(&report, service), width);
        let _ = write!(stdout, "\x1b[H\x1b[2J{frame}");
        let _ = stdout.flush();
        match keys.recv_timeout(REFRESH) {
            Ok(b'q' | b'Q' | CTRL_C) => return Ok(()),
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        }
    })();
    let _ = write!(stdout, "\x1b[?25h\x1b[?1049l");
    let _ = stdout.flush();
    drop(raw);
    result
}
