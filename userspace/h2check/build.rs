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
    cc::Build::new()
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
