//! Compiles the kernel's frame parser (ebpf/lib/h2.h) for the host, with
//! host/shim standing in for libbpf's headers (see host/kernel_parser.c).

use std::path::Path;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let root = Path::new(&manifest);
    let ebpf = root.join("../../ebpf");
    for p in [ebpf.join("lib"), ebpf.join("include"), root.join("host")] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    let mut build = cc::Build::new();
    // Under cargo-fuzz (which sets --cfg fuzzing) the parser's branches
    // feed libFuzzer's coverage like the Rust code's: clang's sancov
    // counters, the kind rustc's own instrumentation uses.
    println!("cargo:rerun-if-env-changed=CARGO_CFG_FUZZING");
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        let clang = std::env::var("ROTOR_CLANG").unwrap_or_else(|_| "clang-16".into());
        build
            .compiler(clang)
            .flag("-fsanitize-coverage=inline-8bit-counters,pc-table,trace-cmp");
    }
    build
        .file(root.join("host/kernel_parser.c"))
        // the shim first: <bpf/bpf_helpers.h> must be ours, not libbpf's
        .include(root.join("host/shim"))
        .include(ebpf.join("include"))
        .include(ebpf.join("lib"))
        .flag("-std=gnu11")
        .warnings(true)
        .extra_warnings(true)
        .flag_if_supported("-Wno-unused-parameter")
        .warnings_into_errors(true)
        .compile("rotor_kernel_parser");

    // The limits and frame types src/h2 takes from rotor.h (crate::ebpf::abi
    // there), generated the way the rotor crate generates its whole ABI.
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let multiarch = std::process::Command::new("gcc")
        .arg("-dumpmachine")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "x86_64-linux-gnu".into());
    bindgen::Builder::default()
        .header(ebpf.join("include/rotor.h").display().to_string())
        .clang_arg("--target=bpf")
        .clang_arg(format!("-I/usr/include/{multiarch}"))
        .allowlist_var("ROTOR_.*")
        .generate()
        .expect("bindgen on rotor.h (needs libclang: `cargo xtask deps`)")
        .write_to_file(out.join("abi.rs"))
        .expect("writing abi.rs");
}
