//! The conn-memory section: per measurement, what the connections cost
//! against the same agent's baseline, and the cost per 1,000 connections
//! that sizes the DaemonSet's memory request and limit.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::measure::Snapshot;
use super::{ConnMemoryResults, Point};

const MIB: f64 = 1024.0 * 1024.0;

/// Cost of one point's connections over its baseline, per 1,000 connections, bytes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PerThousand {
    pub vm_rss: f64,
    /// What a container memory limit counts (memcg usage + TCP buffers).
    pub memcg_total: f64,
    pub memcg_anon: f64,
    pub memcg_kernel: f64,
    pub memcg_tcp: f64,
    /// skmem of the agent's client-side and upstream sockets.
    pub socket_buffers: f64,
    pub fds: f64,
}

/// Per the connections the agent held (its accepted sockets), which is
/// fewer than asked for when some could not be opened.
fn per_thousand(p: &Point) -> PerThousand {
    let n = p.loaded.sockets.client_side.sockets.max(1) as f64 / 1000.0;
    let d = |f: fn(&Snapshot) -> u64| (f(&p.loaded) as f64 - f(&p.baseline) as f64) / n;
    PerThousand {
        vm_rss: d(|s| s.vm_rss),
        memcg_total: d(|s| s.memcg.total()),
        memcg_anon: d(|s| s.memcg.anon),
        memcg_kernel: d(|s| s.memcg.kmem),
        memcg_tcp: d(|s| s.memcg.tcp),
        socket_buffers: d(|s| s.sockets.client_side.charged + s.sockets.upstream_side.charged),
        fds: d(|s| s.fds as u64),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnMemoryReport {
    pub results: ConnMemoryResults,
    pub per_thousand: Vec<PerThousand>,
    /// The largest baseline (memcg total, else VmRSS) over the fresh agents, bytes.
    pub baseline: f64,
    /// The largest cost per 1,000 connections over the points (memcg total,
    /// else VmRSS), bytes: what sizing uses.
    pub sizing_per_thousand: f64,
    /// From idle rows of 1 and of 3 endpoints with as many connections: per
    /// 1,000 connections, the client's part and each upstream's (memcg total,
    /// else VmRSS), bytes.
    pub split: Option<(f64, f64)>,
}

fn label(p: &Point) -> String {
    let kind = if p.active { "active" } else { "idle" };
    match p.endpoints {
        1 => format!("{} {kind}, 1 endpoint", p.connections),
        e if e == super::ENDPOINTS => format!("{} {kind}", p.connections),
        e => format!("{} {kind}, {e} endpoints", p.connections),
    }
}

pub fn one_line(p: &Point) -> String {
    let k = per_thousand(p);
    format!(
        "{} connections (held {}, {} requests, {} failed, agent {:.2} cores after): VmRSS {:.1} → {:.1} MiB (peak {:.1}), memcg {:.1} → {:.1} MiB; per 1,000: VmRSS {:.2} MiB, memcg {:.2} MiB, {:.0} fds; upstreams {:?}",
        label(p),
        p.client.connections,
        p.client.requests_ok,
        p.client.requests_failed,
        p.idle_cores,
        p.baseline.vm_rss as f64 / MIB,
        p.loaded.vm_rss as f64 / MIB,
        p.peak_rss_sampled as f64 / MIB,
        p.baseline.memcg.total() as f64 / MIB,
        p.loaded.memcg.total() as f64 / MIB,
        k.vm_rss / MIB,
        k.memcg_total / MIB,
        k.fds,
        p.loaded.sockets.per_endpoint,
    )
}

fn mib(b: f64) -> String {
    format!("{:.1} MiB", b / MIB)
}

impl ConnMemoryReport {
    pub fn new(results: ConnMemoryResults) -> ConnMemoryReport {
        let per_thousand: Vec<PerThousand> = results.points.iter().map(per_thousand).collect();
        let memcg = results.memcg;
        let baseline = results
            .points
            .iter()
            .map(|p| {
                if memcg {
                    p.baseline.memcg.total()
                } else {
                    p.baseline.vm_rss
                }
            })
            .max()
            .unwrap_or(0) as f64;
        let cost = |k: &PerThousand| if memcg { k.memcg_total } else { k.vm_rss };
        let sizing_per_thousand = results
            .points
            .iter()
            .zip(&per_thousand)
            .filter(|(p, _)| p.endpoints == super::ENDPOINTS)
            .map(|(_, k)| cost(k))
            .fold(0.0, f64::max);
        let idle = |eps: usize| {
            results
                .points
                .iter()
                .zip(&per_thousand)
                .find(|(p, _)| !p.active && p.endpoints == eps)
        };
        let split = match (idle(1), idle(super::ENDPOINTS)) {
            (Some((p1, k1)), Some((p3, k3))) if p1.connections == p3.connections => {
                let upstream = (cost(k3) - cost(k1)) / (super::ENDPOINTS - 1) as f64;
                Some((cost(k1) - upstream, upstream))
            }
            _ => None,
        };
        ConnMemoryReport {
            results,
            per_thousand,
            baseline,
            sizing_per_thousand,
            split,
        }
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let [md, json] = super::files(dir);
        std::fs::write(&md, self.markdown())
            .with_context(|| format!("writing {}", md.display()))?;
        let body = serde_json::to_vec_pretty(self)?;
        std::fs::write(&json, body).with_context(|| format!("writing {}", json.display()))
    }

    pub fn markdown(&self) -> String {
        let r = &self.results;
        let mut m = String::new();
        let _ = writeln!(m, "## Agent memory per connection\n");
        let _ = writeln!(
            m,
            "Kernel {}, through rotor to a Service of {} endpoints (rotor-h2-backend), a fresh agent per row \
             (default `--max-conns`; open files: the agent raises its soft limit to the hard limit it inherits, {}). \
             Baseline: the same agent after `ready`, no connections. Connections: one request each, then idle \
             (or busy, one request at a time each, for {} s). {:.0} s in all.\n",
            r.kernel, r.endpoints, r.host_nofile_hard, r.options.active_secs, r.elapsed_s
        );
        let _ = writeln!(m, "| connections | held | upstreams per endpoint | agent fds | VmRSS baseline → with them | VmHWM | memcg baseline → with them (user / kernel / TCP) | socket buffers client side / upstream side | BPF maps (memlock) |");
        let _ = writeln!(m, "|---|--:|---|--:|---|--:|---|---|--:|");
        for p in &r.points {
            let (b, l) = (&p.baseline, &p.loaded);
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} → {} | {} → {} | {} | {} → {} ({} / {} / {}) | {} / {} | {} → {} |",
                label(p),
                p.client.connections,
                l.sockets
                    .per_endpoint
                    .values()
                    .map(|v| v.to_string())
                    .collect::<Vec<_>>()
                    .join(" / "),
                b.fds,
                l.fds,
                mib(b.vm_rss as f64),
                mib(l.vm_rss as f64),
                mib(l.vm_hwm as f64),
                mib(b.memcg.total() as f64),
                mib(l.memcg.total() as f64),
                mib(l.memcg.anon as f64),
                mib(l.memcg.kmem as f64),
                mib(l.memcg.tcp as f64),
                mib(l.sockets.client_side.charged as f64),
                mib(l.sockets.upstream_side.charged as f64),
                mib(b.maps_memlock() as f64),
                mib(l.maps_memlock() as f64),
            );
        }
        let _ = writeln!(
            m,
            "\nPer 1,000 connections (with them − baseline, same agent):\n"
        );
        let _ = writeln!(m, "| connections | VmRSS | memcg total | memcg user | memcg kernel | memcg TCP | socket buffers (skmem) | fds |");
        let _ = writeln!(m, "|---|--:|--:|--:|--:|--:|--:|--:|");
        for (p, k) in r.points.iter().zip(&self.per_thousand) {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {} | {} | {} | {:.0} |",
                label(p),
                mib(k.vm_rss),
                mib(k.memcg_total),
                mib(k.memcg_anon),
                mib(k.memcg_kernel),
                mib(k.memcg_tcp),
                mib(k.socket_buffers),
                k.fds
            );
        }
        let idle: Vec<&Point> = r
            .points
            .iter()
            .filter(|p| !p.active && p.endpoints == super::ENDPOINTS)
            .collect();
        if let [first, .., last] = idle.as_slice() {
            let held = |p: &Point| p.loaded.sockets.client_side.sockets as f64;
            let dn = (held(last) - held(first)) / 1000.0;
            if dn > 0.0 {
                let slope = |f: fn(&Snapshot) -> u64| {
                    let d = |p: &Point| f(&p.loaded) as f64 - f(&p.baseline) as f64;
                    (d(last) - d(first)) / dn
                };
                let _ = writeln!(
                    m,
                    "\nSlope between {} and {} idle connections held, per 1,000: VmRSS {}, memcg total {}.",
                    held(first),
                    held(last),
                    mib(slope(|s| s.vm_rss)),
                    mib(slope(|s| s.memcg.total()))
                );
            }
        }
        let maps: Vec<String> = r
            .points
            .iter()
            .map(|p| format!("{:.1}", p.loaded.maps_memlock() as f64 / MIB))
            .collect();
        let _ = writeln!(
            m,
            "\nBPF maps: {} maps, memlock {} at the baseline, {} MiB with the connections (preallocated: sized by `--max-conns` at load, not by the connections).",
            r.points.first().map_or(0, |p| p.baseline.maps.len()),
            mib(r.points.first().map_or(0, |p| p.baseline.maps_memlock()) as f64),
            maps.join(" / ")
        );
        let _ = writeln!(
            m,
            "\nSizing ({}): baseline up to {}, plus {} per 1,000 connections (the largest of the rows above).",
            if r.memcg { "memcg total, what a container limit counts" } else { "VmRSS; no memory cgroup on this host" },
            mib(self.baseline),
            mib(self.sizing_per_thousand)
        );
        if let Some((client, upstream)) = self.split {
            let _ = writeln!(
                m,
                "\nWhere it goes, from the idle rows of 1 and {} endpoints: per 1,000 connections, {} for the client's side \
                 and {} for each upstream (a connection opens one upstream per endpoint, at most 16).",
                super::ENDPOINTS,
                mib(client),
                mib(upstream)
            );
        }
        let _ = writeln!(
            m,
            "\nAgent CPU with the connections held (after the busy period for the active row): {}.",
            r.points
                .iter()
                .map(|p| format!("{} {:.2} cores", label(p), p.idle_cores))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for p in &r.points {
            if p.client.requests_failed > 0 || !p.agent_warnings.is_empty() {
                let _ = writeln!(
                    m,
                    "\n{}: {} requests failed {:?}; agent: {:?}",
                    label(p),
                    p.client.requests_failed,
                    p.client.errors,
                    p.agent_warnings
                );
            }
        }
        m
    }
}
