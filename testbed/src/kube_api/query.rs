//! Request parsing for the stand-in: routes, query strings, label selectors.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Kind;

/// `/api/v1[/namespaces/NS]/services`, `/apis/discovery.k8s.io/v1[/namespaces/NS]/endpointslices`.
pub(super) fn route(path: &str) -> Option<Kind> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "v1", "services"] | ["api", "v1", "namespaces", _, "services"] => {
            Some(Kind::Service)
        }
        ["apis", "discovery.k8s.io", "v1", "endpointslices"]
        | ["apis", "discovery.k8s.io", "v1", "namespaces", _, "endpointslices"] => {
            Some(Kind::EndpointSlice)
        }
        ["apis", "events.k8s.io", "v1", "events"]
        | ["apis", "events.k8s.io", "v1", "namespaces", _, "events"] => Some(Kind::Event),
        _ => None,
    }
}

pub(super) fn namespace_of(path: &str) -> Option<String> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    parts
        .iter()
        .position(|p| *p == "namespaces")
        .and_then(|i| parts.get(i + 1))
        .map(|s| s.to_string())
}

/// A label selector: `k`, `!k`, `k=v`, `k==v`, `k!=v`, `k in (a,b)`,
/// `k notin (a,b)`, joined by commas (those inside parentheses belong to
/// the set).
#[derive(Debug, Default)]
pub(super) struct Selector(Vec<(String, Op)>);

#[derive(Debug)]
enum Op {
    Exists,
    Absent,
    Eq(String),
    Ne(String),
    In(Vec<String>),
    NotIn(Vec<String>),
}

/// The terms of a selector: split at the commas outside parentheses.
fn terms(s: &str) -> std::result::Result<Vec<&str>, String> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("unbalanced parentheses in {s:?}"));
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced parentheses in {s:?}"));
    }
    out.push(&s[start..]);
    Ok(out
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect())
}

/// `key in (a, b)` / `key notin (a, b)`, if the term is one.
fn set_term(term: &str) -> Option<std::result::Result<(String, Op), String>> {
    let open = term.find('(')?;
    let (head, rest) = term.split_at(open);
    let mut words = head.split_whitespace();
    let (key, op) = (words.next()?, words.next()?);
    let Some(inner) = rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')) else {
        return Some(Err(format!("bad set in {term:?}")));
    };
    let values: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    Some(match op {
        "in" => Ok((key.to_string(), Op::In(values))),
        "notin" => Ok((key.to_string(), Op::NotIn(values))),
        _ => Err(format!("unsupported label selector term {term:?}")),
    })
}

impl Selector {
    pub(super) fn parse(s: &str) -> std::result::Result<Selector, String> {
        let mut reqs = Vec::new();
        for term in terms(s)? {
            let req = if let Some(set) = set_term(term) {
                set?
            } else if let Some((k, v)) = term.split_once("!=") {
                (k.trim().to_string(), Op::Ne(v.trim().to_string()))
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k.trim().to_string(), Op::Eq(v.trim().to_string()))
            } else if let Some(k) = term.strip_prefix('!') {
                (k.trim().to_string(), Op::Absent)
            } else if term.contains(' ') || term.contains('(') || term.contains(')') {
                return Err(format!("unsupported label selector term {term:?}"));
            } else {
                (term.to_string(), Op::Exists)
            };
            reqs.push(req);
        }
        Ok(Selector(reqs))
    }

    pub(super) fn matches(&self, labels: &Value) -> bool {
        self.0.iter().all(|(k, op)| {
            let v = labels.get(k).and_then(Value::as_str);
            match op {
                Op::Exists => v.is_some(),
                Op::Absent => v.is_none(),
                Op::Eq(want) => v == Some(want.as_str()),
                Op::Ne(no) => v != Some(no.as_str()),
                Op::In(set) => v.is_some_and(|v| set.iter().any(|s| s == v)),
                // As the API server: a missing key is not in any set.
                Op::NotIn(set) => v.is_none_or(|v| !set.iter().any(|s| s == v)),
            }
        })
    }
}

pub(super) fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_and_selector_as_kube_rs_sends_them() {
        let q = parse_query("labelSelector=rotor.dev%2Fbalance&limit=500&watch=true");
        assert_eq!(q["labelSelector"], "rotor.dev/balance");
        assert_eq!(q["limit"], "500");
        let sel = Selector::parse(&q["labelSelector"]).expect("selector");
        assert!(sel.matches(&json!({"rotor.dev/balance": "round-robin"})));
        assert!(!sel.matches(&json!({"app": "echo"})));
        assert!(!sel.matches(&Value::Null));
        let sel = Selector::parse("app=echo,!canary,tier!=db").expect("selector");
        assert!(sel.matches(&json!({"app": "echo", "tier": "web"})));
        assert!(!sel.matches(&json!({"app": "echo", "canary": "1"})));
        assert!(!sel.matches(&json!({"app": "echo", "tier": "db"})));
        let sel = Selector::parse("kubernetes.io/service-name in (db, ext),app").expect("set");
        assert!(sel.matches(&json!({"kubernetes.io/service-name": "ext", "app": "x"})));
        assert!(!sel.matches(&json!({"kubernetes.io/service-name": "web", "app": "x"})));
        assert!(!sel.matches(&json!({"app": "x"})));
        let sel = Selector::parse("tier notin (db)").expect("notin");
        assert!(sel.matches(&json!({"tier": "web"})) && sel.matches(&json!({})));
        assert!(!sel.matches(&json!({"tier": "db"})));
        assert!(Selector::parse("env in (a,b").is_err());
        assert!(Selector::parse("env within (a)").is_err());
    }

    #[test]
    fn routes() {
        assert_eq!(route("/api/v1/services"), Some(Kind::Service));
        assert_eq!(
            route("/api/v1/namespaces/default/services"),
            Some(Kind::Service)
        );
        assert_eq!(
            route("/apis/discovery.k8s.io/v1/endpointslices"),
            Some(Kind::EndpointSlice)
        );
        assert_eq!(route("/api/v1/pods"), None);
        assert_eq!(
            namespace_of("/api/v1/namespaces/prod/services").as_deref(),
            Some("prod")
        );
        assert_eq!(namespace_of("/api/v1/services"), None);
    }
}
