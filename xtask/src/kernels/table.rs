//! The matrix as a table: one row per kernel, one column per test target.

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
