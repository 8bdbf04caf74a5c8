//! Compiles the eBPF object the agent embeds, and the ABI layout check.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    // At run time: a build script compiled for one checkout may run for another.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let ebpf = Path::new(&manifest).join("../ebpf");
    println!("cargo:rerun-if-changed={}", ebpf.display());
    println!("cargo:rerun-if-env-changed=ROTOR_CLANG");

    let clang = std::env::var("ROTOR_CLANG").unwrap_or_else(|_| find_clang());
    let multiarch = Command::new("gcc")
        .arg("-dumpmachine")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "x86_64-linux-gnu".into());
    run(Command::new(&clang)
        .args([
            "-target", "bpf", "-mcpu=v3", "-O2", "-g", "-Wall", "-Werror",
        ])
        .arg(format!("-I{}", ebpf.join("include").display()))
        .arg(format!("-I{}", ebpf.join("lib").display()))
        .arg(format!("-I/usr/include/{multiarch}"))
        .arg("-c")
        .arg(ebpf.join("rotor.c"))
        .arg("-o")
        .arg(out.join("rotor.bpf.o")));

    let check = out.join("abi_check");
    run(Command::new(&clang)
        .arg(format!("-I{}", ebpf.join("include").display()))
        .arg(ebpf.join("abi_check.c"))
        .arg("-o")
        .arg(&check));
    let layout = Command::new(&check).output().expect("run abi_check");
    std::fs::write(out.join("abi_layout.rs"), layout.stdout).expect("write abi_layout.rs");
}

fn find_clang() -> String {
    for c in ["clang-16", "clang"] {
        if Command::new(c).arg("--version").output().is_ok() {
            return c.to_string();
        }
    }
    panic!("clang not found: install clang-16 and libbpf-dev (cargo xtask deps does)");
}

fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed");
}
