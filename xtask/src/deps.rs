//! `cargo xtask deps`: install the system packages rotor needs, only those
//! that are missing.
//!
//! A tool counts as present when its command is on PATH, whoever installed
//! it: the machine image may ship `node` and `npm` from NodeSource, and
//! asking apt for Debian's `npm` beside that `nodejs` fails (the two conflict,
//! apt exits 100). So the package list is never installed whole; only the
//! packages behind missing commands and headers are named.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// What the project needs from the system: a command on PATH (or a header
/// package dpkg must know), and the Debian package that provides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Need {
    Command(&'static str, &'static str),
    /// A package without a command (headers): checked with dpkg.
    Package(&'static str),
    /// A Python module a package provides (pip itself).
    PythonModule(&'static str, &'static str),
}

const NEEDS: &[Need] = &[
    Need::Command("clang-16", "clang-16"),
    Need::Command("llc-16", "llvm-16"),
    // libfuzzer-sys builds libFuzzer from C++ source (`cargo xtask fuzz`).
    Need::Command("c++", "g++"),
    Need::Command("bpftool", "bpftool"),
    Need::Command("python3", "python3"),
    Need::PythonModule("pip", "python3-pip"),
    Need::Command("nghttpd", "nghttp2-server"),
    Need::Command("nghttp", "nghttp2-client"),
    Need::Command("h2load", "nghttp2-client"),
    Need::Command("ip", "iproute2"),
    Need::Command("tc", "iproute2"),
    Need::Command("iptables", "iptables"),
    Need::Command("iptables-restore", "iptables"),
    Need::Command("curl", "curl"),
    Need::Command("haproxy", "haproxy"),
    // Debian's nodejs brings node; npm is a package of its own there, while
    // NodeSource's nodejs ships both. Each is asked for only if absent.
    Need::Command("node", "nodejs"),
    Need::Command("npm", "npm"),
    // The agent's image (`cargo xtask image`, tests/tests/image.rs): umoci
    // builds it without a daemon, strip drops the debug info, capsh runs
    // the agent from it with its capabilities only.
    Need::Command("umoci", "umoci"),
    Need::Command("strip", "binutils"),
    Need::Command("capsh", "libcap2-bin"),
    Need::Command("setpriv", "util-linux"),
    Need::Package("libbpf-dev"),
    Need::Package("linux-libc-dev"),
    // bindgen in userspace/build.rs loads libclang to read ebpf/include/rotor.h.
    // Debian's clang-16 depends on it; a clang from elsewhere may not bring it.
    Need::Package("libclang1-16"),
];

/// How the machine answers "is this there?"; a trait so the selection is
/// tested without touching the machine.
trait Probe {
    fn has_command(&self, cmd: &str) -> bool;
    fn has_package(&self, pkg: &str) -> bool;
    fn has_python_module(&self, module: &str) -> bool;
}

struct Machine;

impl Probe for Machine {
    fn has_command(&self, cmd: &str) -> bool {
        Command::new("sh")
            .args(["-c", "command -v \"$1\" >/dev/null 2>&1", "sh", cmd])
            .stdin(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn has_package(&self, pkg: &str) -> bool {
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

    fn has_python_module(&self, module: &str) -> bool {
        python_has(module)
    }
}

/// The Debian packages to install: one per missing need, each named once,
/// in a stable order. Nothing that is present, from any source, is named.
fn select(probe: &impl Probe) -> Vec<&'static str> {
    let mut m: Vec<&str> = NEEDS
        .iter()
        .filter_map(|need| match *need {
            Need::Command(cmd, pkg) => (!probe.has_command(cmd)).then_some(pkg),
            Need::Package(pkg) => (!probe.has_package(pkg)).then_some(pkg),
            Need::PythonModule(module, pkg) => {
                // Without python3 the module check says nothing; python3's
                // own package comes first and brings what it brings.
                (probe.has_command("python3") && !probe.has_python_module(module)).then_some(pkg)
            }
        })
        .collect();
    m.sort_unstable();
    m.dedup();
    m
}

/// What is missing, as package names.
pub fn missing() -> Vec<&'static str> {
    select(&Machine)
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
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
            ])
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
    let still: Vec<&str> = PYTHON_MODULES
        .iter()
        .filter(|(m, _)| !python_has(m))
        .map(|(m, _)| *m)
        .collect();
    if !still.is_empty() {
        bail!(
            "python3 still cannot import {} after pip install",
            still.join(", ")
        );
    }
    Ok(())
}

/// What `cargo xtask image` needs, and nothing else of the list.
pub fn ensure_image_tools() -> Result<()> {
    let want: Vec<&str> = ["umoci", "binutils"]
        .into_iter()
        .filter(|p| missing().contains(p))
        .collect();
    if want.is_empty() {
        return Ok(());
    }
    apt_get(&["update"])?;
    let mut args = vec!["install", "-y", "--no-install-recommends"];
    args.extend(want);
    apt_get(&args)
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
        && dir
            .join("node_modules/@grpc/proto-loader/package.json")
            .exists()
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
    println!(
        "xtask: missing, installing with apt-get: {}",
        missing.join(", ")
    );
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "installing {} needs root: run `cargo xtask deps` as root",
            missing.join(" ")
        );
    }
    apt_get(&["update", "-q"])?;
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend(&missing);
    apt_get(&args)?;
    let still = self::missing();
    if !still.is_empty() {
        bail!("still missing after apt-get install: {}", still.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A machine described by what it has.
    struct Fake {
        commands: Vec<&'static str>,
        packages: Vec<&'static str>,
        modules: Vec<&'static str>,
    }

    impl Probe for Fake {
        fn has_command(&self, cmd: &str) -> bool {
            self.commands.contains(&cmd)
        }
        fn has_package(&self, pkg: &str) -> bool {
            self.packages.contains(&pkg)
        }
        fn has_python_module(&self, module: &str) -> bool {
            self.modules.contains(&module)
        }
    }

    fn everything() -> Fake {
        let mut commands = Vec::new();
        let mut packages = Vec::new();
        let mut modules = Vec::new();
        for need in NEEDS {
            match *need {
                Need::Command(c, _) => commands.push(c),
                Need::Package(p) => packages.push(p),
                Need::PythonModule(m, _) => modules.push(m),
            }
        }
        Fake {
            commands,
            packages,
            modules,
        }
    }

    #[test]
    fn a_complete_machine_installs_nothing() {
        assert!(select(&everything()).is_empty());
    }

    /// This machine kind's image: NodeSource's nodejs brings node and npm,
    /// pyenv's python3 brings pip. Debian's npm would conflict with that
    /// nodejs, so it must not be named.
    #[test]
    fn node_and_npm_from_another_source_are_left_alone() {
        let mut m = everything();
        m.commands.retain(|c| {
            ![
                "clang-16", "llc-16", "nghttpd", "nghttp", "h2load", "haproxy", "bpftool",
            ]
            .contains(c)
        });
        m.packages.clear();
        let got = select(&m);
        assert_eq!(
            got,
            [
                "bpftool",
                "clang-16",
                "haproxy",
                "libbpf-dev",
                "libclang1-16",
                "linux-libc-dev",
                "llvm-16",
                "nghttp2-client",
                "nghttp2-server"
            ]
        );
        assert!(!got.contains(&"npm") && !got.contains(&"nodejs"), "{got:?}");
        assert!(!got.contains(&"python3-pip"), "{got:?}");
    }

    #[test]
    fn a_bare_debian_gets_the_whole_list_once() {
        let bare = Fake {
            commands: vec![],
            packages: vec![],
            modules: vec![],
        };
        let got = select(&bare);
        // python3 is missing, so pip is not judged; the rest is all there, once each.
        assert!(got.contains(&"nodejs") && got.contains(&"npm") && got.contains(&"python3"));
        assert!(!got.contains(&"python3-pip"));
        let mut sorted = got.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), got.len());
        assert_eq!(got.iter().filter(|p| **p == "nghttp2-client").count(), 1);
    }

    #[test]
    fn debian_node_without_npm_gets_only_npm() {
        let mut m = everything();
        m.commands.retain(|c| *c != "npm");
        assert_eq!(select(&m), ["npm"]);
    }

    #[test]
    fn python_without_pip_gets_python3_pip() {
        let mut m = everything();
        m.modules.clear();
        assert_eq!(select(&m), ["python3-pip"]);
    }
}
