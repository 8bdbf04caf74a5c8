//! `cargo xtask deps`: install the system packages rotor needs, only if missing.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Debian packages to install.
pub const PACKAGES: &[&str] = &[
    "clang-16",
    "llvm-16",
    "libbpf-dev",
    "linux-libc-dev",
    "nghttp2-client",
    "nghttp2-server",
    "bpftool",
    "python3",
    "python3-pip",
    "iproute2",
    "iptables",
    "curl",
    "haproxy",
    "nodejs",
    "npm",
];

/// Commands that must be on PATH afterwards (and the package that provides each).
const COMMANDS: &[(&str, &str)] = &[
    ("clang-16", "clang-16"),
    ("llc-16", "llvm-16"),
    ("bpftool", "bpftool"),
    ("python3", "python3"),
    ("nghttpd", "nghttp2-server"),
    ("nghttp", "nghttp2-client"),
    ("h2load", "nghttp2-client"),
    ("ip", "iproute2"),
    ("iptables", "iptables"),
    ("iptables-restore", "iptables"),
    ("curl", "curl"),
    ("haproxy", "haproxy"),
    ("node", "nodejs"),
    ("npm", "npm"),
];

/// Packages checked with dpkg (headers, no command).
const DPKG_ONLY: &[&str] = &["libbpf-dev", "linux-libc-dev"];

fn has_command(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", "command -v \"$1\" >/dev/null 2>&1", "sh", cmd])
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed")
        })
}

/// What is missing, as package names.
pub fn missing() -> Vec<&'static str> {
    let mut m: Vec<&str> = COMMANDS
        .iter()
        .filter(|(c, _)| !has_command(c))
        .map(|(_, p)| *p)
        .collect();
    m.extend(DPKG_ONLY.iter().filter(|p| !dpkg_installed(p)));
    m.sort_unstable();
    m.dedup();
    m
}

fn apt_get(args: &[&str]) -> Result<()> {
    println!("xtask: apt-get {}", args.join(" "));
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .context("running apt-get")?;
    if !status.success() {
        bail!("apt-get {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Python modules the robustness tests' peers import, and the PyPI
/// packages that provide them (tests/peers/*.py).
const PYTHON_MODULES: &[(&str, &str)] = &[
    ("grpc", "grpcio"),
    ("grpc_tools", "grpcio-tools"),
    ("h2", "h2"),
    ("httpx", "httpx"),
    ("kubernetes_validate", "kubernetes-validate"),
];

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `python3 -m pip install` of the missing PyPI packages, if any. A Debian
/// python3 refuses installs into its own site-packages (PEP 668) unless told.
fn ensure_python() -> Result<()> {
    let missing: Vec<&str> = PYTHON_MODULES
        .iter()
        .filter(|(m, _)| !python_has(m))
        .map(|(_, p)| *p)
        .collect();
    if missing.is_empty() {
        println!("xtask: python test peers' packages present");
        return Ok(());
    }
    println!("xtask: pip install {}", missing.join(" "));
    let pip = |extra: &[&str]| {
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"])
            .args(extra)
            .args(&missing)
            .env("PIP_ROOT_USER_ACTION", "ignore")
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !pip(&[]) && !pip(&["--break-system-packages"]) {
        bail!("pip install {} failed", missing.join(" "));
    }
    let still: Vec<&str> = PYTHON_MODULES.iter().filter(|(m, _)| !python_has(m)).map(|(m, _)| *m).collect();
    if !still.is_empty() {
        bail!("python3 still cannot import {} after pip install", still.join(", "));
    }
    Ok(())
}

/// Installs the packages if anything is missing; does nothing otherwise.
pub fn ensure() -> Result<()> {
    ensure_system()?;
    ensure_python()?;
    ensure_node()
}

/// The Node gRPC client's packages (tests/peers/node), at the versions in
/// its package-lock.json.
fn ensure_node() -> Result<()> {
    let dir = crate::workspace_root().join("tests/peers/node");
    if dir.join("node_modules/@grpc/grpc-js/package.json").exists()
        && dir.join("node_modules/@grpc/proto-loader/package.json").exists()
    {
        println!("xtask: node test peer's packages present");
        return Ok(());
    }
    println!("xtask: npm ci in {}", dir.display());
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .status()
        .context("running npm")?;
    if !status.success() {
        bail!("npm ci in {} failed ({status})", dir.display());
    }
    Ok(())
}

fn ensure_system() -> Result<()> {
    let missing = missing();
    if missing.is_empty() {
        println!("xtask: system dependencies present");
        return Ok(());
    }
    println!("xtask: missing {}", missing.join(", "));
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "installing {} needs root: run `cargo xtask deps` as root",
            missing.join(" ")
        );
    }
    apt_get(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(PACKAGES);
    apt_get(&args)?;
    let still = self::missing();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(", "));
    }
    Ok(())
}
