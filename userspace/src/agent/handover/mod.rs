//! Live handover of connections to the agent that replaces this one
//! (issue 13; README, "Upgrades and stopping").
//!
//! The channel (`channel.rs`): messages (`wire.rs`) are length-framed JSON
//! with the descriptors they name attached by SCM_RIGHTS
//! (`crate::sys::scm`), and both sides open with a `Hello` naming the state
//! format they speak; any difference, like any failure of the channel,
//! means the GOAWAY drain (drain.rs, client/shutdown.rs), so no byte
//! depends on the handover.
//!
//! On SIGTERM with a successor of the same format, the old agent
//! (`give.rs`) sends its kernel generation (`Message::Generation`: the
//! maps' descriptors, ebpf/datapath/adopt.rs) and then each connection as
//! it reaches its quiet point (`Message::Conn`: the client's and the
//! upstreams' sockets, and `state::ConnState`; agent/client/handover.rs).
//! The successor (`adopt.rs`) runs the generation beside its own and each
//! connection in it, and answers `Adopted` or `Refused` (then the old agent
//! drains that one).

pub mod adopt;
pub mod channel;
pub mod give;
pub mod state;
pub mod wire;

use serde::{Deserialize, Serialize};

/// The version of everything a handover carries: the messages, the
/// per-connection state, and the kernel maps' layout (ebpf/lib/maps.h) the
/// adopted generation is read with. Raise it with any change to them: an
/// agent never adopts what it cannot read exactly.
pub const STATE_FORMAT: u32 = 1;

/// Everything one agent says to the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Message {
    /// Each side's first message.
    Hello {
        /// STATE_FORMAT of the sender.
        format: u32,
        /// The sender's version, for the logs.
        agent: String,
        /// The sender adopts upstreams that go through the multiplexer of
        /// the agent before it (`state::SlotState::through_multiplexer`).
        /// Absent from agents that predate shared upstreams: they are never
        /// offered one, so the state format stays the same.
        #[serde(default)]
        adopts_shared: bool,
    },
    /// The old agent's kernel generation: one descriptor per map name, in
    /// order, then `links` bpf link descriptors. Holding them keeps the
    /// maps, the sk_skb programs attached to the socket hashes and the
    /// cgroup programs alive after the old agent exits.
    Generation { maps: Vec<String>, links: u32 },
    /// One connection at its quiet point: the accepted client socket, then
    /// one socket per upstream slot named, in order; its state is read
    /// only by an agent of the same `STATE_FORMAT`.
    Conn {
        id: u32,
        slots: Vec<u32>,
        state: serde_json::Value,
    },
    /// The successor runs the connection now: the old agent forgets it
    /// without closing anything.
    Adopted { id: u32 },
    /// The successor cannot: the old agent drains it with GOAWAY.
    Refused { id: u32, reason: String },
    /// Nothing more comes from this side.
    Done,
}

impl Message {
    /// How many descriptors come with the message: a message with any
    /// other number is refused whole (wire.rs).
    pub fn descriptors(&self) -> usize {
        match self {
            Message::Generation { maps, links } => maps.len() + *links as usize,
            Message::Conn { slots, .. } => 1 + slots.len(),
            _ => 0,
        }
    }

    pub fn hello() -> Self {
        Message::Hello {
            format: STATE_FORMAT,
            agent: env!("CARGO_PKG_VERSION").to_string(),
            adopts_shared: true,
        }
    }

    /// Whether a successor that said this hello adopts upstreams through
    /// this agent's multiplexers.
    pub fn adopts_shared(&self) -> bool {
        matches!(
            self,
            Message::Hello {
                adopts_shared: true,
                ..
            }
        )
    }
}

/// What the old agent does with its connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Hand them over, each at its quiet point.
    HandOver,
    /// Today's GOAWAY drain, for this reason (logged).
    Drain(String),
}

/// The plan once the successor's `Hello` is in (or did not come).
pub fn plan(ours: u32, theirs: Result<&Message, &wire::WireError>) -> Plan {
    match theirs {
        Ok(Message::Hello { format, .. }) if *format == ours => Plan::HandOver,
        Ok(Message::Hello { format, agent, .. }) => Plan::Drain(format!(
            "the new agent ({agent}) speaks state format {format}, this one {ours}"
        )),
        Ok(other) => Plan::Drain(format!("the new agent opened with {other:?}, not a hello")),
        Err(e) => Plan::Drain(format!("no handover channel: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_state_format_is_handed_over() {
        assert_eq!(plan(STATE_FORMAT, Ok(&Message::hello())), Plan::HandOver);
        let newer = Message::Hello {
            format: STATE_FORMAT + 1,
            agent: "9.9.9".into(),
            adopts_shared: true,
        };
        let Plan::Drain(why) = plan(STATE_FORMAT, Ok(&newer)) else {
            panic!("a different format was handed over")
        };
        assert!(why.contains("9.9.9") && why.contains(&format!("{}", STATE_FORMAT + 1)));
        assert!(matches!(
            plan(STATE_FORMAT, Ok(&Message::Done)),
            Plan::Drain(_)
        ));
        let closed = wire::WireError::Closed;
        assert!(matches!(plan(STATE_FORMAT, Err(&closed)), Plan::Drain(_)));
    }

    #[test]
    fn an_agent_before_shared_upstreams_is_not_offered_one() {
        // what such an agent says: no `adopts_shared`
        let old: Message =
            serde_json::from_str(r#"{"kind":"hello","format":1,"agent":"0.1.0"}"#).unwrap();
        assert!(!old.adopts_shared());
        assert_eq!(plan(STATE_FORMAT, Ok(&old)), Plan::HandOver);
        assert!(Message::hello().adopts_shared());
        // and it reads ours, the field it does not know left aside
        let ours = serde_json::to_value(Message::hello()).unwrap();
        assert_eq!(ours["adopts_shared"], true);
    }

    #[test]
    fn descriptors_each_message_carries() {
        let g = Message::Generation {
            maps: vec!["conns".into(), "agent_socks".into()],
            links: 3,
        };
        assert_eq!(g.descriptors(), 5);
        let c = Message::Conn {
            id: 7,
            slots: vec![0, 2],
            state: serde_json::json!({}),
        };
        assert_eq!(c.descriptors(), 3);
        assert_eq!(Message::hello().descriptors(), 0);
    }
}
