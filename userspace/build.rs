//! Compiles the eBPF object the agent embeds, and generates the Rust side of
//! its ABI (ebpf/include/rotor.h) with bindgen, so the two cannot drift.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    if let Err(e) = build() {
        // A build script reports by failing; the message is what a
        // newcomer on a fresh machine reads first.
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn build() -> Result<(), String> {
    let out = PathBuf::from(env("OUT_DIR")?);
    // At run time: a build script compiled for one checkout may run for another.
    let manifest = env("CARGO_MANIFEST_DIR")?;
    let ebpf = Path::new(&manifest).join("../ebpf");
    println!("cargo:rerun-if-changed={}", ebpf.display());
    println!("cargo:rerun-if-env-changed=ROTOR_CLANG");

    let clang = match std::env::var("ROTOR_CLANG") {
        Ok(c) => c,
        Err(_) => find_clang()?,
    };
    let multiarch = Command::new("gcc")
        .arg("-dumpmachine")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "x86_64-linux-gnu".into());
    // The same include path for the programs and for bindgen: <linux/types.h>
    // needs the multiarch <asm/types.h>, which -target bpf does not add.
    let includes = [
        format!("-I{}", ebpf.join("include").display()),
        format!("-I{}", ebpf.join("lib").display()),
        format!("-I/usr/include/{multiarch}"),
    ];
    run(Command::new(&clang)
        // Warnings are errors: a newcomer's slip in C (an unused variable, a
        // signed/unsigned compare the verifier then sees differently) stops
        // the build here rather than at load time on a node.
        .args([
            "-target", "bpf", "-mcpu=v3", "-O2", "-g", "-Wall", "-Wextra", "-Werror",
        ])
        .args(&includes)
        .arg("-c")
        .arg(ebpf.join("rotor.c"))
        .arg("-o")
        .arg(out.join("rotor.bpf.o")))?;

    abi_bindings(
        &ebpf.join("include/rotor.h"),
        &includes,
        &out.join("abi.rs"),
    )
}

/// The structs, #defines and the stat enum of rotor.h as Rust, laid out for
/// the BPF target (`--target=bpf`): bindgen's size, alignment and offset
/// assertions then fail the build if the host would lay a struct out
/// differently from the programs.
fn abi_bindings(header: &Path, includes: &[String], out: &Path) -> Result<(), String> {
    let bindings = bindgen::Builder::default()
        .header(header.display().to_string())
        .clang_arg("--target=bpf")
        .clang_args(includes)
        .allowlist_file(r".*/rotor\.h")
        .constified_enum_module("stat")
        .derive_default(true)
        .derive_debug(true)
        .derive_eq(true)
        .derive_hash(true)
        .layout_tests(true)
        .parse_callbacks(Box::new(CamelCase))
        .generate()
        .map_err(|e| {
            format!(
                "bindgen on {}: {e}; it needs libclang (Debian: libclang1-16, which `cargo xtask deps` installs)",
                header.display()
            )
        })?;
    bindings
        .write_to_file(out)
        .map_err(|e| format!("writing {}: {e}", out.display()))
}

/// `struct parse_state` becomes `ParseState`, as Rust names types.
#[derive(Debug)]
struct CamelCase;

impl bindgen::callbacks::ParseCallbacks for CamelCase {
    fn item_name(&self, item: bindgen::callbacks::ItemInfo<'_>) -> Option<String> {
        let name = item.name.strip_prefix("struct ").unwrap_or(item.name);
        let is_type = matches!(item.kind, bindgen::callbacks::ItemKind::Type);
        // Only rotor's own structs: `__u32` and friends keep their names.
        if !is_type || name.starts_with('_') || name == "stat" {
            return None;
        }
        Some(
            name.split('_')
                .map(|w| {
                    let mut c = w.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                })
                .collect(),
        )
    }
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set (run through cargo)"))
}

fn find_clang() -> Result<String, String> {
    for c in ["clang-16", "clang"] {
        if Command::new(c).arg("--version").output().is_ok() {
            return Ok(c.to_string());
        }
    }
    Err("clang not found: install clang-16 and libbpf-dev (cargo xtask deps does)".into())
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed ({status})"))
    }
}
