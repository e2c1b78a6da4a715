#!/usr/bin/env bash
# Installs what building and testing Coffer needs and a fresh Debian machine
# lacks: libclang-dev (RocksDB's bindgen), protobuf-compiler (prost / raft
# code generation), prometheus (for promtool, which checks and tests the
# alert rules in api/prometheus/) and fonts-dejavu-core (the font `coffer
# bench` draws its charts' text with). Does nothing when all are present.
# Runs as root, or via sudo.
set -euo pipefail

missing=()
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)

if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo not found; install the Rust toolchain (rustup) first" >&2
    exit 1
fi

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q "${missing[@]}"
