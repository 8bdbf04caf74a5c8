//! Generates the tonic clients and servers for `tests/peers/echo.proto` and
//! `tests/peers/interop.proto` with protox (a protobuf compiler in Rust): no
//! `protoc` on the machine.

use prost::Message;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let proto_dir = std::path::Path::new(&manifest).join("..");
    let protos = [
        proto_dir.join("echo.proto"),
        proto_dir.join("interop.proto"),
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    let fds = protox::compile(&protos, [&proto_dir]).expect("compiling the protos with protox");
    // Through bytes, so protox's and prost-build's prost-types need not be the same version.
    let fds = prost_types::FileDescriptorSet::decode(fds.encode_to_vec().as_slice())
        .expect("re-decoding the descriptor set");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)
        .expect("generating the tonic code");
}
