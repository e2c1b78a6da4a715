//! Generates the disaster-recovery gRPC code from
//! `proto/coffer/dr/v1/dr.proto` (needs `protoc`, which
//! `scripts/install-deps.sh` installs).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/coffer/dr/v1/dr.proto"], &["proto"])?;
    Ok(())
}
