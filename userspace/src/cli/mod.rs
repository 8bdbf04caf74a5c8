//! The `rotor` CLI: asking the agent (client), turning its answers into
//! rows and tables (render, explain), and the live view (top).

pub mod client;
pub mod render;
pub mod render_more;
pub mod top;

#[cfg(test)]
mod tests;

/// Output format of every verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}
