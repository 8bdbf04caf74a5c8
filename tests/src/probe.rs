//! What the robustness tests look at besides the clients' reports: the
//! agent's `rotor status --json` (read from its admin socket), its memory,
//! the kernel maps it holds (through `/proc/PID/fdinfo` and bpftool), socket
//! states (`ss -tnmi` in a namespace), programs attached to a cgroup, and new
//! kernel warnings in `dmesg`. Everything here reads; nothing changes state.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use rotor_testbed::agent::Agent;
use rotor_testbed::bed::TestBed;
use rotor_testbed::process::netns_command;
use rotor_testbed::util::run;

/// The agent's status document (what `rotor status --json` prints).
pub fn status(agent: &Agent) -> Result<Value> {
    status_at(agent.admin_socket())
}

/// The status document served on `socket`.
pub fn status_at(socket: &Path) -> Result<Value> {
    let mut s = UnixStream::connect(socket)
        .with_context(|| format!("connecting to the admin socket {}", socket.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut body = String::new();
    s.read_to_string(&mut body)
        .context("reading the agent's status")?;
    serde_json::from_str(&body).with_context(|| format!("parsing the agent's status: {body:.200}"))
}

/// Live connections and open streams, from a status document.
pub fn conns_and_streams(status: &Value) -> (usize, u64) {
    let conns = status["connections"].as_array().map_or(0, Vec::len);
    let streams = status["open_streams"].as_u64().unwrap_or(0);
    (conns, streams)
}

/// The kernel counters of a status document, by name.
pub fn kernel_counters(status: &Value) -> BTreeMap<String, u64> {
    status["kernel"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|kv| Some((kv[0].as_str()?.to_string(), kv[1].as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Polls the status until no connection and no stream is left (or `limit`
/// passes); returns the last (connections, open_streams) and status.
pub fn wait_idle(agent: &Agent, limit: Duration) -> Result<((usize, u64), Value)> {
    let deadline = Instant::now() + rotor_testbed::scaled(limit);
    loop {
        let st = status(agent)?;
        let cs = conns_and_streams(&st);
        if cs == (0, 0) || Instant::now() >= deadline {
            return Ok((cs, st));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Resident memory of a process, in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS line")
}

/// CPU time (user + system) of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // After the command: state is field 3; utime and stime are fields 14 and 15.
    let utime: u64 = fields
        .get(11)
        .and_then(|v| v.parse().ok())
        .context("utime")?;
    let stime: u64 = fields
        .get(12)
        .and_then(|v| v.parse().ok())
        .context("stime")?;
    Ok(utime + stime)
}

/// CPU use of a process over `window`, in percent of one CPU.
pub fn cpu_percent(pid: u32, window: Duration) -> Result<f64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let a = cpu_ticks(pid)?;
    std::thread::sleep(window);
    let b = cpu_ticks(pid)?;
    Ok((b - a) as f64 / hz / window.as_secs_f64() * 100.0)
}

/// Open file descriptors of a process.
pub fn fd_count(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("listing /proc/{pid}/fd"))?
        .count())
}

/// One BPF map a process holds, and how full it is.
#[derive(Debug, Clone)]
pub struct MapUse {
    pub id: u64,
    pub name: String,
    pub kind: String,
    pub max_entries: u64,
    /// Entries (`bpftool map dump`), None for maps bpftool cannot dump
    /// (ring buffers) or fails to.
    pub entries: Option<u64>,
    pub memlock: u64,
}

impl std::fmt::Display for MapUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let e = self.entries.map_or("-".to_string(), |e| e.to_string());
        write!(
            f,
            "{:<16} {:<14} {:>8} / {:<8} memlock {:>6} KiB (id {})",
            self.name,
            self.kind,
            e,
            self.max_entries,
            self.memlock / 1024,
            self.id
        )
    }
}

/// Ids of the BPF maps process `pid` holds open (from /proc/PID/fdinfo).
pub fn map_ids(pid: u32) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    let dir = format!("/proc/{pid}/fdinfo");
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let Ok(entry) = entry else { continue };
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        if let Some(id) = text
            .lines()
            .find_map(|l| l.strip_prefix("map_id:"))
            .and_then(|v| v.trim().parse().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

fn bpftool_json(args: &[&str]) -> Result<Value> {
    let out = run(Command::new("bpftool").arg("-j").args(args))?;
    serde_json::from_slice(&out.stdout).context("parsing bpftool output")
}

/// The maps of process `pid` with their use. Dumping counts entries, so it
/// costs time on large maps: call it at the points a test reports.
pub fn agent_maps(pid: u32) -> Result<Vec<MapUse>> {
    let mut maps = Vec::new();
    for id in map_ids(pid)? {
        let ids = id.to_string();
        let Ok(info) = bpftool_json(&["map", "show", "id", &ids]) else {
            continue;
        };
        let kind = info["type"].as_str().unwrap_or("?").to_string();
        let entries = if matches!(kind.as_str(), "ringbuf" | "array" | "percpu_array") {
            None
        } else {
            count_entries(&ids)
        };
        maps.push(MapUse {
            id,
            name: info["name"].as_str().unwrap_or("?").to_string(),
            kind,
            max_entries: info["max_entries"].as_u64().unwrap_or(0),
            entries,
            memlock: info["bytes_memlock"].as_u64().unwrap_or(0),
        });
    }
    maps.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(maps)
}

/// Entries of a map: the length of `bpftool -j map dump` (socket maps list
/// their keys with an error for the value, which user space cannot read).
fn count_entries(id: &str) -> Option<u64> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "dump", "id", id])
        .output()
        .ok()?;
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.as_array().map(|a| a.len() as u64)
}

/// The map use of `pid` as text (one map per line), or why it is not known.
pub fn maps_text(pid: u32) -> String {
    match agent_maps(pid) {
        Ok(m) => m.iter().map(|m| format!("  {m}\n")).collect(),
        Err(e) => format!("  (maps unknown: {e:#})\n"),
    }
}

/// Entries by map name, for maps with a count.
pub fn map_entries(maps: &[MapUse]) -> BTreeMap<String, u64> {
    maps.iter()
        .filter_map(|m| Some((m.name.clone(), m.entries?)))
        .collect()
}

/// `bpftool cgroup show PATH`: the programs attached to a cgroup.
pub fn cgroup_programs(path: &Path) -> Result<String> {
    let out = run(Command::new("bpftool").args(["cgroup", "show"]).arg(path))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ss -tnmi` (TCP sockets with memory and internals) inside a namespace.
pub fn ss(netns: &str) -> String {
    let mut cmd = netns_command(netns, None, "ss");
    cmd.args(["-tanmi"]);
    match run(&mut cmd) {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(e) => format!("(ss failed: {e:#})"),
    }
}

/// The namespace's TCP counters that are not zero (`nstat -az`, absolute
/// values): resets, listen overflows, aborts, drops.
pub fn tcp_counters(netns: &str) -> BTreeMap<String, u64> {
    let mut cmd = netns_command(netns, None, "nstat");
    cmd.args(["-az", "--json"]);
    let Ok(out) = run(&mut cmd) else {
        return BTreeMap::new();
    };
    let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) else {
        return BTreeMap::new();
    };
    let mut m = BTreeMap::new();
    if let Some(kernel) = v["kernel"].as_object() {
        for (k, n) in kernel {
            let n = n.as_u64().unwrap_or(0);
            let interesting = k.starts_with("Tcp") || k.starts_with("TcpExt");
            if interesting && n > 0 {
                m.insert(k.clone(), n);
            }
        }
    }
    m
}

/// The counters of [`tcp_counters`] that say something went wrong.
pub fn tcp_trouble(netns: &str) -> BTreeMap<String, u64> {
    const BAD: &[&str] = &[
        "TcpAttemptFails",
        "TcpEstabResets",
        "TcpOutRsts",
        "TcpExtListenOverflows",
        "TcpExtListenDrops",
        "TcpExtTCPAbortOnData",
        "TcpExtTCPAbortOnClose",
        "TcpExtTCPAbortOnMemory",
        "TcpExtTCPAbortOnTimeout",
        "TcpExtTCPBacklogDrop",
        "TcpExtTCPRcvQDrop",
        "TcpExtTCPZeroWindowDrop",
        "TcpExtTCPMemoryPressures",
        "TcpExtPruneCalled",
        "TcpExtTCPRcvCollapsed",
        "TcpExtTCPReqQFullDrop",
    ];
    tcp_counters(netns)
        .into_iter()
        .filter(|(k, _)| BAD.contains(&k.as_str()))
        .collect()
}

/// TCP sockets by state (`ESTAB`, `TIME-WAIT`, ...) in a namespace.
pub fn socket_states(netns: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for line in ss(netns).lines().skip(1) {
        if let Some(state) = line.split_whitespace().next() {
            if state.chars().all(|c| c.is_ascii_uppercase() || c == '-') {
                *m.entry(state.to_string()).or_default() += 1;
            }
        }
    }
    m
}

/// Sockets of `ss -tanmi` with bytes stuck in a queue (Recv-Q or Send-Q > 0),
/// with their info lines: where a stall sits.
pub fn stuck_sockets(netns: &str) -> String {
    let text = ss(netns);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let mut i = 1;
    while i < lines.len() {
        let l = lines[i];
        let f: Vec<&str> = l.split_whitespace().collect();
        let is_socket = f.len() >= 5 && f[0].chars().all(|c| c.is_ascii_uppercase() || c == '-');
        if is_socket {
            let rq: u64 = f[1].parse().unwrap_or(0);
            let sq: u64 = f[2].parse().unwrap_or(0);
            if rq > 0 || sq > 0 {
                out.push_str(l);
                out.push('\n');
                let mut j = i + 1;
                while j < lines.len() && lines[j].starts_with(char::is_whitespace) {
                    out.push_str(lines[j]);
                    out.push('\n');
                    j += 1;
                }
            }
        }
        i += 1;
    }
    if out.is_empty() {
        "  (no socket with queued bytes)\n".to_string()
    } else {
        out
    }
}

/// A point in the kernel log; [`Dmesg::new_warnings`] lists what came after it.
#[derive(Debug, Clone)]
pub struct Dmesg {
    lines: usize,
}

fn dmesg_lines() -> Vec<String> {
    Command::new("dmesg")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Dmesg {
    pub fn mark() -> Dmesg {
        Dmesg {
            lines: dmesg_lines().len(),
        }
    }

    /// New kernel log lines that report a problem: WARNING, BUG, Oops, a call
    /// trace, refcount or list corruption, RCU stalls, bad page state.
    /// (Many kernel WARNs fire once per boot: a warning that happened before
    /// the mark does not show again.)
    pub fn new_warnings(&self) -> Vec<String> {
        const BAD: &[&str] = &[
            "WARNING:",
            "BUG:",
            "BUG ",
            "Oops",
            "Call Trace",
            "refcount_t",
            "list_add corruption",
            "list_del corruption",
            "rcu_sched self-detected stall",
            "rcu: INFO",
            "Bad page state",
            "general protection fault",
            "kernel BUG",
            "cut here",
        ];
        let new: Vec<String> = dmesg_lines().into_iter().skip(self.lines).collect();
        without_known(&new)
            .into_iter()
            .filter(|l| BAD.iter().any(|b| l.contains(b)))
            .cloned()
            .collect()
    }
}

/// The kernel's own warning over the socket-map receive accounting
/// (ebpf/README.md point 18): `sk_psock_destroy` frees a socket whose
/// receive memory is still charged. It is the kernel's accounting, which
/// no BPF program can break by contract, seen twice in some forty full
/// runs on 6.18.44 and only at the socket's last reference; it is
/// `WARN_ON_ONCE`, so it shows once per boot. Each occurrence is printed,
/// not failed on; any other warning fails, and so would this one with
/// another caller in its trace.
fn known(block: &[String]) -> bool {
    let has = |s: &str| block.iter().any(|l| l.contains(s));
    has("inet_sock_destruct") && has("sk_psock_destroy") && has("WARNING:")
}

/// `lines` without the `cut here` .. `end trace` blocks of known kernel
/// warnings (each printed to stderr instead).
fn without_known(lines: &[String]) -> Vec<&String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].contains("cut here") {
            let end = lines[i..]
                .iter()
                .position(|l| l.contains("end trace"))
                .map(|k| i + k + 1);
            if let Some(end) = end {
                if known(&lines[i..end]) {
                    eprintln!(
                        "known kernel warning (ebpf/README.md point 18), not counted:\n{}",
                        lines[i..end].join("\n")
                    );
                    i = end;
                    continue;
                }
            }
        }
        out.push(&lines[i]);
        i += 1;
    }
    out
}

/// Everything a failing assertion should show: agent liveness and stderr
/// tail and backend counts ([`TestBed::diagnostics`]), the status JSON, the
/// agent's RSS and maps, and sockets with queued bytes in the node namespace.
pub fn report(bed: &mut TestBed) -> String {
    let mut s = bed.diagnostics();
    if let Some(agent) = bed.agent.as_ref() {
        let pid = agent.pid();
        // Panics and warnings anywhere in the agent's log (the tail above may be a backtrace).
        let log = agent.stderr();
        let notable: Vec<String> = log
            .lines()
            .filter(|l| l.contains("panicked at") || l.contains("WARN") || l.contains("ERROR"))
            .map(|l| {
                rotor_testbed::agent::without_colours(l)
                    .chars()
                    .take(300)
                    .collect()
            })
            .collect();
        if !notable.is_empty() {
            let n = notable.len();
            let shown: Vec<&String> = notable.iter().take(12).collect();
            s.push_str(&format!(
                "\nagent panics/warnings/errors ({n}, first 12):\n"
            ));
            for l in shown {
                s.push_str(&format!("  {l}\n"));
            }
        }
        match status(agent) {
            Ok(st) => {
                let (c, o) = conns_and_streams(&st);
                let mut text = serde_json::to_string_pretty(&st).unwrap_or_default();
                if text.len() > 6000 {
                    text = format!("{}\n… ({} bytes)", &text[..6000], text.len());
                }
                s.push_str(&format!(
                    "\nrotor status: {c} connections, {o} open streams, kernel {:?}\n{text}",
                    kernel_counters(&st)
                ));
            }
            Err(e) => s.push_str(&format!("\nrotor status: {e:#}")),
        }
        match rss_kib(pid) {
            Ok(k) => s.push_str(&format!("\nagent RSS {k} KiB")),
            Err(e) => s.push_str(&format!("\nagent RSS: {e:#}")),
        }
        match cpu_percent(pid, Duration::from_millis(500)) {
            Ok(c) => s.push_str(&format!(", CPU {c:.0}% of one core (over 0.5 s)")),
            Err(e) => s.push_str(&format!(", CPU: {e:#}")),
        }
        s.push_str(&format!("\nagent maps:\n{}", maps_text(pid)));
    }
    s.push_str(&format!(
        "node sockets with queued bytes (ss -tanmi):\n{}",
        stuck_sockets(bed.topo.node_ns())
    ));
    s
}

/// Fails unless `pid` is alive (for a process that is not our child).
pub fn check_pid(pid: u32) -> Result<()> {
    if !Path::new(&format!("/proc/{pid}")).exists() {
        bail!("process {pid} is gone");
    }
    Ok(())
}

/// Maps whose entries belong to connections (sockets, their parse state and
/// identity, streams, recorded destinations).
pub const CONNECTION_MAPS: &[&str] = &[
    "agent_socks",
    "upstream_socks",
    "sock_idents",
    "parse_states",
    "streams",
    "pending_origins",
    "client_origins",
];

/// Map entries of an agent that has carried one request and is idle again:
/// the baseline for leak checks (the agent's own sockets, such as its
/// injector, get their entries on first use).
pub fn warm_baseline(bed: &TestBed) -> Result<BTreeMap<String, u64>> {
    let agent = bed.agent().context("no agent")?;
    rotor_testbed::tools::curl_h2(
        &bed.topo,
        Some(&bed.cgroup),
        "http://10.96.0.10:8080/whoami",
    )
    .context("warm-up request through rotor")?;
    let ((c, s), _) = wait_idle(agent, Duration::from_secs(10))?;
    if (c, s) != (0, 0) {
        bail!("the agent is not idle after one request: {c} connections, {s} streams");
    }
    std::thread::sleep(Duration::from_millis(300));
    Ok(map_entries(&agent_maps(agent.pid())?))
}

/// Waits (up to `limit`) until the connection maps of `pid` hold no more
/// entries than `baseline`; returns the ones that still do, as "name: before -> now".
pub fn wait_maps_back(pid: u32, baseline: &BTreeMap<String, u64>, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + rotor_testbed::scaled(limit);
    loop {
        let now = map_entries(&agent_maps(pid).unwrap_or_default());
        let left: Vec<String> = CONNECTION_MAPS
            .iter()
            .filter_map(|m| {
                let b = baseline.get(*m).copied().unwrap_or(0);
                let a = now.get(*m).copied().unwrap_or(0);
                (a > b).then(|| format!("{m}: {b} -> {a}"))
            })
            .collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[cfg(test)]
mod dmesg_tests {
    use super::without_known;

    fn block(what: &str, caller: &str) -> Vec<String> {
        [
            "[  971.1] ------------[ cut here ]------------".to_string(),
            format!("[  971.1] WARNING: CPU: 0 PID: 1 at {what}+0x174/0x1a0"),
            "[  971.1] Call Trace:".to_string(),
            "[  971.1]  __sk_destruct+0x2b/0x1d0".to_string(),
            format!("[  971.1]  {caller}+0x316/0x380"),
            "[  971.1] ---[ end trace 0000000000000000 ]---".to_string(),
        ]
        .to_vec()
    }

    #[test]
    fn only_the_known_psock_accounting_warning_is_set_aside() {
        let known = block(
            "net/ipv4/af_inet.c:157 inet_sock_destruct",
            "sk_psock_destroy",
        );
        assert!(without_known(&known).is_empty());
        let other_caller = block("net/ipv4/af_inet.c:157 inet_sock_destruct", "tcp_close");
        assert_eq!(without_known(&other_caller).len(), other_caller.len());
        let other = block("net/core/skmsg.c:700 sk_psock_backlog", "sk_psock_destroy");
        assert_eq!(without_known(&other).len(), other.len());
        // Unterminated (the log still being written): kept, so it fails.
        let cut: Vec<String> = known[..4].to_vec();
        assert_eq!(without_known(&cut).len(), 4);
        let mut both = known.clone();
        both.extend(other.clone());
        assert_eq!(without_known(&both).len(), other.len());
    }
}
