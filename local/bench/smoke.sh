#!/usr/bin/env bash
# The load harness's smoke test: builds the debug server and harness, starts the server on a
# free loopback port with a throwaway data directory (embedded SQLite), runs every workload for a
# couple of seconds on tiny data (`lighttech-bench --smoke`), and stops the server. Fails if any
# request fails, a workload completes nothing, or the money invariant breaks.
#
#   local/bench/smoke.sh                  # every workload
#   local/bench/smoke.sh -w deposit,login # extra arguments go to lighttech-bench
set -euo pipefail
cd "$(dirname "$0")/../.."
target=$(cargo metadata --no-deps --format-version 1 \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

# The binaries: LIGHTTECH_LOCAL_BIN and LIGHTTECH_BENCH_BIN if set (tests/run builds them once
# for every step), else debug builds.
server_bin="${LIGHTTECH_LOCAL_BIN:-$target/debug/lighttech-local}"
bench_bin="${LIGHTTECH_BENCH_BIN:-$target/debug/lighttech-bench}"
if [ -z "${LIGHTTECH_LOCAL_BIN:-}" ] || [ -z "${LIGHTTECH_BENCH_BIN:-}" ]; then
    echo "== cargo build -p lighttech-local -p lighttech-bench" >&2
    cargo build --locked -p lighttech-local -p lighttech-bench
fi

work=$(mktemp -d)
server=""
cleanup() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# The server runs in the throwaway directory, so no .env of the working tree reaches it.
: > "$work/server.out"
(
    cd "$work"
    exec env DATABASE_URL="sqlite://$work/lighttech.db" LIGHTTECH_DATA_DIR="$work" \
        RUST_LOG=warn "$server_bin" --listen 127.0.0.1:0
) > "$work/server.out" 2> "$work/server.err" &
server=$!
url=""
for _ in $(seq 300); do
    url=$(sed -n 's/^listening on \(http:[^ ]*\)$/\1/p' "$work/server.out" || true)
    [ -n "$url" ] && break
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$url" ]; then
    echo "lighttech-local did not start:" >&2
    cat "$work/server.out" "$work/server.err" >&2
    exit 1
fi
echo "== lighttech-bench --smoke against $url" >&2
if ! "$bench_bin" --base-url "$url" --smoke "$@"; then
    echo "== server log (last 40 lines)" >&2
    tail -n 40 "$work/server.err" >&2
    exit 1
fi
