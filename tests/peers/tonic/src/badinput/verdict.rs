//! Judging an outcome against what the case expects.

use super::*;

pub(super) fn finish(mut out: Outcome, case: &Case, start: Instant) -> Outcome {
    out.ms = start.elapsed().as_millis() as u64;
    let (ok, why) = verdict(&out, &case.expect);
    out.ok = ok;
    out.why = why;
    out.summary = summary(&out);
    out
}

pub(super) fn summary(o: &Outcome) -> String {
    let mut parts = Vec::new();
    if let Some(e) = &o.connect_error {
        parts.push(format!("connect error {e}"));
    }
    if let Some(g) = &o.goaway {
        parts.push(format!("GOAWAY({g})"));
    }
    if !o.rst.is_empty() {
        let mut codes: Vec<&str> = o.rst.iter().filter_map(|r| r.split(':').nth(1)).collect();
        codes.sort();
        codes.dedup();
        parts.push(format!("RST({})", codes.join(",")));
    }
    if !o.responses.is_empty() {
        let mut st: Vec<&str> = o.responses.values().map(String::as_str).collect();
        st.sort();
        st.dedup();
        parts.push(format!("responses({})", st.join(",")));
    }
    if o.ping_ack {
        parts.push("PING-ACK".into());
    }
    if let Some(c) = &o.closed {
        parts.push(format!("closed:{c}"));
    }
    if let Some(f) = &o.after_fin {
        parts.push(format!("after-FIN:{f}"));
    }
    if o.garbage.is_some() {
        parts.push("GARBAGE".into());
    }
    if parts.is_empty() {
        parts.push("nothing".into());
    }
    parts.join(" ")
}

/// The TCP state of our socket (FIN-WAIT-2: the server never closed its end).
pub(super) fn socket_state(o: &Outcome) -> &str {
    o.socket
        .as_deref()
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("?")
}

pub(super) fn code_ok(name: &str, codes: &[u32]) -> bool {
    codes.iter().any(|c| code_name(*c) == name)
}

/// Whether the outcome is what a correct server does, and why not.
pub(super) fn verdict(o: &Outcome, expect: &Expect) -> (bool, String) {
    if let Some(e) = &o.connect_error {
        return (false, format!("connect failed: {e}"));
    }
    if let Some(g) = &o.garbage {
        return (
            false,
            format!("server sent bytes that are not HTTP/2 frames: {g}"),
        );
    }
    let hung = o.closed.is_none() && o.goaway.is_none() && o.after_fin.as_deref() == Some("open");
    if hung {
        return (
            false,
            format!(
                "hung: no reaction and still open after our FIN (our socket: {})",
                socket_state(o)
            ),
        );
    }
    let closed_by_server = o.closed.is_some();
    if let Some(g) = &o.goaway {
        if g != "NO_ERROR" && o.after_fin.as_deref() == Some("open") {
            // RFC 9113 §5.4.1: after a GOAWAY for an error, close the connection.
            return (
                false,
                format!(
                    "sent GOAWAY({g}) but kept the connection open, even after our FIN (our socket: {})",
                    socket_state(o)
                ),
            );
        }
    }
    match expect {
        Expect::Conn(codes) => match &o.goaway {
            Some(g) if code_ok(g, codes) => (true, String::new()),
            Some(g) => (
                false,
                format!(
                    "GOAWAY({g}), expected one of {:?}",
                    codes.iter().map(|c| code_name(*c)).collect::<Vec<_>>()
                ),
            ),
            None if closed_by_server => (true, String::new()),
            None => (
                false,
                format!(
                    "no GOAWAY({:?}) and not closed: the bad input was {}",
                    codes.iter().map(|c| code_name(*c)).collect::<Vec<_>>(),
                    if o.ping_ack {
                        "ignored (PING answered)"
                    } else {
                        "not answered"
                    }
                ),
            ),
        },
        Expect::Stream(stream, codes) => {
            let rst_ok = o.rst.iter().any(|r| {
                let (s, c) = r.split_once(':').unwrap_or(("", ""));
                s == stream.to_string() && code_ok(c, codes)
            });
            let goaway_ok = o
                .goaway
                .as_deref()
                .is_some_and(|g| code_ok(g, codes) || code_ok(g, &[code::PROTOCOL_ERROR]));
            if rst_ok || goaway_ok || (o.goaway.is_none() && closed_by_server) {
                (true, String::new())
            } else {
                (
                    false,
                    format!(
                        "expected RST_STREAM({stream}, {:?}) or GOAWAY or close; got {}",
                        codes.iter().map(|c| code_name(*c)).collect::<Vec<_>>(),
                        summary(o)
                    ),
                )
            }
        }
        Expect::Alive => {
            if o.ping_ack && o.goaway.is_none() && !closed_by_server {
                (true, String::new())
            } else {
                (
                    false,
                    format!(
                        "valid input, but the connection did not stay usable: {}",
                        summary(o)
                    ),
                )
            }
        }
        Expect::Responses(streams) => {
            let missing: Vec<u32> = streams
                .iter()
                .copied()
                .filter(|s| !o.completed.contains(s))
                .collect();
            let bad_status: Vec<String> = o
                .responses
                .iter()
                .filter(|(_, st)| st.as_str() != "200")
                .map(|(s, st)| format!("{s}:{st}"))
                .collect();
            if missing.is_empty() && bad_status.is_empty() {
                (true, String::new())
            } else {
                (false, format!("valid requests: streams {missing:?} got no complete response, statuses not 200: {bad_status:?}; {}", summary(o)))
            }
        }
        Expect::Closed => {
            if o.closed.is_some() || matches!(o.after_fin.as_deref(), Some("eof") | Some("reset")) {
                (true, String::new())
            } else {
                (false, format!("not closed after our FIN: {}", summary(o)))
            }
        }
        Expect::NoHang => (true, String::new()),
        Expect::RejectOrIgnore(stream, codes) => {
            let goaway_ok = o.goaway.as_deref().is_some_and(|g| code_ok(g, codes));
            let rst = o.rst.iter().any(|r| r.starts_with(&format!("{stream}:")));
            let ignored = o.ping_ack && !o.responses.contains_key(stream);
            if goaway_ok || rst || ignored || (o.goaway.is_none() && closed_by_server) {
                (true, String::new())
            } else {
                (false, format!("stream {stream} reused or decreasing: expected GOAWAY({:?}) or no response for it; got {}", codes.iter().map(|c| code_name(*c)).collect::<Vec<_>>(), summary(o)))
            }
        }
    }
}
