//! IPv4, IPv6 and dual-stack Services: one spec per port and family, each
//! with the endpoints of its own family's slices.

use super::*;

fn dual_stack(name: &str, ips: &[&str]) -> Service {
    let mut svc = service(name, true, ips[0], &[("", 8080)]);
    if let Some(spec) = svc.spec.as_mut() {
        spec.cluster_ips = Some(ips.iter().map(|ip| ip.to_string()).collect());
        spec.ip_families = Some(
            ips.iter()
                .map(|ip| if ip.contains(':') { "IPv6" } else { "IPv4" }.to_string())
                .collect(),
        );
    }
    svc
}

fn slices_of_both(svc: &str) -> [EndpointSlice; 2] {
    [
        slice(
            svc,
            "IPv4",
            &[("", 9090)],
            &[
                ("10.1.0.2", Some(true), None),
                ("10.1.0.1", Some(true), None),
            ],
        ),
        slice(
            svc,
            "IPv6",
            &[("", 9090)],
            &[
                ("fd00:1::2", Some(true), None),
                ("fd00:1::1", Some(true), None),
                ("fd00:1::3", Some(false), None),
            ],
        ),
    ]
}

fn got(m: &Model) -> Vec<(&str, String, Vec<SocketAddr>)> {
    m.services
        .iter()
        .map(|s| (s.name.as_str(), s.vip.to_string(), s.endpoints.clone()))
        .collect()
}

#[test]
fn dual_stack_balances_both_families_each_with_its_own_slices() {
    // IPv6 primary: listed first, and still both families are balanced
    for ips in [["fd00::20", "10.96.0.30"], ["10.96.0.30", "fd00::20"]] {
        let svc = dual_stack("ds", &ips);
        let [s4, s6] = slices_of_both("ds");
        let m = model_from([&svc], [&s6, &s4]);
        assert_eq!(
            got(&m),
            vec![
                (
                    "default/ds:8080",
                    "10.96.0.30:8080".into(),
                    addrs(&["10.1.0.1:9090", "10.1.0.2:9090"])
                ),
                (
                    "default/ds:8080/ipv6",
                    "[fd00::20]:8080".into(),
                    addrs(&["[fd00:1::1]:9090", "[fd00:1::2]:9090"])
                ),
            ],
            "clusterIPs {ips:?}"
        );
        m.validate().expect("valid model");
    }
}

#[test]
fn ipv6_only_service_has_ipv6_endpoints_only() {
    let svc = service("six", true, "fd00::40", &[("", 8080)]);
    let [s4, s6] = slices_of_both("six");
    let m = model_from([&svc], [&s4, &s6]);
    assert_eq!(
        got(&m),
        vec![(
            "default/six:8080/ipv6",
            "[fd00::40]:8080".into(),
            addrs(&["[fd00:1::1]:9090", "[fd00:1::2]:9090"])
        )]
    );
}

#[test]
fn ipv4_only_service_keeps_its_name_and_ipv4_endpoints() {
    let svc = service("four", true, "10.96.0.50", &[("", 8080)]);
    let [s4, s6] = slices_of_both("four");
    let m = model_from([&svc], [&s4, &s6]);
    assert_eq!(
        got(&m),
        vec![(
            "default/four:8080",
            "10.96.0.50:8080".into(),
            addrs(&["10.1.0.1:9090", "10.1.0.2:9090"])
        )]
    );
}

#[test]
fn an_address_of_the_other_family_in_a_slice_is_no_endpoint() {
    // A slice's addressType says the family; an address that disagrees
    // (a hand-written slice) would be a connect of the wrong family.
    let svc = dual_stack("odd", &["10.96.0.60", "fd00::60"]);
    let s4 = slice(
        "odd",
        "IPv4",
        &[("", 9090)],
        &[
            ("10.1.0.1", Some(true), None),
            ("fd00:1::9", Some(true), None),
        ],
    );
    let s6 = slice(
        "odd",
        "IPv6",
        &[("", 9090)],
        &[
            ("fd00:1::1", Some(true), None),
            ("10.1.0.9", Some(true), None),
        ],
    );
    let m = model_from([&svc], [&s4, &s6]);
    let eps: Vec<Vec<SocketAddr>> = m.services.iter().map(|s| s.endpoints.clone()).collect();
    assert_eq!(
        eps,
        vec![addrs(&["10.1.0.1:9090"]), addrs(&["[fd00:1::1]:9090"])]
    );
}

#[test]
fn the_index_keeps_both_families_of_a_dual_stack_service() {
    let svc = dual_stack("ix", &["fd00::70", "10.96.0.70"]);
    let [s4, s6] = slices_of_both("ix");
    let specs = service_specs(&svc, &[&s4, &s6], &NodeInfo::default());
    let vips: Vec<String> = specs.iter().map(|s| s.vip.to_string()).collect();
    assert_eq!(vips, ["10.96.0.70:8080", "[fd00::70]:8080"]);
}
