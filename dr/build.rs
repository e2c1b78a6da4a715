//! Generates the disaster-recovery gRPC code from
//! `proto/coffer/dr/v1/dr.proto`, and its encoded file descriptor set for
//! server reflection (needs `protoc`, which `scripts/install-deps.sh`
//! installs).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(out_dir.join("coffer_dr_v1_descriptor.bin"))
        .compile_protos(&["proto/coffer/dr/v1/dr.proto"], &["proto"])?;
    Ok(())
}
