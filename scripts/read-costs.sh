#!/usr/bin/env bash
# Whole-state reads on a large ledger, while payments go on (issue 15's
# "done when"): a release `coffer dev --dr` (a primary region and its
# standby, three nodes each) is loaded with TRANSFERS transfers; then a
# probe load of PROBE_RATE transfers/s in batches of 100 runs three times
# for PROBE_SECONDS: alone, while `read_costs` times both regions'
# digests, the trial balance now and as of a past time, an account's
# balance as of that time and indexed queries (each bounded by BOUND_MS),
# and alone again.
# The script reports the probe's p99 both times, the Raft terms before and
# after (a leader change raises one), and last the write pause of a
# planned switchover on that state.
#
#   make read-costs [TRANSFERS=10000000] [PROBE_RATE=2000] [PROBE_SECONDS=60]
#
# Everything goes to data/read-costs (removed first). Exits non-zero if a
# read exceeded its bound, the probe's p99 more than doubled, a term moved,
# or the switchover paused writes for more than a second.
set -euo pipefail

TRANSFERS=${TRANSFERS:-10000000}
PROBE_RATE=${PROBE_RATE:-2000}
PROBE_SECONDS=${PROBE_SECONDS:-60}
BOUND_MS=${BOUND_MS:-50}
PAUSE_MS_MAX=${PAUSE_MS_MAX:-1000}
SETTLE_SECONDS=${SETTLE_SECONDS:-90}
BIN=${CARGO_TARGET_DIR:-$HOME/.cache/coffer-target}/release
DIR=${DIR:-data/read-costs}
PRIMARY=127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103
STANDBY=127.0.0.1:7111,127.0.0.1:7112,127.0.0.1:7113
LEDGER=9001

coffer() { "$BIN/coffer" "$@"; }
say() { printf '\n== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

if coffer --addresses "$PRIMARY" status >/dev/null 2>&1; then
    echo "read-costs: a cluster already answers at $PRIMARY; stop it first" >&2
    exit 2
fi
rm -rf "$DIR"
mkdir -p "$DIR"
say "uptime: $(uptime)"
coffer dev --dr --no-sample --data-dir "$DIR/cluster" >"$DIR/dev.log" 2>&1 &
DEV=$!
stop_cluster() {
    kill -INT "$DEV" 2>/dev/null || true
    wait "$DEV" 2>/dev/null || true
    # Nodes holding millions of transfers take a while to flush and exit.
    for _ in $(seq 1 60); do
        pgrep -f -- "$DIR/cluster" >/dev/null || return 0
        sleep 1
    done
    pkill -KILL -f -- "$DIR/cluster" || true
}
trap stop_cluster EXIT
for _ in $(seq 1 120); do
    if coffer --addresses "$PRIMARY" status >/dev/null 2>&1 && coffer --addresses "$STANDBY" status >/dev/null 2>&1; then
        break
    fi
    sleep 0.5
done

terms() {
    coffer --addresses "$1" --json status | python3 -c '
import json, sys
nodes = json.load(sys.stdin)
nodes = nodes.get("nodes", nodes) if isinstance(nodes, dict) else nodes
print(" ".join(str(n["node_id"]) + ":" + str(n["term"]) for n in sorted(nodes, key=lambda n: n["node_id"])))'
}

say "loading $TRANSFERS transfers into the primary (the standby ships them)"
coffer bench --addresses "$PRIMARY" --transfers "$TRANSFERS" --accounts 10000 --batch-size 8189 --clients 4 \
    --seed 1 --sample 100 --out-dir "$DIR/load" | tail -n 12
say "waiting for the standby to apply everything"
for _ in $(seq 1 600); do
    lag=$(coffer --json dr status 2>/dev/null | python3 -c '
import json, sys
try:
    rows = json.load(sys.stdin)
    rows = rows.get("nodes", rows) if isinstance(rows, dict) else rows
    standby = [r for r in rows if r.get("role") == "standby"]
    primary = [r for r in rows if r.get("role") == "primary"]
    print(max(r.get("applied_index", 0) for r in primary) - min(r.get("cursor", 0) for r in standby))
except Exception:
    print(-1)')
    [ "$lag" -ge 0 ] && [ "$lag" -lt 100 ] && break
    sleep 1
done
du -sh "$DIR/cluster" | sed 's/^/disk: /'
say "letting the load's flushes and compactions settle (${SETTLE_SECONDS}s)"
sleep "$SETTLE_SECONDS"

probe() {
    coffer bench --addresses "$PRIMARY" --rate "$PROBE_RATE" --batch-size 100 --clients 2 \
        --duration "${PROBE_SECONDS}s" --seed "$1" --sample 100 --accounts 10000 \
        --json "$DIR/probe-$1.json" --svg "$DIR/probe-$1.svg" >"$DIR/probe-$1.txt"
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["latency_ms"]["p99_ms"])' "$DIR/probe-$1.json"
}

ACCOUNT=$(coffer --addresses "$PRIMARY" --json account query --ledger "$LEDGER" --kind cash --limit 1 |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["accounts"][0]["id"])')
TERMS_BEFORE="primary $(terms "$PRIMARY") / standby $(terms "$STANDBY")"

say "probe alone: $PROBE_RATE transfers/s for ${PROBE_SECONDS}s"
P99_ALONE=$(probe 2)
say "probe again, with the reads (every ${BOUND_MS} ms bound)"
"$BIN/examples/read_costs" --primary "$PRIMARY" --standby "$STANDBY" --ledger "$LEDGER" --account "$ACCOUNT" \
    --rounds 40 --pause-ms 1000 --bound-ms "$BOUND_MS" >"$DIR/reads.txt" 2>&1 &
READS=$!
P99_READS=$(probe 3)
READS_OK=0
wait "$READS" || READS_OK=$?
cat "$DIR/reads.txt"
say "probe alone again"
P99_AFTER=$(probe 4)
TERMS_AFTER="primary $(terms "$PRIMARY") / standby $(terms "$STANDBY")"

say "switchover on this state"
coffer --json dr switchover >"$DIR/switchover.json" 2>"$DIR/switchover.log" || true
PAUSE_MS=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("write_pause_ms", -1))' "$DIR/switchover.json" 2>/dev/null || echo -1)

say "summary"
echo "transfers loaded:        $TRANSFERS"
echo "probe p99 alone:         $P99_ALONE ms"
echo "probe p99 with reads:    $P99_READS ms"
echo "probe p99 alone, after:  $P99_AFTER ms"
echo "terms before:            $TERMS_BEFORE"
echo "terms after:             $TERMS_AFTER"
echo "switchover write pause:  $PAUSE_MS ms"
echo "uptime: $(uptime)"
status=0
[ "$READS_OK" -eq 0 ] || { echo "FAILED: a read exceeded ${BOUND_MS} ms"; status=1; }
python3 -c 'import sys; sys.exit(0 if float(sys.argv[2]) <= 2 * float(sys.argv[1]) else 1)' "$P99_ALONE" "$P99_READS" ||
    { echo "FAILED: the probe's p99 more than doubled"; status=1; }
[ "$TERMS_BEFORE" = "$TERMS_AFTER" ] || { echo "FAILED: a leader changed"; status=1; }
[ "$PAUSE_MS" -ge 0 ] && [ "$PAUSE_MS" -le "$PAUSE_MS_MAX" ] ||
    { echo "FAILED: the switchover paused writes $PAUSE_MS ms (or failed: $DIR/switchover.log)"; status=1; }
[ "$status" -eq 0 ] && echo "OK"
exit "$status"
