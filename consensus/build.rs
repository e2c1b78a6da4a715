//! Generates the peer transport's gRPC code from
//! `proto/coffer/raft/v1/transport.proto` (needs `protoc`, which
//! `scripts/install-deps.sh` installs).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/coffer/raft/v1/transport.proto"], &["proto"])?;
    Ok(())
}
