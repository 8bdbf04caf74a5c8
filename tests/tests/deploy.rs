//! The manifests in deploy/ are valid Kubernetes objects (kubernetes-validate,
//! from PyPI, strict: unknown fields are errors; and parsed offline into
//! k8s-openapi's types, with every field known) and run the agent on the
//! Kubernetes source with least privilege, probes and a kernel check.

use std::path::{Path, PathBuf};
use std::process::Command;

use rotor_tests::peers::python;

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
        // kustomize's own file, not an API object (kustomization_*, below).
        .filter(|p| !p.ends_with("kustomization.yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn manifests_validate_against_the_kubernetes_schema() {
    let have = Command::new(python())
        .args(["-c", "import kubernetes_validate"])
        .output();
    assert!(
        have.is_ok_and(|o| o.status.success()),
        "{python:?} cannot import kubernetes_validate: `cargo xtask deps` installs it (pip install kubernetes-validate)",
        python = python()
    );
    let files = manifests();
    assert!(files.len() >= 4, "{files:?}");
    let out = Command::new(python())
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
        "namespace/rotor-system",
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
    let rules: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&rbac)
        .filter_map(|d| <serde_yaml_ng::Value as serde::Deserialize>::deserialize(d).ok())
        .filter(|d| d["kind"] == "ClusterRole")
        .flat_map(|d| d["rules"].as_sequence().cloned().unwrap_or_default())
        .collect();
    let allows = |group: &str, resource: &str, verb: &str| {
        rules.iter().any(|r| {
            let has = |k: &str, v: &str| {
                r[k].as_sequence()
                    .is_some_and(|s| s.iter().any(|x| x.as_str() == Some(v)))
            };
            has("apiGroups", group) && has("resources", resource) && has("verbs", verb)
        })
    };
    // What the watches read: the Services, their slices, and this node's
    // Node for its zone (model/kube/node.rs).
    for (group, resource) in [
        ("", "services"),
        ("discovery.k8s.io", "endpointslices"),
        ("", "nodes"),
    ] {
        for verb in ["list", "watch"] {
            assert!(
                allows(group, resource, verb),
                "RBAC lacks {verb} on {resource}: {rbac}"
            );
        }
    }
    // the Event on a Service whose label names no policy (model/kube/events.rs)
    assert!(
        allows("events.k8s.io", "events", "create"),
        "RBAC lacks create on events.k8s.io events: {rbac}"
    );
    assert!(
        ds.contains("name: NODE_NAME") && ds.contains("fieldPath: spec.nodeName"),
        "the agent is not told its node name: {ds}"
    );
}

/// Every document of every manifest, as YAML values.
fn documents() -> Vec<(PathBuf, serde_yaml_ng::Value)> {
    let mut out = Vec::new();
    for file in manifests() {
        let text = std::fs::read_to_string(&file).expect("manifest");
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let v = <serde_yaml_ng::Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if !v.is_null() {
                out.push((file.clone(), v));
            }
        }
    }
    out
}

/// `doc` as a `T`, failing on any field `T` does not have: k8s-openapi's
/// types skip unknown fields, so a typo (`readOnlyRootFileSystem`) would
/// parse and be lost; what comes back from `T` must be what went in.
fn strict<T>(file: &Path, doc: &serde_yaml_ng::Value) -> T
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = serde_yaml_ng::from_value(doc.clone())
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let back = serde_yaml_ng::to_value(&typed).expect("serialize");
    let (want, got) = (
        serde_json::to_value(doc).expect("json"),
        serde_json::to_value(&back).expect("json"),
    );
    if want != got {
        panic!(
            "{}: fields the API does not know (or typed differently):\n{}\nparsed back as\n{}",
            file.display(),
            serde_json::to_string_pretty(&want).unwrap_or_default(),
            serde_json::to_string_pretty(&got).unwrap_or_default()
        );
    }
    typed
}

#[test]
fn manifests_parse_offline_into_kubernetes_types_with_every_field_known() {
    use k8s_openapi::api::apps::v1::DaemonSet;
    use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
    let mut kinds = Vec::new();
    for (file, doc) in documents() {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        match (
            doc["apiVersion"].as_str().unwrap_or_default(),
            kind.as_str(),
        ) {
            ("apps/v1", "DaemonSet") => drop(strict::<DaemonSet>(&file, &doc)),
            ("v1", "Namespace") => drop(strict::<Namespace>(&file, &doc)),
            ("v1", "Service") => drop(strict::<Service>(&file, &doc)),
            ("v1", "ServiceAccount") => drop(strict::<ServiceAccount>(&file, &doc)),
            ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
                drop(strict::<ClusterRole>(&file, &doc))
            }
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
                drop(strict::<ClusterRoleBinding>(&file, &doc))
            }
            (v, k) => panic!("{}: no type for {v} {k}", file.display()),
        }
        kinds.push(kind);
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet",
            "Namespace",
            "Service",
            "ServiceAccount"
        ]
    );
}

fn daemonset() -> k8s_openapi::api::apps::v1::DaemonSet {
    let file = deploy_dir().join("daemonset.yaml");
    let doc = serde_yaml_ng::from_str(&std::fs::read_to_string(&file).expect("daemonset.yaml"))
        .expect("YAML");
    strict(&file, &doc)
}

/// Not privileged; CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON added after
/// dropping ALL (what tests/capabilities.rs and tests/image.rs run the
/// agent with); RuntimeDefault seccomp; read-only root; Linux nodes only;
/// the kernel probe first; probes on the port `--health-addr` names.
#[test]
fn daemonset_runs_with_least_privilege_probes_and_a_kernel_check() {
    let ds = daemonset();
    let pod = ds.spec.and_then(|s| s.template.spec).expect("pod spec");
    assert_eq!(
        pod.node_selector
            .as_ref()
            .and_then(|n| n.get("kubernetes.io/os"))
            .map(String::as_str),
        Some("linux")
    );
    let init = pod.init_containers.clone().unwrap_or_default();
    assert_eq!(init.len(), 1, "one init container: the kernel probe");
    assert_eq!(
        init[0]
            .args
            .as_deref()
            .and_then(|a| a.first())
            .map(String::as_str),
        Some("--probe")
    );
    assert_eq!(pod.containers.len(), 1);
    let agent = &pod.containers[0];
    assert_eq!(init[0].image, agent.image, "the probe is the agent's image");
    for c in [&init[0], agent] {
        let sc = c.security_context.clone().expect("securityContext");
        assert_eq!(sc.privileged, Some(false), "{}", c.name);
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
        assert_eq!(
            sc.seccomp_profile.map(|p| p.type_).as_deref(),
            Some("RuntimeDefault"),
            "{}",
            c.name
        );
        let caps = sc.capabilities.expect("capabilities");
        assert_eq!(caps.drop, Some(vec!["ALL".to_string()]), "{}", c.name);
        let mut add = caps.add.unwrap_or_default();
        add.sort();
        assert_eq!(add, ["BPF", "NET_ADMIN", "PERFMON"], "{}", c.name);
    }
    let args = agent.args.clone().unwrap_or_default();
    let health = args
        .iter()
        .find_map(|a| a.strip_prefix("--health-addr="))
        .expect("--health-addr");
    let port: i32 = health
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .expect("health port");
    // A declared port of a host-network pod is a host port, and would keep
    // the surge pod of an upgrade off the node: the probes name the number.
    assert!(
        agent.ports.as_ref().is_none_or(|p| p.is_empty()),
        "no container port: {:?}",
        agent.ports
    );
    for (probe, path) in [
        (agent.readiness_probe.as_ref(), "/readyz"),
        (agent.liveness_probe.as_ref(), "/healthz"),
    ] {
        let get = probe.and_then(|p| p.http_get.as_ref()).expect(path);
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port)
        );
    }
    // Upgrades start the new agent beside the old, which drains within the
    // pod's grace period.
    let strategy = ds_strategy();
    assert_eq!(
        (strategy.0.as_deref(), strategy.1.as_deref()),
        (Some("1"), Some("0")),
        "maxSurge 1, maxUnavailable 0"
    );
    let drain: i64 = args
        .iter()
        .find_map(|a| a.strip_prefix("--drain-timeout="))
        .and_then(|s| s.parse().ok())
        .expect("--drain-timeout");
    let grace = pod
        .termination_grace_period_seconds
        .expect("terminationGracePeriodSeconds");
    assert!(
        drain < grace,
        "--drain-timeout {drain} s within the grace period {grace} s"
    );
}

/// The DaemonSet's (maxSurge, maxUnavailable), as strings.
fn ds_strategy() -> (Option<String>, Option<String>) {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let text = |v: Option<IntOrString>| {
        v.map(|v| match v {
            IntOrString::Int(n) => n.to_string(),
            IntOrString::String(s) => s,
        })
    };
    let update = daemonset()
        .spec
        .and_then(|s| s.update_strategy)
        .and_then(|u| u.rolling_update)
        .expect("a rolling update");
    (text(update.max_surge), text(update.max_unavailable))
}

/// The fields kustomize reads here (unknown ones are an error).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Kustomization {
    api_version: String,
    kind: String,
    namespace: String,
    resources: Vec<String>,
    images: Vec<KustomizeImage>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KustomizeImage {
    name: String,
    new_name: String,
    new_tag: String,
}

/// The kustomization applies every manifest but the example, in the
/// namespace it creates, and its `images:` entry is the name the
/// DaemonSet's containers use.
#[test]
fn kustomization_names_the_namespace_the_image_and_every_manifest() {
    let text = std::fs::read_to_string(deploy_dir().join("kustomization.yaml"))
        .expect("kustomization.yaml");
    let k: Kustomization = serde_yaml_ng::from_str(&text).expect("kustomization");
    assert_eq!(
        (k.api_version.as_str(), k.kind.as_str()),
        ("kustomize.config.k8s.io/v1beta1", "Kustomization")
    );
    let mut listed = k.resources.clone();
    listed.sort();
    let mut want: Vec<String> = manifests()
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| n != "example-service.yaml")
        .collect();
    want.sort();
    assert_eq!(listed, want);
    let ns = documents()
        .into_iter()
        .find(|(_, d)| d["kind"] == "Namespace")
        .expect("a Namespace");
    assert_eq!(
        ns.1["metadata"]["name"].as_str(),
        Some(k.namespace.as_str())
    );
    assert_eq!(
        ns.1["metadata"]["labels"]["pod-security.kubernetes.io/enforce"].as_str(),
        Some("privileged"),
        "README, Install: the PodSecurity level"
    );
    let ds = daemonset();
    let pod = ds.spec.and_then(|s| s.template.spec).expect("pod spec");
    for c in pod.init_containers.iter().flatten().chain(&pod.containers) {
        assert_eq!(
            c.image.as_deref(),
            Some(k.images[0].name.as_str()),
            "{}",
            c.name
        );
    }
    assert!(!k.images[0].new_name.is_empty() && !k.images[0].new_tag.is_empty());
}

const MIB: f64 = 1024.0 * 1024.0;

/// From README's Resources paragraph (`cargo xtask bench --conn-memory`
/// measured them): the agent's memory at rest and per 1,000 client
/// connections, MiB.
fn documented_memory() -> (f64, f64) {
    let readme =
        std::fs::read_to_string(deploy_dir().join("..").join("README.md")).expect("README.md");
    let para = readme
        .split("### Resources")
        .nth(1)
        .and_then(|s| s.split("\n#").next())
        .expect("README: a `### Resources` section");
    let number_before = |marker: &str| -> f64 {
        let at = para
            .find(marker)
            .unwrap_or_else(|| panic!("README's Resources paragraph says `N{marker}`"));
        let word = para[..at].split_whitespace().last().unwrap_or_default();
        word.trim_matches('*')
            .replace(',', "")
            .parse()
            .unwrap_or_else(|e| panic!("README: {word:?}{marker}: {e}"))
    };
    (
        number_before(" MiB at rest"),
        number_before(" MiB per 1,000 client connections"),
    )
}

/// `--NAME=VALUE` from `args`, else the default `rotor-agent --help` prints.
fn agent_setting(args: &[String], name: &str) -> u64 {
    if let Some(v) = args
        .iter()
        .find_map(|a| a.strip_prefix(&format!("--{name}=")))
    {
        return v.parse().unwrap_or_else(|e| panic!("--{name}={v}: {e}"));
    }
    let bin = rotor_testbed::agent::agent_binary().expect("rotor-agent");
    let out = Command::new(bin)
        .arg("--help")
        .output()
        .expect("rotor-agent --help");
    let help = String::from_utf8_lossy(&out.stdout);
    let from = help
        .find(&format!("--{name} "))
        .unwrap_or_else(|| panic!("rotor-agent --help has no --{name}"));
    let rest = &help[from..];
    let default = rest
        .split("[default: ")
        .nth(1)
        .and_then(|d| d.split(']').next())
        .unwrap_or_else(|| panic!("no default for --{name}"));
    default.parse().expect("a numeric default")
}

/// A Kubernetes memory quantity (`768Mi`, `1Gi`, `500M`, `123456`), bytes.
fn quantity_bytes(q: &str) -> f64 {
    let units = [
        ("Ki", 1024.0),
        ("Mi", MIB),
        ("Gi", 1024.0 * MIB),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
    ];
    for (suffix, unit) in units {
        if let Some(n) = q.strip_suffix(suffix) {
            return n.parse::<f64>().expect("quantity") * unit;
        }
    }
    q.parse().expect("quantity")
}

/// The memory limit covers what README says the agent takes for the
/// connections the DaemonSet lets it carry (`--max-conns`, or its default)
/// plus what it may queue (`--max-queued-bytes`), and the request covers
/// its baseline and 1,000 connections: raising one without the other
/// (the limit once was 512 MiB for 16,384 connections, ≈ 1.8 GiB of
/// them) fails here instead of in an OOM kill on a busy node.
#[test]
fn memory_limit_covers_the_documented_cost_of_the_connections_allowed() {
    let (at_rest, per_thousand) = documented_memory();
    let ds = daemonset();
    let pod = ds.spec.and_then(|s| s.template.spec).expect("pod spec");
    let agent = &pod.containers[0];
    let args = agent.args.clone().unwrap_or_default();
    let conns = agent_setting(&args, "max-conns") as f64;
    let queued = agent_setting(&args, "max-queued-bytes") as f64;
    let res = agent.resources.clone().expect("resources");
    let memory = |m: Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
                  what: &str| {
        quantity_bytes(
            &m.and_then(|m| m.get("memory").cloned())
                .unwrap_or_else(|| panic!("no memory {what}"))
                .0,
        )
    };
    let limit = memory(res.limits, "limit");
    let request = memory(res.requests, "request");
    let need = (at_rest + conns / 1000.0 * per_thousand) * MIB + queued;
    assert!(
        limit >= need,
        "memory limit {:.0} MiB < {at_rest} MiB at rest + {conns} connections × {per_thousand} MiB per 1,000 + {:.0} MiB --max-queued-bytes = {:.0} MiB",
        limit / MIB,
        queued / MIB,
        need / MIB
    );
    let rest_and_1000 = (at_rest + per_thousand) * MIB;
    assert!(
        request >= rest_and_1000 && request <= limit,
        "memory request {:.0} MiB: at least the baseline and 1,000 connections ({:.0} MiB), at most the limit",
        request / MIB,
        rest_and_1000 / MIB
    );
}
