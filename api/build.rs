//! Generates the `coffer.v1` gRPC code from `proto/coffer/v1/coffer.proto`:
//! the messages and clients with prost's codec, then the servers alone (the
//! messages referenced, not generated again) with [`coffer_api::codec`]'s,
//! which answers a request that does not decode as the caller's error; and
//! the encoded file descriptor set that server reflection serves. Needs
//! `protoc`, which `scripts/install-deps.sh` installs.

use std::path::PathBuf;

const PROTO: &str = "proto/coffer/v1/coffer.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(false)
        .file_descriptor_set_path(out_dir.join("coffer_v1_descriptor.bin"))
        .compile_protos(&[PROTO], &["proto"])?;
    let servers = out_dir.join("servers");
    std::fs::create_dir_all(&servers)?;
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .extern_path(".coffer.v1", "crate::proto")
        .codec_path("crate::codec::RequestCodec")
        .out_dir(&servers)
        .compile_protos(&[PROTO], &["proto"])?;
    Ok(())
}
