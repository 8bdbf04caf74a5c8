use super::*;

// The tests below load programs and create maps: they need root (or
// CAP_BPF and CAP_NET_ADMIN), as `cargo xtask test` and CI run them. They
// do not skip without it: a probe test that passes without probing would
// say nothing.

#[test]
fn instructions_encode_like_the_kernel_reads_them() {
    assert_eq!(std::mem::size_of::<Insn>(), 8);
    let [a, b] = asm::ld_map_fd(asm::R2, 7);
    assert_eq!((a.code, a.regs, a.imm), (0x18, 0x12, 7));
    assert_eq!(b, asm::insn(0, 0, 0, 0, 0));
    let f = asm::atomic_w(asm::R0, asm::R1, 4, asm::ATOMIC_OR | asm::FETCH);
    assert_eq!((f.code, f.regs, f.off, f.imm), (0xc3, 0x10, 4, 0x41));
    assert_eq!(asm::jeq_imm(asm::R0, 0, 3).off, 3);
}

#[test]
fn jumps_in_probe_programs_stay_inside() {
    let progs = [
        atomic_prog(3, false, asm::ATOMIC_ADD, 0),
        ringbuf_prog(3),
        jmp32_prog(),
        connect4_prog(3),
        sockops_prog(3, 4),
        getpeername4_prog(3),
        parser_prog(),
        verdict_prog(3),
    ];
    for p in progs {
        assert_eq!(p.last(), Some(&asm::exit()));
        for (i, insn) in p.iter().enumerate() {
            if matches!(insn.code, 0x15 | 0x16) {
                let to = i as i64 + 1 + insn.off as i64;
                assert!(
                    (0..p.len() as i64).contains(&to),
                    "jump out of program at {i}"
                );
            }
        }
    }
}

#[test]
fn unknown_helper_logs_are_recognised() {
    assert!(log_says_unknown_helper(
        "0: (85) call bpf_ringbuf_reserve#131\nunknown func bpf_ringbuf_reserve#131\n"
    ));
    assert!(log_says_unknown_helper(
        "0: (85) call unknown#195\ninvalid func unknown#195\n"
    ));
    assert!(!log_says_unknown_helper(
        "0: (85) call bpf_map_lookup_elem#1\nR1 type=ctx expected=map_ptr\n"
    ));
    assert!(!log_says_unknown_helper("R2 !read_ok"));
}

#[test]
fn log_tail_skips_statistics() {
    let log = "0: (b7) r0 = 0\n1: (c3) unknown opcode c3\n\nprocessed 2 insns (limit 1000000)\n";
    assert_eq!(
        log_tail(log, 3),
        "0: (b7) r0 = 0 | 1: (c3) unknown opcode c3"
    );
}

#[test]
fn refusal_names_feature_kernel_and_what_to_do() {
    let e = ProbeError::Missing {
        kernel: "5.10.0-32-amd64".into(),
        missing: vec![Missing {
            feature: &INSN_ATOMIC_FETCH_ADD_W,
            detail: "Invalid argument (verifier: BPF_ATOMIC uses invalid atomic opcode 01)".into(),
            log: String::new(),
        }],
    };
    let s = e.to_string();
    for want in [
        "5.10.0-32-amd64",
        "fetch-and-add",
        "Linux 5.12+",
        "invalid atomic opcode",
        "Linux 6.1 or newer",
        "a feature",
    ] {
        assert!(s.contains(want), "{want:?} not in {s}");
    }
    assert_eq!(e.missing().len(), 1);
    let d = ProbeError::Denied {
        kernel: "6.1.0".into(),
        source: io::Error::from_raw_os_error(libc::EPERM),
    };
    assert!(d.to_string().contains("CAP_BPF"));
}

#[test]
fn every_feature_is_listed_once() {
    for (i, a) in ALL.iter().enumerate() {
        for b in &ALL[i + 1..] {
            assert_ne!(a.name, b.name);
        }
    }
}

/// The probe on the running kernel. `cargo xtask kernels` runs this test in
/// each VM and reads the `ROTOR-PROBE` line.
#[test]
fn this_kernel() {
    match probe_kernel(None) {
        Ok(s) => println!(
            "ROTOR-PROBE ok kernel={} features={}",
            s.kernel,
            s.checked.len()
        ),
        Err(e) => {
            println!("ROTOR-PROBE refused {e}");
            for m in e.missing() {
                if !m.log.is_empty() {
                    println!("ROTOR-PROBE-LOG {}:\n{}", m.feature.name, m.log);
                }
            }
            panic!("{e}");
        }
    }
}

/// A helper no kernel has is reported as missing, by name.
#[test]
fn a_missing_helper_is_reported() {
    static BOGUS: Feature = Feature {
        name: "bpf_bogus#100000",
        since: None,
        used_for: "this test",
    };
    let mut c = Checker {
        checked: vec![],
        missing: vec![],
    };
    c.helper(&H_SKB_COOKIE, T_PROG_SK_SKB, 0, FN_GET_SOCKET_COOKIE);
    assert!(c.missing.is_empty(), "{:?}", c.missing);
    c.helper(&BOGUS, T_PROG_SK_SKB, 0, 100_000);
    assert_eq!(c.missing.len(), 1);
    assert_eq!(c.missing[0].feature.name, "bpf_bogus#100000");
    assert!(
        log_says_unknown_helper(&c.missing[0].log),
        "{}",
        c.missing[0].log
    );
}

/// Links to a cgroup made for the test, removed afterwards: the probe
/// attaches each cgroup program there through a bpf link and says so.
#[test]
fn cgroup_links() {
    // The cgroup v2 tree: its own mount on a hybrid hierarchy (this
    // machine's), else /sys/fs/cgroup; as the test bed finds it.
    let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("cgroup.controllers").exists())
        .expect("a cgroup v2 mount at /sys/fs/cgroup/unified or /sys/fs/cgroup");
    let dir = root.join(format!("rotor-probe-test-{}", std::process::id()));
    std::fs::create_dir(&dir).expect("create test cgroup (needs root)");
    let with = probe_kernel(Some(&dir));
    let _ = std::fs::remove_dir(&dir);
    let without = probe_kernel(None);
    let links = [&LINK_CONNECT4, &LINK_GETPEERNAME4, &LINK_SOCKOPS];
    match (with, without) {
        (Ok(with), Ok(without)) => {
            for link in links {
                assert!(
                    with.checked.contains(&link),
                    "{} not checked with a cgroup",
                    link.name
                );
                assert!(
                    !without.checked.contains(&link),
                    "{} checked without a cgroup to link to",
                    link.name
                );
            }
        }
        // A kernel refused for something else (this_kernel says what)
        // must still have had its links made.
        (with, _) => {
            let e = with.expect_err("the probe without a cgroup failed, with one it did not");
            assert!(
                !e.missing().iter().any(|m| links.contains(&m.feature)),
                "{e}"
            );
        }
    }
}
