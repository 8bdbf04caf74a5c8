//! `TestBed`: a topology, a test cgroup and (optionally) the agent, dropped in
//! the right order: agent, then cgroup, then namespaces.

use anyhow::{bail, Context, Result};

use crate::agent::Agent;
use crate::cgroup::TestCgroup;
use crate::load::{run_load, spawn_load, LoadSpec, RunningLoad};
use crate::loadgen::LoadReport;
use crate::topology::Topology;

/// Everything one test needs. Field order is drop order.
#[derive(Debug)]
pub struct TestBed {
    pub agent: Option<Agent>,
    pub cgroup: TestCgroup,
    pub topo: Topology,
}

impl TestBed {
    /// Topology with `n_backends` serving backends and a test cgroup; no agent.
    pub fn new(n_backends: usize) -> Result<TestBed> {
        crate::environment_ok()?;
        let topo = Topology::new(n_backends).context("building topology")?;
        let cgroup = TestCgroup::create().context("creating test cgroup")?;
        Ok(TestBed {
            agent: None,
            cgroup,
            topo,
        })
    }

    /// Like [`TestBed::new`], with the agent started on every backend.
    pub fn with_agent(n_backends: usize) -> Result<TestBed> {
        let mut bed = TestBed::new(n_backends)?;
        bed.start_agent()?;
        Ok(bed)
    }

    /// Starts the agent with all current backends as endpoints.
    pub fn start_agent(&mut self) -> Result<()> {
        if self.agent.is_some() {
            bail!("agent already running");
        }
        self.agent = Some(Agent::start(
            &self.topo,
            &self.cgroup,
            &self.topo.backend_addrs(),
        )?);
        Ok(())
    }

    pub fn agent(&self) -> Result<&Agent> {
        self.agent.as_ref().context("no agent running")
    }

    /// [`Agent::balanced_endpoints`] of the running agent; None without one.
    pub fn balanced_endpoints(&self, vip: std::net::SocketAddrV4) -> Option<Vec<String>> {
        self.agent.as_ref()?.balanced_endpoints(vip)
    }

    pub fn agent_mut(&mut self) -> Result<&mut Agent> {
        self.agent.as_mut().context("no agent running")
    }

    /// Runs the load client in the client namespace and the test cgroup.
    pub fn load(&self, spec: &LoadSpec) -> Result<LoadReport> {
        run_load(&self.topo, Some(&self.cgroup), spec)
    }

    /// Starts the load client in the background.
    pub fn spawn_load(&self, spec: &LoadSpec) -> Result<RunningLoad> {
        spawn_load(&self.topo, Some(&self.cgroup), spec)
    }

    /// One connection, 8 streams at a time, 3,000 requests: an error unless
    /// all succeed and `backends` served them evenly (each within 100 of its
    /// share), what per-request balancing gives and per-connection balancing
    /// does not (`balance.rs::plain_dnat_fails_the_spread_check`).
    pub fn check_balanced(&mut self, backends: &[&str]) -> Result<()> {
        let before = self.topo.request_counts()?;
        let report = self.load(&LoadSpec::whoami(1, 8, 3000))?;
        let served = self.served_since(&before)?;
        if (report.ok, report.failed) != (3000, 0) {
            bail!("{report:?}\n{}", self.diagnostics());
        }
        let counted = served.iter().map(|(k, v)| (k.as_str(), *v));
        if let Some(e) = crate::load::uneven_spread(counted, backends, 3000, 100) {
            bail!("requests the backends served: {e}\n{}", self.diagnostics());
        }
        Ok(())
    }

    /// Fails with the agent's stderr if it has died (call after a failing check).
    pub fn check_agent(&mut self) -> Result<()> {
        match self.agent.as_mut() {
            Some(a) => a.check_alive(),
            None => Ok(()),
        }
    }

    /// Per-backend request counts since `before` (from [`Topology::request_counts`]).
    pub fn served_since(&self, before: &[(String, u64)]) -> Result<Vec<(String, u64)>> {
        let now = self.topo.request_counts()?;
        Ok(now
            .into_iter()
            .map(|(name, n)| {
                let b = before
                    .iter()
                    .find(|(bn, _)| *bn == name)
                    .map_or(0, |(_, b)| *b);
                (name, n - b)
            })
            .collect())
    }

    /// Agent liveness, the end of its stderr and backend counts: for assertion messages.
    pub fn diagnostics(&mut self) -> String {
        let counts = self
            .topo
            .request_counts()
            .map(|c| format!("{c:?}"))
            .unwrap_or_else(|e| format!("{e:#}"));
        let agent = match self.agent.as_mut() {
            None => "no agent".to_string(),
            Some(a) => {
                let alive = match a.check_alive() {
                    Ok(()) => "agent running".to_string(),
                    Err(e) => format!("{e:#}"),
                };
                let err = a.stderr();
                let tail: Vec<&str> = err.lines().rev().take(20).collect();
                format!(
                    "{alive}; agent stderr (last lines):\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            }
        };
        format!("backend request counts: {counts}\n{agent}")
    }
}
