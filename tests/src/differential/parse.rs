//! What each client printed, read into an [`Outcome`](super::Outcome).

#[allow(unused_imports)]
use super::*;

pub(super) fn parse_h2load_outcome(stdout: &str, out: &mut Outcome) -> Result<()> {
    if !stdout.lines().any(|l| l.starts_with("requests:")) {
        // Stopped before its summary: how far its progress lines got.
        let total = stdout
            .lines()
            .find_map(|l| {
                l.split_once("client(s). ")?
                    .1
                    .strip_suffix(" total requests")
            })
            .unwrap_or("?");
        let progress = stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("progress: "))
            .unwrap_or("0% done");
        out.summary = format!("no summary: stopped with {progress} of {total} requests");
        out.errors.push(format!(
            "h2load stopped before its summary, {progress} of {total} requests"
        ));
        return Ok(());
    }
    let s = parse_h2load(stdout)?;
    out.ok = s.succeeded;
    out.failed = s.total.saturating_sub(s.succeeded);
    if let Some(line) = stdout.lines().find(|l| l.starts_with("status codes:")) {
        for part in line.trim_start_matches("status codes:").split(',') {
            let mut it = part.split_whitespace();
            if let (Some(n), Some(class)) = (it.next(), it.next()) {
                let n: u64 = n.parse().unwrap_or(0);
                if n > 0 {
                    out.statuses.insert(class.to_string(), n);
                }
            }
        }
    }
    out.data_bytes = stdout
        .lines()
        .find(|l| l.starts_with("traffic:"))
        .and_then(|l| l.split(',').find(|p| p.trim_end().ends_with("data")))
        .and_then(paren_number);
    let mut lines = s.lines.clone();
    lines.extend(
        stdout
            .lines()
            .filter(|l| l.starts_with("traffic:"))
            .map(str::to_string),
    );
    out.summary = lines.join("\n");
    Ok(())
}

/// The number in the first parentheses of `s`: `87.89KB (90000) data` → 90000.
pub(super) fn paren_number(s: &str) -> Option<u64> {
    let open = s.find('(')?;
    let close = s[open..].find(')')? + open;
    s[open + 1..close].trim().parse().ok()
}

#[derive(Debug, Default)]
pub(super) struct NghttpStream {
    status: Option<String>,
    data: u64,
    ended: bool,
    reset: bool,
}

/// nghttp -v: `recv (stream_id=13) :status: 200`, `recv DATA frame
/// <length=16384, flags=0x00, stream_id=13>`, `recv RST_STREAM frame …`,
/// `recv GOAWAY frame …` and the `(last_stream_id=…, error_code=…)` line after it.
pub(super) fn parse_nghttp(stdout: &str, out: &mut Outcome) {
    let mut streams: BTreeMap<u64, NghttpStream> = BTreeMap::new();
    let mut lines = stdout.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.split_once("] recv ").map(|(_, r)| r) else {
            continue;
        };
        if let Some(r) = rest.strip_prefix("(stream_id=") {
            if let Some((id, field)) = r.split_once(") ") {
                if let (Ok(id), Some(st)) = (id.parse(), field.strip_prefix(":status: ")) {
                    streams.entry(id).or_default().status = Some(st.trim().to_string());
                }
            }
            continue;
        }
        let Some((kind, attrs)) = rest.split_once(" frame <") else {
            continue;
        };
        let attr = |name: &str| -> Option<u64> {
            let v = attrs.split(", ").find_map(|a| a.strip_prefix(name))?;
            let v = v.trim_end_matches('>');
            match v.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => v.parse().ok(),
            }
        };
        let (len, flags, id) = (
            attr("length=").unwrap_or(0),
            attr("flags=").unwrap_or(0),
            attr("stream_id=").unwrap_or(0),
        );
        match kind {
            "DATA" => {
                let s = streams.entry(id).or_default();
                s.data += len;
                s.ended |= flags & 1 != 0;
            }
            "HEADERS" => streams.entry(id).or_default().ended |= flags & 1 != 0,
            "RST_STREAM" => {
                streams.entry(id).or_default().reset = true;
                out.resets += 1;
            }
            "GOAWAY" => {
                let detail = lines
                    .peek()
                    .map(|l| l.trim().to_string())
                    .unwrap_or_default();
                out.goaways.push(detail);
            }
            _ => {}
        }
    }
    let mut data = 0;
    for s in streams.values() {
        if s.status.is_none() && !s.reset {
            continue; // nghttp's PRIORITY placeholder streams
        }
        data += s.data;
        if let Some(st) = &s.status {
            *out.statuses.entry(st.clone()).or_insert(0) += 1;
        }
        if s.ended && !s.reset && s.status.as_deref().is_some_and(|c| c.starts_with('2')) {
            out.ok += 1;
            *out.bodies.entry(format!("<{} bytes>", s.data)).or_insert(0) += 1;
        } else {
            out.failed += 1;
        }
    }
    out.data_bytes = Some(data);
    out.summary = format!(
        "{} request stream(s), {} B of DATA; {}",
        out.ok + out.failed,
        data,
        stdout
            .lines()
            .filter(|l| l.contains("send GOAWAY") || l.contains("error"))
            .take(3)
            .collect::<Vec<_>>()
            .join(" | ")
    );
}

pub(super) fn last_json(stdout: &str) -> Result<Value> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("no JSON report; stdout: {}", clip(stdout, 1000)))?;
    serde_json::from_str(line).with_context(|| format!("parsing {line:.300}"))
}

pub(super) fn parse_python(stdout: &str, out: &mut Outcome) -> Result<()> {
    let v = last_json(stdout)?;
    out.ok = v["ok"].as_u64().unwrap_or(0);
    out.failed = v["failed"].as_u64().unwrap_or(0);
    if let Some(b) = v["bodies"].as_object() {
        for (k, n) in b {
            out.bodies.insert(k.clone(), n.as_u64().unwrap_or(0));
        }
    }
    let corrupt = v["corrupt"].as_u64().unwrap_or(0);
    if corrupt > 0 {
        out.errors
            .push(format!("{corrupt} echoed bodies differ from the upload"));
    }
    if let Some(errs) = v["errors"].as_object() {
        for (e, n) in errs {
            classify_error(e, n.as_u64().unwrap_or(1), out);
        }
    }
    out.summary = clip(&v.to_string(), 600);
    Ok(())
}

pub(super) fn parse_load(stdout: &str, out: &mut Outcome) -> Result<()> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("no rotor-load report; stdout: {}", clip(stdout, 1000)))?;
    let r: LoadReport =
        serde_json::from_str(line).with_context(|| format!("parsing {line:.300}"))?;
    out.ok = r.ok;
    out.failed = r.failed;
    out.bodies = r.by_body.clone();
    for e in &r.errors {
        classify_error(e, 1, out);
    }
    out.summary = format!(
        "ok {} failed {} p50 {}us p99 {}us max {}us",
        r.ok, r.failed, r.p50_us, r.p99_us, r.max_us
    );
    Ok(())
}

pub(super) fn classify_error(e: &str, n: u64, out: &mut Outcome) {
    if e.contains("RST_STREAM") {
        out.resets += n;
    } else if e.contains("GOAWAY") {
        out.goaways.push(e.to_string());
    }
    // Every error string is kept (a reset is also an error the client saw).
    if out.errors.len() < 10 {
        out.errors.push(if n > 1 {
            format!("{e} (×{n})")
        } else {
            e.to_string()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn h2load_counts_statuses_and_data() {
        let stdout = "finished in 1.20s, 25000.00 req/s, 1.10MB/s\n\
requests: 30000 total, 21861 started, 21845 done, 21845 succeeded, 8155 failed, 8155 errored, 0 timeout\n\
status codes: 21845 2xx, 0 3xx, 0 4xx, 0 5xx\n\
traffic: 1.10MB (1153285) total, 293.58KB (300623) headers (space savings 95.22%), 63.99KB (65535) data\n";
        let mut o = Outcome::default();
        parse_h2load_outcome(stdout, &mut o).unwrap();
        assert_eq!((o.ok, o.failed), (21845, 8155));
        assert_eq!(o.statuses.get("2xx"), Some(&21845));
        assert_eq!(o.statuses.len(), 1);
        assert_eq!(o.data_bytes, Some(65535));
    }

    #[test]
    fn h2load_stopped_reports_progress() {
        let stdout = "starting benchmark...\n\
spawning thread #0: 1 total client(s). 30000 total requests\n\
Application protocol: h2c\n\
progress: 10% done\n\
progress: 70% done\n";
        let mut o = Outcome::default();
        parse_h2load_outcome(stdout, &mut o).unwrap();
        assert_eq!((o.ok, o.failed), (0, 0));
        assert!(o.summary.contains("70% done of 30000"), "{}", o.summary);
    }

    #[test]
    fn nghttp_frames() {
        let stdout = "[  0.001] send HEADERS frame <length=38, flags=0x25, stream_id=13>\n\
[  0.002] recv (stream_id=13) :status: 200\n\
[  0.002] recv HEADERS frame <length=20, flags=0x04, stream_id=13>\n\
[  0.003] recv DATA frame <length=16384, flags=0x00, stream_id=13>\n\
[  0.003] recv DATA frame <length=100, flags=0x01, stream_id=13>\n\
[  0.004] recv (stream_id=15) :status: 200\n\
[  0.004] recv HEADERS frame <length=20, flags=0x04, stream_id=15>\n\
[  0.005] recv RST_STREAM frame <length=4, flags=0x00, stream_id=15>\n\
          (error_code=CANCEL(0x08))\n\
[  0.006] recv GOAWAY frame <length=8, flags=0x00, stream_id=0>\n\
          (last_stream_id=0, error_code=NO_ERROR(0x00), opaque_data(0)=[])\n";
        let mut o = Outcome::default();
        parse_nghttp(stdout, &mut o);
        assert_eq!((o.ok, o.failed, o.resets), (1, 1, 1));
        assert_eq!(o.data_bytes, Some(16484));
        assert_eq!(o.bodies.get("<16484 bytes>"), Some(&1));
        assert_eq!(o.statuses.get("200"), Some(&2));
        assert_eq!(o.goaways.len(), 1);
        assert!(o.goaways[0].contains("NO_ERROR"));
    }

    #[test]
    fn backend_bodies_normalise() {
        let expect = Expect {
            requests: 6,
            bodies: Bodies::BackendNames,
            kernel_path: true,
        };
        let client = Client::Load(LoadSpec::whoami(1, 1, 6));
        let direct = Outcome {
            finished: true,
            ok: 6,
            bodies: [("be1".to_string(), 6)].into(),
            ..Outcome::default()
        };
        let mut rotor = Outcome {
            finished: true,
            ok: 6,
            bodies: [("be1".to_string(), 3), ("be2".to_string(), 3)].into(),
            kernel_delta: [("connect_rewrite".to_string(), 1)].into(),
            ..Outcome::default()
        };
        assert_eq!(
            compare(&expect, &client, &direct, &rotor),
            Vec::<String>::new()
        );
        rotor.bodies = [("be2".to_string(), 6)].into();
        assert_eq!(compare(&expect, &client, &direct, &rotor).len(), 1);
    }
}
