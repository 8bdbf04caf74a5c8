//! The manifests in deploy/ are valid Kubernetes objects (kubernetes-validate,
//! from PyPI, strict: unknown fields are errors) and run the agent on the
//! Kubernetes source.

use std::path::PathBuf;
use std::process::Command;

/// The Kubernetes version the manifests are checked against (k8s-openapi's feature too).
const KUBERNETES_VERSION: &str = "1.33";

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("deploy")
}

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(deploy_dir())
        .expect("deploy/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn manifests_validate_against_the_kubernetes_schema() {
    let have = Command::new("python3")
        .args(["-c", "import kubernetes_validate"])
        .output();
    assert!(
        have.is_ok_and(|o| o.status.success()),
        "python3 cannot import kubernetes_validate: `cargo xtask deps` installs it (pip install kubernetes-validate)"
    );
    let files = manifests();
    assert!(files.len() >= 3, "{files:?}");
    let out = Command::new("python3")
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "--no-warn",
            "-k",
            KUBERNETES_VERSION,
        ])
        .args(&files)
        .output()
        .expect("running kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate: {text}");
    for kind in [
        "daemonset/rotor-agent",
        "clusterrole/rotor-agent",
        "service/echo",
    ] {
        assert!(
            text.contains(&format!("passed for resource {kind}")),
            "{kind} not validated: {text}"
        );
    }
}

#[test]
fn daemonset_runs_the_kubernetes_source() {
    let ds = std::fs::read_to_string(deploy_dir().join("daemonset.yaml")).expect("daemonset.yaml");
    assert!(ds.contains("- --source=kubernetes"), "{ds}");
    assert!(
        !ds.contains("--config"),
        "the DaemonSet still reads a file: {ds}"
    );
    let rbac = std::fs::read_to_string(deploy_dir().join("rbac.yaml")).expect("rbac.yaml");
    for resource in ["services", "endpointslices"] {
        assert!(
            rbac.contains(&format!("[\"{resource}\"]")),
            "RBAC lacks {resource}: {rbac}"
        );
    }
    assert!(rbac.contains("[\"get\", \"list\", \"watch\"]"), "{rbac}");
}
