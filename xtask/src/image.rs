//! `cargo xtask image`: the agent's OCI image, built from scratch with
//! umoci (no image registry, no daemon), as `Containerfile` describes it:
//!
//! ```text
//! /usr/local/bin/rotor-agent      the agent, debug info stripped (entrypoint)
//! /lib/x86_64-linux-gnu/lib*.so.* the shared libraries `ldd` names for it
//! /lib64/ld-linux-x86-64.so.2     its program interpreter
//! ```
//!
//! Nothing else: no shell, no CLI, no CA bundle (the in-cluster API server
//! is trusted through the service account's ca.crt). The staged root is
//! kept at `target/image/rootfs` (the Containerfile's build context), the
//! OCI layout at `target/image/oci`, and the archive, tagged `latest` and
//! with the crate's version, at `target/image/rotor-agent.oci.tar`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Where the agent's executable goes in the image (the entrypoint).
pub const AGENT_PATH: &str = "usr/local/bin/rotor-agent";
const IMAGE: &str = "rotor-agent";
const VERSION: &str = env!("CARGO_PKG_VERSION");

pub struct Built {
    pub archive: PathBuf,
    pub files: Vec<String>,
}

fn run(cmd: &mut Command) -> Result<String> {
    let desc = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("running {desc}"))?;
    if !out.status.success() {
        bail!(
            "{desc} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The files `ldd` says `bin` loads (the vDSO has none), absolute paths.
pub fn shared_libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let out = run(Command::new("ldd").arg(bin))?;
    let mut libs = Vec::new();
    for line in out.lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
        // "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        match path {
            Some(p) if p.starts_with('/') => libs.push(PathBuf::from(p)),
            Some("not") => bail!("ldd {}: {}", bin.display(), line.trim()),
            _ => {}
        }
    }
    if libs.is_empty() {
        bail!("ldd named no library for {}", bin.display());
    }
    Ok(libs)
}

/// Copies `bin` and what it loads into a fresh `root`; returns the paths
/// relative to it.
fn stage(bin: &Path, root: &Path) -> Result<Vec<String>> {
    if root.exists() {
        fs::remove_dir_all(root).with_context(|| format!("removing {}", root.display()))?;
    }
    let agent = root.join(AGENT_PATH);
    fs::create_dir_all(agent.parent().context("agent path")?)?;
    // Line tables make the release binary ~90 MiB; the image keeps symbols.
    run(Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&agent)
        .arg(bin))?;
    let mut files = vec![AGENT_PATH.to_string()];
    for lib in shared_libraries(bin)? {
        let rel = lib.strip_prefix("/").context("absolute library path")?;
        let dst = root.join(rel);
        fs::create_dir_all(dst.parent().context("library path")?)?;
        // fs::copy follows the symlinks (libc.so.6 → libc-2.36.so on some systems).
        fs::copy(&lib, &dst).with_context(|| format!("copying {}", lib.display()))?;
        files.push(rel.display().to_string());
    }
    files.sort();
    Ok(files)
}

/// Builds the image from the agent at `bin` into `out` (target/image).
pub fn build(bin: &Path, out: &Path) -> Result<Built> {
    if !bin.is_file() {
        bail!(
            "{} not found: build it first (cargo build --release -p rotor)",
            bin.display()
        );
    }
    let rootfs = out.join("rootfs");
    let files = stage(bin, &rootfs)?;
    let layout = out.join("oci");
    if layout.exists() {
        fs::remove_dir_all(&layout)?;
    }
    let image = format!("{}:latest", layout.display());
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout))?;
    run(Command::new("umoci").args(["new", "--image", &image]))?;
    run(Command::new("umoci")
        .args(["insert", "--image", &image])
        .arg(&rootfs)
        .arg("/"))?;
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image,
        "--os",
        "linux",
        "--architecture",
        "amd64",
        "--config.user",
        "0:0",
        "--config.workingdir",
        "/",
        "--config.entrypoint",
        &format!("/{AGENT_PATH}"),
        "--clear=config.cmd",
        "--clear=config.env",
        "--config.label",
        &format!("org.opencontainers.image.version={VERSION}"),
        "--config.label",
        "org.opencontainers.image.title=rotor-agent",
    ]))?;
    run(Command::new("umoci").args(["tag", "--image", &image, VERSION]))?;
    run(Command::new("umoci").args(["gc", "--layout"]).arg(&layout))?;
    let archive = out.join(format!("{IMAGE}.oci.tar"));
    run(Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
            "-C",
        ])
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .arg("."))?;
    Ok(Built { archive, files })
}
