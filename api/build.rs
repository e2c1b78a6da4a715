//! Generates the `coffer.v1` gRPC code (messages, servers, clients) from
//! `proto/coffer/v1/coffer.proto`, and the encoded file descriptor set that
//! server reflection serves (needs `protoc`, which `scripts/install-deps.sh`
//! installs).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(out_dir.join("coffer_v1_descriptor.bin"))
        .compile_protos(&["proto/coffer/v1/coffer.proto"], &["proto"])?;
    Ok(())
}
