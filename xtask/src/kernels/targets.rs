//! Which tests a kernel runs: the smoke subset, every integration test
//! target of `rotor-tests` (as cargo lists them, so a new file in
//! tests/tests joins `--full` without an edit here), or the targets named
//! with `--test`.

use std::collections::BTreeMap;

use super::*;

/// One column of the matrix: a test target (whole, or with a filter).
#[derive(Clone, Debug)]
pub(super) struct Column {
    pub name: String,
    pub bin: PathBuf,
    pub filter: String,
}

/// Every integration test target of `rotor-tests` with its executable,
/// built by one `cargo test --no-run` (one build, not one per target).
pub(super) fn integration_tests() -> Result<BTreeMap<String, PathBuf>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .args(["test", "--release", "--no-run", "--message-format=json"])
        .args(["-p", "rotor-tests", "--tests"])
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .context("cargo test --no-run -p rotor-tests --tests")?;
    if !out.status.success() {
        bail!("cargo test --no-run -p rotor-tests --tests failed");
    }
    let found = executables_of_kind(&String::from_utf8_lossy(&out.stdout), "test");
    if found.is_empty() {
        bail!("cargo listed no integration test target in rotor-tests");
    }
    Ok(found)
}

/// (target name → executable) of the test executables of `kind` in cargo's
/// JSON messages.
pub(super) fn executables_of_kind(json: &str, kind: &str) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    for line in json.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let is_test = v.pointer("/profile/test").and_then(|t| t.as_bool()) == Some(true);
        let kinds = v.pointer("/target/kind").and_then(|k| k.as_array());
        let of_kind = kinds.is_some_and(|k| k.iter().any(|x| x.as_str() == Some(kind)));
        let name = v.pointer("/target/name").and_then(|n| n.as_str());
        let exe = v.get("executable").and_then(|e| e.as_str());
        if let (true, true, Some(name), Some(exe)) = (is_test, of_kind, name, exe) {
            found.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    found
}

/// The columns to run: `--test NAME[:FILTER]`s if any, else every target
/// with `--full`, else the smoke subset.
pub(super) fn columns(opts: &Options) -> Result<Vec<Column>> {
    if opts.tests.is_empty() && !opts.full {
        let mut cols = Vec::new();
        for (col, t, filter) in SMOKE {
            cols.push(Column {
                name: col.to_string(),
                bin: test_binary(&["-p", "rotor-tests", "--test", t])?,
                filter: filter.to_string(),
            });
        }
        return Ok(cols);
    }
    let all = integration_tests()?;
    if opts.tests.is_empty() {
        return Ok(all
            .into_iter()
            .map(|(name, bin)| Column {
                name,
                bin,
                filter: String::new(),
            })
            .collect());
    }
    opts.tests
        .iter()
        .map(|spec| {
            let (name, filter) = spec.split_once(':').unwrap_or((spec, ""));
            let bin = all.get(name).cloned().with_context(|| {
                format!(
                    "no integration test target {name}: one of {}",
                    all.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            Ok(Column {
                name: name.to_string(),
                bin,
                filter: filter.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_integration_test_executables_are_taken() {
        let json = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"rotor_tests"},"profile":{"test":true},"executable":"/t/deps/rotor_tests-1"}
{"reason":"compiler-artifact","target":{"kind":["test"],"name":"churn"},"profile":{"test":true},"executable":"/t/deps/churn-2"}
{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"rotor-load"},"profile":{"test":false},"executable":"/t/rotor-load"}
{"reason":"compiler-artifact","target":{"kind":["test"],"name":"grpc"},"profile":{"test":true},"executable":"/t/deps/grpc-3"}
{"reason":"build-finished","success":true}"#;
        let found = executables_of_kind(json, "test");
        assert_eq!(found.keys().collect::<Vec<_>>(), ["churn", "grpc"]);
        assert_eq!(found["churn"], PathBuf::from("/t/deps/churn-2"));
    }
}
