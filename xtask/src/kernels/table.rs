//! The matrix as a table: one row per kernel, one column per test target.

use std::collections::BTreeMap;

use super::*;

/// `ok 40 features [3 s]` → `ok`; `refused kernel X lacks 4 features ...: A (…` → `refused: A`.
pub(super) fn cell(v: Option<&str>) -> String {
    let Some(v) = v else { return "-".into() };
    let v = v.split(" [").next().unwrap_or(v);
    let (status, rest) = v.split_once(' ').unwrap_or((v, ""));
    let short = |s: &str, n: usize| {
        if s.chars().count() > n {
            format!("{}…", s.chars().take(n).collect::<String>())
        } else {
            s.to_string()
        }
    };
    match status {
        "ok" => "ok".into(),
        "refused" => {
            // the first missing feature's name: after "needs: " (probe) or "lacks ..." text
            let what = rest.split_once("needs: ").map(|x| x.1).unwrap_or(rest);
            let what = what.split(" (").next().unwrap_or(what);
            format!("refused: {}", short(what, 48))
        }
        other => format!("{other}: {}", short(rest, 48)),
    }
}

pub(super) fn print_table(rows: &[KernelResult], cols: &[String]) {
    let mut table: Vec<Vec<String>> = vec![{
        let mut h = vec!["kernel".to_string(), "debian".into(), "boot".into()];
        h.extend(cols.iter().cloned());
        h.extend(["time".into(), "".into()]);
        h
    }];
    for r in rows {
        let mut line = vec![r.release.clone(), r.suite.clone(), r.boot.clone()];
        line.extend(cols.iter().map(|c| cell(r.get(c))));
        line.push(format!("{} s", r.seconds));
        line.push(if r.green() {
            "green".into()
        } else {
            "RED".into()
        });
        table.push(line);
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|i| {
            table
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    println!();
    for (n, line) in table.iter().enumerate() {
        let cells: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("| {} |", cells.join(" | "));
        if n == 0 {
            println!(
                "|{}|",
                widths
                    .iter()
                    .map(|w| "-".repeat(w + 2))
                    .collect::<Vec<_>>()
                    .join("|")
            );
        }
    }
    println!();
    println!(
        "Logs and results: {}/<kernel>/smoke.log, result.json",
        kernels_dir().display()
    );
}

/// `--table`: the whole-suite matrix from the kept results
/// (`tests/kernels/results/<release>/<target>.json`, record.rs), target ×
/// kernel, as the README's Kernels table shows it. Runs nothing.
pub fn print_full_table() -> Result<()> {
    let mut kernels: Vec<(String, BTreeMap<String, KernelResult>)> = Vec::new();
    // one directory per kernel release; none yet on a clone that never ran
    let mut dirs: Vec<PathBuf> = fs::read_dir(super::record::results_dir())
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    for dir in dirs {
        let mut by_target = BTreeMap::new();
        for entry in fs::read_dir(&dir)? {
            let p = entry?.path();
            if p.extension().is_some_and(|e| e == "json") {
                let r: Option<KernelResult> = fs::read_to_string(&p)
                    .ok()
                    .and_then(|t| serde_json::from_str(&t).ok());
                if let (Some(r), Some(stem)) = (r, p.file_stem()) {
                    by_target.insert(stem.to_string_lossy().into_owned(), r);
                }
            }
        }
        if let Some(first) = by_target.values().next() {
            kernels.push((format!("{} ({})", first.release, first.name), by_target));
        }
    }
    // every target of tests/tests, run or not, and any other that ran
    let mut targets: Vec<String> = fs::read_dir(workspace_root().join("tests/tests"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .chain(kernels.iter().flat_map(|(_, m)| m.keys().cloned()))
        .collect();
    targets.sort();
    targets.dedup();
    let head: Vec<&str> = kernels.iter().map(|(k, _)| k.as_str()).collect();
    let mut out = format!(
        "| target | {} |\n|---|{}\n",
        head.join(" | "),
        "---|".repeat(head.len())
    );
    for t in targets {
        let cells: Vec<String> = kernels
            .iter()
            .map(|(_, m)| m.get(&t).map_or("not run".into(), |r| full_cell(&t, r)))
            .collect();
        out.push_str(&format!("| {t} | {} |\n", cells.join(" | ")));
    }
    // into a pipe that may close early (`| head`): not a panic
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes());
    Ok(())
}

/// `ok, 4 passed, 79 s (scale 29.4), 2026-12-05 09:30, 3f62de4`: the
/// target's own line (`ok test result: ok. 4 passed [79 s]`), its run's
/// scale, when and from which commit.
fn full_cell(target: &str, r: &KernelResult) -> String {
    let v = r.get(target).unwrap_or("fail no result for this target");
    let (status, rest) = v.split_once(' ').unwrap_or((v, ""));
    let secs = rest
        .rsplit_once(" [")
        .map(|(_, s)| s.trim_end_matches(']'))
        .unwrap_or("");
    let passed = rest
        .split_once("ok. ")
        .and_then(|(_, p)| p.split_whitespace().next())
        .unwrap_or("?");
    // A result from before the scale was recorded: its log says, unless
    // a later run of the target is writing that log now.
    let scale = r.scale.or_else(|| {
        let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
        let json = Path::new(&r.log).with_extension("json");
        match (modified(Path::new(&r.log)), modified(&json)) {
            (Some(log), Some(json)) if log <= json => fs::read_to_string(&r.log)
                .ok()
                .and_then(|l| super::runner::scale_in(&l)),
            _ => None,
        }
    });
    let mut cell = if status == "ok" {
        format!("ok, {passed} passed, {secs}")
    } else {
        format!(
            "**{status}**: {}",
            cell(Some(v)).split_once(": ").map_or("", |x| x.1)
        )
    };
    if let Some(s) = scale {
        cell.push_str(&format!(" (scale {s:.1})"));
    }
    let date: String = r.date.replace('T', " ").chars().take(16).collect();
    cell.push_str(&format!(", {date}"));
    if !r.commit.is_empty() {
        cell.push_str(&format!(", {}", r.commit));
    }
    cell
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(line: &str, scale: Option<f64>, commit: &str) -> KernelResult {
        KernelResult {
            name: "newest".into(),
            suite: "trixie-backports".into(),
            release: "7.3.4+deb13-amd64".into(),
            package: String::new(),
            fingerprint: String::new(),
            boot: "ok".into(),
            results: vec![
                ("probe".into(), "ok kernel=7.3.4 features=50 [1 s]".into()),
                ("clients".into(), line.into()),
            ],
            seconds: 500,
            log: "/nonexistent/clients.log".into(),
            date: "2026-12-05T11:14:09Z".into(),
            scale,
            commit: commit.into(),
            source: String::new(),
        }
    }

    #[test]
    fn a_cell_says_what_passed_how_long_at_what_scale_when_and_from_what() {
        let ok = result(
            "ok test result: ok. 11 passed [491 s]",
            Some(33.9),
            "c9bbad9",
        );
        assert_eq!(
            full_cell("clients", &ok),
            "ok, 11 passed, 491 s (scale 33.9), 2026-12-05 11:14, c9bbad9"
        );
        let red = result(
            "fail rc=101 curl 4 MiB upload echo: exit status: 28 [589 s]",
            None,
            "",
        );
        assert_eq!(
            full_cell("clients", &red),
            "**fail**: rc=101 curl 4 MiB upload echo: exit status: 28, 2026-12-05 11:14"
        );
        assert!(full_cell("grpc", &ok).starts_with("**fail**"));
    }
}
