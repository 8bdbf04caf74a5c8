//! The agent's image (`cargo xtask image`): it holds the agent and the
//! libraries it loads and nothing else, and the agent runs from it, as a
//! container runtime would start it for deploy/daemonset.yaml, and balances:
//! its root is the image's file system, read-only; its capabilities are
//! CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON only; it shares the node's network
//! namespace (hostNetwork) and sees the cgroup tree it balances.
//!
//! The image is `ROTOR_IMAGE` (an OCI archive) if set, else built now from
//! the release agent with `target/release/xtask image --no-build`.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use rotor_testbed::agent::agent_binary;
use rotor_testbed::util::{run, target_dir, TempDir};
use rotor_testbed::{Agent, TestBed};

const ENTRYPOINT: &str = "/usr/local/bin/rotor-agent";
const BACKENDS: [&str; 3] = ["be1", "be2", "be3"];
/// CAP_NET_ADMIN, CAP_PERFMON, CAP_BPF.
const NEEDED_BITS: [u32; 3] = [12, 38, 39];

fn archive() -> PathBuf {
    if let Some(p) = std::env::var_os("ROTOR_IMAGE") {
        return PathBuf::from(p);
    }
    let xtask = target_dir().join("release").join("xtask");
    run(Command::new(&xtask).args(["image", "--no-build"]))
        .unwrap_or_else(|e| panic!("{} image: {e:#}", xtask.display()));
    target_dir().join("image").join("rotor-agent.oci.tar")
}

/// The image unpacked by umoci into `dir/bundle`: `rootfs/` and the
/// runtime's `config.json`.
fn unpack(dir: &Path) -> PathBuf {
    // Both tests build target/image; one must not untar what the other is
    // rewriting.
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let layout = dir.join("oci");
    std::fs::create_dir_all(&layout).expect("layout dir");
    run(Command::new("tar")
        .arg("-xf")
        .arg(archive())
        .arg("-C")
        .arg(&layout))
    .expect("untar");
    let bundle = dir.join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .arg(&bundle))
    .expect("umoci unpack");
    bundle
}

/// Every file and symlink under `root`, relative.
fn files(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let t = e.file_type().expect("file type");
            if t.is_dir() {
                dirs.push(e.path());
            } else {
                let rel = e.path().strip_prefix(root).expect("under root").to_owned();
                out.insert(rel.display().to_string());
            }
        }
    }
    out
}

/// The libraries `ldd` names for the agent, relative to /.
fn ldd_files() -> BTreeSet<String> {
    let out = run(Command::new("ldd").arg(agent_binary().expect("agent"))).expect("ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let p = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => l.split_whitespace().next(),
            }?;
            p.strip_prefix('/').map(str::to_string)
        })
        .collect()
}

#[test]
fn image_holds_the_agent_and_its_libraries_only() {
    let dir = TempDir::new("rotor-image").expect("temp dir");
    let bundle = unpack(dir.path());
    let mut want = ldd_files();
    want.insert(ENTRYPOINT.trim_start_matches('/').to_string());
    assert_eq!(files(&bundle.join("rootfs")), want);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("config.json")).expect("config.json"))
            .expect("config JSON");
    assert_eq!(config["process"]["args"], serde_json::json!([ENTRYPOINT]));
    assert_eq!(config["process"]["user"]["uid"], 0);
}

/// The agent from the image's root: a wrapper that a container runtime
/// stands in for. In a mount namespace of its own it makes the root a
/// read-only bind mount, mounts /proc, a /dev with the devices every runtime
/// gives a container (the self-check's child has its stdout on /dev/null),
/// the host's /sys (the cgroup tree) and the test's directory (config,
/// admin socket) into it, then capsh
/// chroots, drops every capability but the three from the bounding set and
/// execs the image's entrypoint with the test's arguments.
fn image_runner(bundle: &Path, work: &Path) -> PathBuf {
    let root = bundle.join("rootfs");
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .expect("cap_last_cap")
        .trim()
        .parse()
        .expect("number");
    let drop_mask: u64 = (0..=last)
        .filter(|b| !NEEDED_BITS.contains(b))
        .map(|b| 1u64 << b)
        .sum();
    let decoded =
        run(Command::new("capsh").arg(format!("--decode={drop_mask:#x}"))).expect("capsh --decode");
    let decoded = String::from_utf8_lossy(&decoded.stdout);
    let drop = decoded.trim().split_once('=').expect("0x…=names").1;
    let script = work.join("image-agent.sh");
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
exec unshare --mount --propagation private -- sh -c '
set -e
root=$0; dir=$1; drop=$2; shift 2
mkdir -p "$root/proc" "$root/sys" "$root/dev" "$root$dir"
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount -t proc proc "$root/proc"
mount -t tmpfs -o nosuid,mode=755 tmpfs "$root/dev"
for d in null zero full random urandom; do
  touch "$root/dev/$d" && mount --bind "/dev/$d" "$root/dev/$d"
done
mount --rbind /sys "$root/sys"
mount --bind "$dir" "$root$dir"
cd "$root"
exec capsh --chroot="$root" --drop="$drop" --shell={ENTRYPOINT} -- "$@"
' '{}' '{}' '{drop}' "$@"
"#,
            root.display(),
            work.display()
        ),
    )
    .expect("runner script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

fn status_field(pid: u32, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .expect("field")
        .trim()
        .to_string()
}

#[test]
fn agent_from_the_image_with_only_its_capabilities_balances() {
    let mut bed = TestBed::new(3).expect("test bed");
    let dir = TempDir::new("rotor-image").expect("temp dir");
    let bundle = unpack(dir.path());
    let runner = image_runner(&bundle, bed.topo.dir());
    let agent = Agent::start_binary(
        &runner,
        &bed.topo,
        &bed.cgroup,
        &bed.topo.backend_addrs(),
        &[],
    )
    .expect("the agent from the image");
    let pid = agent.pid();
    let want: u64 = NEEDED_BITS.iter().map(|b| 1u64 << b).sum();
    assert_eq!(
        u64::from_str_radix(&status_field(pid, "CapEff:"), 16).expect("hex"),
        want,
        "the agent's effective capabilities"
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/root")).expect("root link"),
        bundle.join("rootfs"),
        "the agent's root is not the image's"
    );
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let root_mount = mountinfo
        .lines()
        .find(|l| l.split_whitespace().nth(4) == Some("/"))
        .expect("the agent's / in its mountinfo");
    assert!(
        root_mount
            .split_whitespace()
            .nth(5)
            .is_some_and(|o| o.split(',').any(|o| o == "ro")),
        "the image's root is writable: {root_mount}"
    );
    bed.agent = Some(agent);
    if let Err(e) = bed.check_balanced(&BACKENDS) {
        panic!("{e:#}");
    }
}
