//! A sequence of scenarios on one bed, with the agent in or outside the clients' cgroup.

#[allow(unused_imports)]
use super::*;

/// Where the agent process runs relative to the clients' cgroup (the one
/// its programs attach to, `--cgroup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In the clients' cgroup, as on a node whose `--cgroup` is the root.
    Inside,
    /// In a cgroup of its own beside the clients' one, as an agent started
    /// from a shell, or a pod whose `--cgroup` names a subtree.
    Outside,
}

impl Placement {
    pub fn other(self) -> Placement {
        match self {
            Placement::Inside => Placement::Outside,
            Placement::Outside => Placement::Inside,
        }
    }
}

/// A sequence of differential scenarios on one bed; failures are collected,
/// not raised, so one run shows every scenario. [`Session::finish`] panics
/// with all failures. After a failed scenario the agent is restarted, so the
/// next scenario starts from a fresh agent instead of one left stalled.
pub struct Session {
    // Field order is drop order: the agent (in `bed`) stops before its own
    // cgroup goes.
    pub bed: TestBed,
    own_cgroup: Option<TestCgroup>,
    pub placement: Placement,
    pub label: String,
    pub verdicts: Vec<Verdict>,
}

impl Session {
    /// A session on `bed` (without an agent yet): starts the agent at `placement`.
    pub fn new(bed: TestBed, label: &str, placement: Placement) -> Result<Session> {
        let mut s = Session {
            bed,
            own_cgroup: None,
            placement,
            label: label.to_string(),
            verdicts: Vec::new(),
        };
        s.start_agent(placement)?;
        Ok(s)
    }

    /// Stops the agent, if any, and starts a fresh one (with every backend)
    /// at `placement`; returns once it printed `ready`.
    pub fn start_agent(&mut self, placement: Placement) -> Result<()> {
        self.bed.agent = None;
        match placement {
            Placement::Inside => self.bed.start_agent(),
            Placement::Outside => {
                if self.own_cgroup.is_none() {
                    self.own_cgroup = Some(TestCgroup::create().context("the agent's own cgroup")?);
                }
                let own = self.own_cgroup.as_ref().context("no own cgroup")?;
                let endpoints = self.bed.topo.backend_addrs();
                self.bed.agent = Some(Agent::start_outside(
                    &self.bed.topo,
                    &self.bed.cgroup,
                    own,
                    &endpoints,
                )?);
                Ok(())
            }
        }
    }

    /// Runs one scenario direct and through rotor, and records the verdict.
    pub fn scenario(&mut self, name: &str, client: Client, expect: Expect) {
        eprintln!("[{}] {name}: {}", self.label, client.describe());
        let v = match differential(&mut self.bed, name, &client, &expect) {
            Ok(v) => v,
            Err(e) => self.harness_error(name, &client, e),
        };
        self.record(v);
    }

    /// Records a verdict (printing it), restarting the agent after a failure.
    pub fn record(&mut self, v: Verdict) {
        eprintln!(
            "[{}] {} {}\n    direct {}\n    rotor  {}",
            self.label,
            if v.passed() { "PASS" } else { "FAIL" },
            v.name,
            v.direct.line(),
            v.rotor.line()
        );
        let failed = !v.passed();
        if failed {
            eprintln!("{}", explain(&v));
        }
        self.verdicts.push(v);
        if failed {
            if let Err(e) = self.restart_agent() {
                panic!("[{}] restarting the agent: {e:#}", self.label);
            }
        }
    }

    /// A verdict for a run the harness could not even make.
    pub fn harness_error(&mut self, name: &str, client: &Client, e: anyhow::Error) -> Verdict {
        let diagnostics = probe::report(&mut self.bed);
        Verdict {
            name: name.to_string(),
            client: client.describe(),
            direct: Outcome::default(),
            rotor: Outcome::default(),
            problems: vec![format!("harness error: {e:#}")],
            diagnostics,
        }
    }

    /// Stops the agent and starts a fresh one at the session's placement.
    pub fn restart_agent(&mut self) -> Result<()> {
        self.start_agent(self.placement)
    }

    /// Prints the table and panics with every failure.
    pub fn finish(self) {
        let t = table(&self.verdicts);
        eprintln!("[{}] results:\n{t}", self.label);
        let failed: Vec<&Verdict> = self.verdicts.iter().filter(|v| !v.passed()).collect();
        if !failed.is_empty() {
            let details: Vec<String> = failed.iter().map(|v| explain(v)).collect();
            panic!(
                "[{}] {} of {} scenarios differ through rotor:\n{t}\n{}",
                self.label,
                failed.len(),
                self.verdicts.len(),
                details.join("\n")
            );
        }
    }
}

/// Fails unless `bed` can run the clients (h2load, nghttp, Python h2, rotor-load).
pub fn clients_available() -> Result<()> {
    crate::peers::python_has(&["h2"])?;
    load_binary()?;
    for tool in ["h2load", "nghttp"] {
        if !std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .any(|d| d.join(tool).is_file())
        {
            bail!("`{tool}` not found in PATH");
        }
    }
    Ok(())
}
