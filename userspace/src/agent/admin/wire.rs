//! What the admin socket answers, as both sides read it: the agent writes
//! these as JSON, the `rotor` CLI parses them.

use serde::{Deserialize, Serialize};

use crate::agent::budget::BudgetStatus;
use crate::agent::metrics_counts::EndpointTotals;
use crate::agent::pool::EndpointConnections;
use crate::agent::registry::ConnInfo;
use crate::ebpf::Loaded;
use crate::model::SourceReport;

#[derive(Debug, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    pub vip: String,
    /// How its streams pick an endpoint (`Policy::name`).
    #[serde(default)]
    pub policy: String,
    pub endpoints: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ConnStatus {
    #[serde(flatten)]
    pub info: ConnInfo,
    /// The kernel's counters for this connection.
    pub kernel: ConnCounters,
}

impl ConnStatus {
    /// `kernel` (the fast path is open), `agent`, or `spliced`.
    pub fn path(&self) -> &'static str {
        match (&self.info.spliced, self.info.fast) {
            (Some(_), _) => "spliced",
            (None, true) => "kernel",
            (None, false) => "agent",
        }
    }
}

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct ConnCounters {
    pub flags: u32,
    pub client_recv: u64,
    pub client_limit: u64,
    pub upstreams: Vec<UpstreamCounters>,
}

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct UpstreamCounters {
    pub slot: u32,
    pub state: u32,
    /// Streams open on this upstream now.
    pub streams: u32,
    /// DATA bytes sent to the endpoint, and what its window allows.
    pub req_data: u64,
    pub req_limit: u64,
    /// DATA bytes the endpoint sent.
    pub resp_data: u64,
    /// The endpoint's responses go through the agent now (beyond the
    /// client's window).
    pub diverted: bool,
    /// The divert's bookkeeping (upstream_skb.c): messages handed to the
    /// agent, the last stream frame among them, what the agent had handled
    /// when it asked for release, and whether that ask is pending.
    pub passed: u32,
    pub last_diverted: u32,
    pub consumed: u32,
    pub release: bool,
}

/// The agent itself: what it runs on and what it attached.
#[derive(Debug, Serialize, Deserialize, Default)]
pub struct AgentInfo {
    pub version: String,
    pub pid: u32,
    pub uptime_s: u64,
    #[serde(flatten)]
    pub loaded: Loaded,
    /// The connect programs are attached: false once the agent stops.
    pub redirecting: bool,
    /// New connections keep their original path: the agent's open files
    /// are near its limit (agent/files.rs).
    #[serde(default)]
    pub new_clients_gated: bool,
}

/// `rotor status`: the whole state (what a client that sends no request
/// gets, as before the request protocol).
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub services: Vec<ServiceStatus>,
    pub connections: Vec<ConnStatus>,
    pub open_streams: usize,
    pub kernel: Vec<(String, u64)>,
    /// What the agent queues, against --max-queued-bytes.
    #[serde(default)]
    pub budget: BudgetStatus,
    /// Where the model stands with its source (synced, unreachable since when).
    #[serde(default)]
    pub source: SourceReport,
    /// Per-endpoint stream totals, the kernel's and the agent's (also on
    /// `/metrics`).
    #[serde(default)]
    pub endpoints: Vec<EndpointTotals>,
    #[serde(default)]
    pub agent: AgentInfo,
    /// Connections from this node to each endpoint: client connections'
    /// own, and shared ones (agent/pool.rs).
    #[serde(default)]
    pub upstreams: Vec<EndpointConnections>,
}

/// `rotor services` / `rotor endpoints`: each Service's endpoints with the
/// streams they got over the last `window_s` seconds.
#[derive(Debug, Serialize, Deserialize, Default)]
pub struct EndpointsReport {
    /// The window the `window` counts cover (two samples of the counters
    /// this far apart; 0 when the agent has no sample yet).
    pub window_s: f64,
    pub services: Vec<ServiceReport>,
}

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct ServiceReport {
    pub name: String,
    pub vip: String,
    pub policy: String,
    /// Endpoints in the Service now (its fair share is 1 / this).
    pub members: usize,
    /// Connections by path: kernel, agent, spliced.
    pub connections: [u64; 3],
    pub endpoints: Vec<EndpointReport>,
}

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct EndpointReport {
    /// `ready`, `failing` (in the Service, its upstreams fail: `why`),
    /// `draining` (left the Service, streams still open), `gone`.
    pub state: String,
    /// Streams opened to it in the window.
    pub window: u64,
    pub totals: EndpointTotals,
}

impl ServiceReport {
    pub fn window_total(&self) -> u64 {
        self.endpoints.iter().map(|e| e.window).sum()
    }
}

/// `rotor explain`: what the agent can tell about a target.
#[derive(Debug, Serialize, Deserialize, Default)]
pub struct Explanation {
    pub target: String,
    /// What the target was taken for: service, vip, client.
    pub kind: String,
    /// One line: balanced, not balanced, partly.
    pub verdict: String,
    pub findings: Vec<Finding>,
    /// Connections per endpoint the agent did not make, if a Service's
    /// address or endpoints are known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skew: Option<Skew>,
}

#[derive(Debug, Serialize, Deserialize, Default, Clone, PartialEq)]
pub struct Finding {
    /// `ok`, `problem`, or `unknown` (the agent cannot know).
    pub level: String,
    pub text: String,
}

#[derive(Debug, Serialize, Deserialize, Default)]
pub struct Skew {
    /// Where the counts come from.
    pub source: String,
    /// Endpoint, connections from the agent, connections from anything else.
    pub endpoints: Vec<(String, u64, u64)>,
    /// Connections to the Service address that conntrack saw reach each endpoint.
    pub conntrack: Vec<(String, u64)>,
}

/// One request on the admin socket: one line, a verb and its argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Status,
    /// Rates over about this many seconds (1–10).
    Endpoints {
        window_s: u64,
    },
    Conns {
        service: Option<String>,
    },
    Explain {
        target: String,
    },
}

impl Request {
    pub fn parse(line: &str) -> Result<Request, String> {
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or("status");
        let arg = words.next().map(str::to_string);
        if words.next().is_some() {
            return Err(format!("one argument at most: {line:?}"));
        }
        match verb {
            "status" => Ok(Request::Status),
            "endpoints" => {
                let window_s = match arg {
                    Some(a) => a.parse().map_err(|_| format!("window {a:?}: not seconds"))?,
                    None => 10,
                };
                Ok(Request::Endpoints {
                    window_s: window_s.clamp(1, 10),
                })
            }
            "conns" => Ok(Request::Conns { service: arg }),
            "explain" => match arg {
                Some(target) => Ok(Request::Explain { target }),
                None => Err("explain needs a target".into()),
            },
            other => Err(format!(
                "unknown request {other:?} (status, endpoints [SECONDS], conns [SERVICE], explain TARGET)"
            )),
        }
    }

    pub fn line(&self) -> String {
        match self {
            Request::Status => "status\n".into(),
            Request::Endpoints { window_s } => format!("endpoints {window_s}\n"),
            Request::Conns { service: None } => "conns\n".into(),
            Request::Conns { service: Some(s) } => format!("conns {s}\n"),
            Request::Explain { target } => format!("explain {target}\n"),
        }
    }
}

/// The answer to a request: `{"ok": ...}` or `{"error": "..."}`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply<T> {
    Ok(T),
    Error(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_say_why() {
        for r in [
            Request::Status,
            Request::Endpoints { window_s: 3 },
            Request::Conns { service: None },
            Request::Conns {
                service: Some("ns/a:80".into()),
            },
            Request::Explain {
                target: "10.96.0.10:8080".into(),
            },
        ] {
            assert_eq!(Request::parse(&r.line()), Ok(r.clone()));
        }
        assert_eq!(Request::parse(""), Ok(Request::Status));
        assert_eq!(
            Request::parse("endpoints 60"),
            Ok(Request::Endpoints { window_s: 10 })
        );
        assert!(Request::parse("explain").unwrap_err().contains("target"));
        assert!(Request::parse("bogus")
            .unwrap_err()
            .contains("unknown request"));
        assert!(Request::parse("conns a b").is_err());
    }
}
