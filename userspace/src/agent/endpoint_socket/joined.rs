//! An upstream socket once it is in the kernel's maps: what its verdict
//! passed and parsed, against what the agent read (liveness.rs).

use std::time::Duration;

use tokio::net::TcpStream;

use super::SETTLE_LIMIT;

/// An upstream socket in the kernel's maps, and what the agent read of it
/// before it joined them.
pub struct Joined {
    pub dp: std::sync::Arc<crate::ebpf::Datapath>,
    pub cookie: u64,
    pub read_bytes: u64,
    /// Where the kernel counts this upstream (`conns[conn].up[slot]`), and
    /// the slot the reader's events name.
    pub conn: u32,
    pub slot: u32,
}

impl Joined {
    /// Messages the upstream verdict has passed to the agent.
    pub(super) fn passed(&self) -> u32 {
        self.dp.conns.get(self.conn).map_or(0, |c| {
            c.up[self.slot as usize % crate::ebpf::abi::MAX_UPSTREAMS]
                .passed
                .load(std::sync::atomic::Ordering::SeqCst)
        })
    }

    /// Whether the endpoint's bytes wait unparsed and it should be made to
    /// send more (liveness.rs).
    pub(super) fn unparsed(
        &self,
        stream: &TcpStream,
        watch: &mut crate::agent::liveness::ParserWatch,
    ) -> bool {
        let Ok(received) = crate::ebpf::tcp_received(stream) else {
            return false;
        };
        // No parse state yet: the parser has not run once, the case this is for.
        let carried = self
            .dp
            .parse_state(self.cookie)
            .map_or(0, |st| crate::ebpf::verdict_bytes(&st));
        watch.should_kick(received.bytes.wrapping_sub(self.read_bytes), carried)
    }

    /// Returns once every byte TCP received after the handshake has been
    /// through the upstream verdict, or SETTLE_LIMIT passed. A reset
    /// connection's parser is not woken by new data any more, only by work
    /// already queued: once the verdict has not moved for RESET_QUIET, the
    /// rest will not come.
    pub(super) async fn settle(&self, stream: &TcpStream) {
        const RESET_QUIET: u32 = 10; // polls of 2 ms
        let start = tokio::time::Instant::now();
        let (mut last, mut quiet) = (None, 0);
        while start.elapsed() < SETTLE_LIMIT {
            let Ok(received) = crate::ebpf::tcp_received(stream) else {
                return;
            };
            let carried = self
                .dp
                .parse_state(self.cookie)
                .map_or(0, |st| crate::ebpf::verdict_bytes(&st));
            if received.bytes.wrapping_sub(self.read_bytes) as u32 == carried {
                return;
            }
            quiet = if last == Some(carried) { quiet + 1 } else { 0 };
            last = Some(carried);
            if received.reset && quiet >= RESET_QUIET {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}
