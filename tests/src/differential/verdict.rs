//! Comparing a direct run with a run through rotor, and saying how they differ.

#[allow(unused_imports)]
use super::*;

/// The comparison of one scenario.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub name: String,
    pub client: String,
    pub direct: Outcome,
    pub rotor: Outcome,
    /// Empty when rotor's run matches the direct one.
    pub problems: Vec<String>,
    /// Agent diagnostics taken when there were problems.
    pub diagnostics: String,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The bound of a run through rotor after a direct run that took `direct`.
pub fn rotor_limit(direct: Duration) -> Duration {
    direct * TIME_FACTOR + time_slack()
}

/// What differs between a direct and a rotor run of the same scenario
/// (also what is wrong with the direct run itself).
pub fn compare(expect: &Expect, client: &Client, direct: &Outcome, rotor: &Outcome) -> Vec<String> {
    let mut p = Vec::new();
    // The reference must be right, or nothing can be compared.
    let direct_ok = direct.finished
        && direct.ok == expect.requests
        && direct.failed == 0
        && direct.resets == 0
        && direct.goaways.is_empty();
    if !direct_ok {
        p.push(format!(
            "the DIRECT run itself failed (want {} ok): {} [{}] errors {:?}",
            expect.requests,
            direct.line(),
            direct.summary,
            direct.errors
        ));
    }
    if direct
        .kernel_delta
        .get("connect_rewrite")
        .is_some_and(|n| *n > 0)
    {
        p.push(format!(
            "the direct run was redirected by the agent: kernel {:?}",
            direct.kernel_delta
        ));
    }
    let limit = rotor_limit(direct.elapsed);
    if !rotor.finished {
        p.push(format!(
            "through rotor the client did not finish within {:.1}s ({}× direct {:.2}s + {:?}): {}",
            limit.as_secs_f64(),
            TIME_FACTOR,
            direct.elapsed.as_secs_f64(),
            time_slack(),
            rotor.exit
        ));
    } else if rotor.elapsed > limit {
        p.push(format!(
            "through rotor took {:.2}s, more than {}× direct {:.2}s + {:?}",
            rotor.elapsed.as_secs_f64(),
            TIME_FACTOR,
            direct.elapsed.as_secs_f64(),
            time_slack()
        ));
    }
    if rotor
        .kernel_delta
        .get("connect_rewrite")
        .copied()
        .unwrap_or(0)
        == 0
    {
        p.push(format!(
            "the run through rotor was not redirected (no connect_rewrite): kernel {:?}",
            rotor.kernel_delta
        ));
    }
    let mut diff = |what: &str, d: String, r: String| {
        if d != r {
            p.push(format!("{what}: direct {d}, rotor {r}"));
        }
    };
    diff("ok requests", direct.ok.to_string(), rotor.ok.to_string());
    diff(
        "failed requests",
        direct.failed.to_string(),
        rotor.failed.to_string(),
    );
    diff(
        "status codes",
        format!("{:?}", direct.statuses),
        format!("{:?}", rotor.statuses),
    );
    diff(
        "response body bytes",
        format!("{:?}", direct.data_bytes),
        format!("{:?}", rotor.data_bytes),
    );
    diff(
        "RST_STREAMs received",
        direct.resets.to_string(),
        rotor.resets.to_string(),
    );
    diff(
        "GOAWAYs received",
        format!("{:?}", direct.goaways),
        format!("{:?}", rotor.goaways),
    );
    let norm = |b: &BTreeMap<String, u64>| -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for (k, v) in b {
            let key = match expect.bodies {
                Bodies::BackendNames if is_backend_name(k) => "be*".to_string(),
                _ => k.clone(),
            };
            *m.entry(key).or_insert(0) += v;
        }
        m
    };
    diff(
        "bodies",
        format!("{:?}", norm(&direct.bodies)),
        format!("{:?}", norm(&rotor.bodies)),
    );
    if expect.bodies == Bodies::BackendNames
        && client.reports_bodies()
        && rotor.ok >= 6
        && rotor.backends_seen() < 2
    {
        p.push(format!(
            "through rotor every request went to one backend: {:?}",
            rotor.bodies
        ));
    }
    if expect.kernel_path && rotor.agent_samples > 0 && rotor.agent_fast_samples == 0 {
        p.push(format!(
            "the connection never reached the kernel path: no CONN_FAST in {} samples of the \
             agent's status (last: {})",
            rotor.agent_samples, rotor.agent_during
        ));
    }
    if !rotor.errors.is_empty() && direct.errors.is_empty() {
        p.push(format!("client errors through rotor: {:?}", rotor.errors));
    }
    p
}

/// Runs a scenario direct, then through rotor, and compares.
pub fn differential(
    bed: &mut TestBed,
    name: &str,
    client: &Client,
    expect: &Expect,
) -> Result<Verdict> {
    let direct = run(bed, client, Route::Direct, direct_limit())?;
    let rotor = run(bed, client, Route::Rotor, rotor_limit(direct.elapsed))?;
    Ok(verdict(bed, name, client, expect, direct, rotor))
}

/// Compares two outcomes and, when they differ, takes the agent's diagnostics.
pub fn verdict(
    bed: &mut TestBed,
    name: &str,
    client: &Client,
    expect: &Expect,
    direct: Outcome,
    rotor: Outcome,
) -> Verdict {
    let problems = compare(expect, client, &direct, &rotor);
    let diagnostics = if problems.is_empty() {
        String::new()
    } else {
        probe::report(bed)
    };
    Verdict {
        name: name.to_string(),
        client: client.describe(),
        direct,
        rotor,
        problems,
        diagnostics,
    }
}

/// Text of a failed verdict: both outcomes, the problems, what the agent
/// showed while the client ran, and the diagnostics.
pub fn explain(v: &Verdict) -> String {
    let mut s = format!("── {} — {}\n", v.name, v.client);
    for (route, o) in [("direct", &v.direct), ("rotor ", &v.rotor)] {
        let _ = writeln!(
            s,
            "  {route}: {}\n          {}\n          statuses {:?} bodies {:?} data {:?} errors {:?}",
            o.line(),
            o.summary.replace('\n', "\n          "),
            o.statuses,
            o.bodies,
            o.data_bytes,
            o.errors
        );
    }
    let _ = writeln!(
        s,
        "  rotor kernel counters (delta): {:?}",
        v.rotor.kernel_delta
    );
    if !v.rotor.agent_during.is_empty() {
        let _ = writeln!(
            s,
            "  agent while the client ran (last sample), {}",
            v.rotor.agent_during
        );
    }
    for p in &v.problems {
        let _ = writeln!(s, "  PROBLEM: {p}");
    }
    if !v.diagnostics.is_empty() {
        let _ = writeln!(s, "  diagnostics:\n{}", clip(&v.diagnostics, 12_000));
    }
    s
}

/// A table of verdicts, one line each.
pub fn table(verdicts: &[Verdict]) -> String {
    let mut s = String::new();
    for v in verdicts {
        let _ = writeln!(
            s,
            "{} {:<58} direct: {:<40} rotor: {}",
            if v.passed() { "PASS" } else { "FAIL" },
            v.name,
            v.direct.line(),
            v.rotor.line()
        );
    }
    s
}

// ---- client output parsers ----
