#!/usr/bin/env bash
# Moves the debug information of each binary given into BINARY.debug beside
# it and links the two (.gnu_debuglink), so the binary stays small and perf,
# gdb and addr2line still find the line tables. The release profile keeps
# line tables (RocksDB's C++ included), which make the linked binary about
# half a gigabyte. A binary already split is left as it is.
set -euo pipefail
for binary in "$@"; do
    if [ ! -f "$binary" ]; then
        echo "split-debug: $binary: no such file" >&2
        exit 1
    fi
    if objdump -h "$binary" | grep -q '\.gnu_debuglink'; then
        continue
    fi
    objcopy --only-keep-debug "$binary" "$binary.debug"
    objcopy --strip-debug --add-gnu-debuglink="$binary.debug" "$binary"
done
