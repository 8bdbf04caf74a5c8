//! The bench's topology: backends (Rust and nghttpd), the agent, HAProxy,
//! the DNAT, and the client's view of each path.

use super::*;

/// Everything that runs during the bench; field order is drop order.
pub(super) struct Bed {
    /// What is left of the time we may wait for a quiet machine.
    pub(super) quiet_budget: Duration,
    pub(super) haproxy: haproxy::HaProxy,
    pub(super) agent: Agent,
    pub(super) cgroup: TestCgroup,
    pub(super) rust: Vec<Child>,
    pub(super) counts: Vec<PathBuf>,
    pub(super) topo: Topology,
}

pub(super) fn rust_addr(k: usize) -> SocketAddrV4 {
    SocketAddrV4::new(*backend_addr(k).ip(), RUST_PORT)
}

pub(super) fn rust_endpoints(n: usize) -> Vec<SocketAddrV4> {
    (1..=n).map(rust_addr).collect()
}

pub(super) fn nghttpd_endpoints(n: usize) -> Vec<SocketAddrV4> {
    (1..=n).map(backend_addr).collect()
}

pub(super) fn rust_service(n: usize) -> dnat::Service {
    dnat::Service {
        tag: "RUST".into(),
        vip: VIP,
        endpoints: rust_endpoints(n),
    }
}

/// The agent's config: Service `echo` (VIP) over `n` Rust backends, Service
/// `nghttpd` (VIP_NGHTTPD) over the nghttpd backends.
pub(super) fn agent_yaml(n: usize) -> String {
    let list = |v: Vec<SocketAddrV4>| {
        v.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "services:\n  - name: echo\n    vip: {VIP}\n    policy: round-robin\n    endpoints: [{}]\n  - name: nghttpd\n    vip: {VIP_NGHTTPD}\n    policy: round-robin\n    endpoints: [{}]\n",
        list(rust_endpoints(n)),
        list(nghttpd_endpoints(INITIAL))
    )
}

impl Bed {
    pub(super) fn setup(rotor_args: &[String]) -> Result<Bed> {
        rotor_testbed::environment_ok()?;
        if !has_command("haproxy") {
            bail!("haproxy not found: `apt-get install haproxy` (cargo xtask bench installs it)");
        }
        let mut topo = Topology::with_counting(INITIAL, false).context("building topology")?;
        for _ in INITIAL..SCALED {
            topo.add_backend()?;
        }
        let bin = find_binary("rotor-h2-backend", "ROTOR_H2_BACKEND_BIN")?;
        let mut rust = Vec::new();
        let mut counts = Vec::new();
        for k in 1..=SCALED {
            let name = format!("be{k}");
            let ns = topo.backend(k)?.netns().to_string();
            let count = topo.dir().join(format!("rust-{name}.count"));
            let mut cmd = netns_command(&ns, None, &bin);
            cmd.arg("--listen")
                .arg(rust_addr(k).to_string())
                .arg("--name")
                .arg(&name)
                .arg("--count-file")
                .arg(&count);
            let mut child = Child::spawn(&format!("rotor-h2-backend-{name}"), cmd, topo.dir())?;
            child.wait_for_line(Stream::Stdout, "listening on", Duration::from_secs(10))?;
            rust.push(child);
            counts.push(count);
        }
        dnat::restore(
            topo.client(),
            &dnat::install_rules(&[
                rust_service(INITIAL),
                dnat::Service {
                    tag: "NGHTTPD".into(),
                    vip: VIP_NGHTTPD,
                    endpoints: nghttpd_endpoints(INITIAL),
                },
            ]),
        )?;
        let cgroup = TestCgroup::create().context("creating cgroup")?;
        let args: Vec<&str> = rotor_args.iter().map(String::as_str).collect();
        let agent = Agent::start_with_args(&topo, &cgroup, &rust_endpoints(INITIAL), &args)
            .context("starting rotor-agent")?;
        let haproxy = haproxy::HaProxy::start(
            topo.node_ns(),
            topo.dir(),
            vec![
                haproxy::Pool {
                    name: "rust".into(),
                    bind: HAPROXY_RUST,
                    servers: rust_endpoints(SCALED),
                    enabled: INITIAL,
                },
                haproxy::Pool {
                    name: "nghttpd".into(),
                    bind: HAPROXY_NGHTTPD,
                    servers: nghttpd_endpoints(INITIAL),
                    enabled: INITIAL,
                },
            ],
        )?;
        let bed = Bed {
            quiet_budget: Duration::ZERO,
            haproxy,
            agent,
            cgroup,
            rust,
            counts,
            topo,
        };
        // The agent started with `echo` alone; the config adds `nghttpd`.
        bed.set_agent_endpoints(INITIAL, "nghttpd")?;
        Ok(bed)
    }

    /// Rewrites the agent's config (atomically) and waits until it logged
    /// `changed` as configured (the agent logs only the Services that changed).
    pub(super) fn set_agent_endpoints(&self, n: usize, changed: &str) -> Result<()> {
        let want = format!("service={changed} ");
        let logged = |log: &str| {
            log.lines()
                .filter(|l| l.contains("service configured") && l.contains(&want))
                .count()
        };
        let before = logged(&self.agent.stderr_plain());
        let path = self.agent.config_path();
        let tmp = path.with_extension("yaml.bench");
        std::fs::write(&tmp, agent_yaml(n))
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
        let deadline = Instant::now() + Duration::from_secs(5);
        while logged(&self.agent.stderr_plain()) <= before {
            if Instant::now() > deadline {
                bail!(
                    "rotor-agent did not apply its new config within 5 s:\n{}",
                    self.agent.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    pub(super) fn read_counts(&self) -> Result<Vec<u64>> {
        self.counts.iter().map(|p| backend::read_count(p)).collect()
    }

    pub(super) fn addr(&self, path: Path4, servers: Servers) -> SocketAddrV4 {
        match (path, servers) {
            (Path4::Direct, Servers::Rust) => rust_addr(1),
            (Path4::Direct, Servers::Nghttpd) => backend_addr(1),
            (Path4::Dnat | Path4::Rotor, Servers::Rust) => VIP,
            (Path4::Dnat | Path4::Rotor, Servers::Nghttpd) => VIP_NGHTTPD,
            (Path4::Haproxy, Servers::Rust) => HAPROXY_RUST,
            (Path4::Haproxy, Servers::Nghttpd) => HAPROXY_NGHTTPD,
        }
    }

    /// The client runs in the agent's cgroup only on the rotor path.
    pub(super) fn cgroup_for(&self, path: Path4) -> Option<&Path> {
        (path == Path4::Rotor).then(|| self.cgroup.path())
    }

    pub(super) fn check_alive(&mut self) -> Result<()> {
        for (k, child) in self.rust.iter_mut().enumerate() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "rotor-h2-backend be{} exited ({status}):\n{}",
                    k + 1,
                    child.stderr_tail()
                );
            }
        }
        self.agent.check_alive()?;
        self.haproxy.check_alive()
    }

    /// Sets the endpoints of the Rust Service on `path` to the first `n`.
    pub(super) fn scale(&mut self, path: Path4, n: usize) -> Result<()> {
        match path {
            Path4::Direct => Ok(()),
            Path4::Dnat => dnat::restore(self.topo.client(), &dnat::update_rules(&rust_service(n))),
            Path4::Haproxy => self.haproxy.set_enabled("rust", n),
            Path4::Rotor => {
                // The change counts from the file rename; waiting for the log
                // line only makes sure it was taken.
                self.set_agent_endpoints(n, "echo")
            }
        }
    }
}
