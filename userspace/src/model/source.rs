//! Where the model stands with its source, for `rotor status`: while the
//! Kubernetes API server is unreachable the agent keeps balancing with the
//! last model it had, and says since when and why.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SourceState {
    /// Not listed yet (the agent is not ready).
    #[default]
    Listing,
    /// Listed, and the last request to the source succeeded.
    Synced,
    /// Requests fail since `for_s` seconds; the last model stays in force.
    Unreachable,
    /// The watch task ended: no change will be seen until a restart.
    Ended,
}

/// The state as `rotor status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SourceReport {
    /// `kubernetes` or `file`.
    pub kind: String,
    pub state: SourceState,
    /// Seconds in this state.
    pub for_s: u64,
    /// The last error, while unreachable (or while listing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl std::fmt::Display for SourceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.kind.is_empty() {
            "source"
        } else {
            &self.kind
        };
        match self.state {
            SourceState::Listing => write!(f, "{kind}: listing for {}s", self.for_s)?,
            SourceState::Synced => write!(f, "{kind}: synced")?,
            SourceState::Unreachable => write!(
                f,
                "{kind}: unreachable for {}s, balancing with the last state",
                self.for_s
            )?,
            SourceState::Ended => write!(f, "{kind}: watch ended {}s ago", self.for_s)?,
        }
        if let Some(e) = &self.error {
            write!(f, ": {e}")?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Inner {
    state: SourceState,
    since: Instant,
    error: Option<String>,
}

/// Shared between the source's task (writes) and the admin socket (reads).
#[derive(Debug, Clone)]
pub struct SourceHealth {
    kind: &'static str,
    inner: Arc<Mutex<Inner>>,
}

impl SourceHealth {
    pub fn new(kind: &'static str) -> Self {
        SourceHealth {
            kind,
            inner: Arc::new(Mutex::new(Inner {
                state: SourceState::Listing,
                since: Instant::now(),
                error: None,
            })),
        }
    }

    fn set(&self, state: SourceState, error: Option<String>) {
        let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if i.state != state {
            i.state = state;
            i.since = Instant::now();
        }
        i.error = error;
    }

    /// A request succeeded (after the first list).
    pub fn synced(&self) {
        self.set(SourceState::Synced, None);
    }

    /// A request failed: unreachable once listed; before that, still listing.
    pub fn failed(&self, error: String) {
        let listing = self.state() == SourceState::Listing;
        let state = if listing {
            SourceState::Listing
        } else {
            SourceState::Unreachable
        };
        self.set(state, Some(error));
    }

    pub fn ended(&self) {
        self.set(SourceState::Ended, None);
    }

    pub fn state(&self) -> SourceState {
        self.inner.lock().map(|i| i.state).unwrap_or_default()
    }

    /// The last error recorded, if the state has one.
    pub fn last_error(&self) -> Option<String> {
        self.inner.lock().ok().and_then(|i| i.error.clone())
    }

    pub fn report(&self) -> SourceReport {
        let i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        SourceReport {
            kind: self.kind.into(),
            state: i.state,
            for_s: i.since.elapsed().as_secs(),
            error: i.error.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_only_after_the_first_list_and_back_when_a_request_succeeds() {
        let h = SourceHealth::new("kubernetes");
        h.failed("connection refused".into());
        assert_eq!(h.state(), SourceState::Listing);
        h.synced();
        assert_eq!(h.report().to_string(), "kubernetes: synced");
        h.failed("connection refused".into());
        let r = h.report();
        assert_eq!(r.state, SourceState::Unreachable);
        assert!(
            r.to_string().starts_with(
                "kubernetes: unreachable for 0s, balancing with the last state: connection refused"
            ),
            "{r}"
        );
        h.synced();
        assert_eq!((h.state(), h.last_error()), (SourceState::Synced, None));
    }
}
