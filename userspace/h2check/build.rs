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
}
