#!/usr/bin/env bash
# Every number of BENCHMARKS.md, from one command.
#
#   local/bench/run-all.sh                                          # the benchmark of record
#   local/bench/run-all.sh --duration 5s --backends sqlite,postgres # a short trial
#
# Builds the release server and the harness, then for each backend starts a fresh
# lighttech-local on a free loopback port, runs the workloads with lighttech-bench, and stops it:
#
#   sqlite          embedded SQLite (a new file), every workload
#   sqlite-single-commit
#                   the same with SQLITE_WRITE_BATCH=1 (one commit, one fsync per write: the
#                   embedded store before group commit), the write workloads and mixed
#   postgres        PostgreSQL (the database is dropped and created again), every workload
#   postgres-redis  PostgreSQL with the history cache in Redis: the history and mixed workloads,
#                   to compare with the in-process cache of `postgres`
#   dynamodb        DynamoDB on the moto emulator: emulator-bound (moto serves one request at a
#                   time), so short runs at low concurrency
#
# Then draws the latency chart (local/bench/plot.py, matplotlib in a virtual environment of its
# own under the target directory) and writes BENCHMARKS.md (`lighttech-bench report`).
# Everything a run produces (results JSON, goose's HTML and JSON reports, server and harness
# logs) goes to local/bench/out/<UTC time>/; the results behind BENCHMARKS.md are copied to
# local/bench/report/.
#
# Options (defaults in brackets):
#   --duration T              seconds of load per workload, e.g. 15s, 1m [15s]
#   --concurrency N           connections [16]
#   --accounts N              accounts of the many-account workloads [128]
#   --backends LIST           comma-separated, from the list above [all five]
#   --dynamodb-duration T     [5s]
#   --dynamodb-concurrency N  [4]
#   --dynamodb-accounts N     [8]
#   --dynamodb-history-ops N  operations per history account on moto [20]: moto slows down as
#                             its table grows, so the history pages there are shorter
#   --no-report               leave BENCHMARKS.md and local/bench/report/ alone
#
# Environment: BENCH_POSTGRES_URL [postgres://postgres@127.0.0.1:5432/lighttech_bench] (the
# database in it is dropped and created again), BENCH_REDIS_URL [redis://127.0.0.1:6379/0] (keys
# under a prefix of the run's own, deleted afterwards), RUST_LOG for the server [info].
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
command_line="local/bench/run-all.sh${*:+ $*}"

duration=15s
concurrency=16
accounts=128
backends=sqlite,sqlite-single-commit,postgres,postgres-redis,dynamodb
dynamo_duration=5s
dynamo_concurrency=4
dynamo_accounts=8
dynamo_history_ops=20
write_report=1
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) duration=$2; shift 2 ;;
        --concurrency) concurrency=$2; shift 2 ;;
        --accounts) accounts=$2; shift 2 ;;
        --backends) backends=$2; shift 2 ;;
        --dynamodb-duration) dynamo_duration=$2; shift 2 ;;
        --dynamodb-concurrency) dynamo_concurrency=$2; shift 2 ;;
        --dynamodb-accounts) dynamo_accounts=$2; shift 2 ;;
        --dynamodb-history-ops) dynamo_history_ops=$2; shift 2 ;;
        --no-report) write_report=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "run-all.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
for b in ${backends//,/ }; do
    case "$b" in
        sqlite|sqlite-single-commit|postgres|postgres-redis|dynamodb) ;;
        *) echo "run-all.sh: unknown backend $b" >&2; exit 2 ;;
    esac
done
wants() { [[ ",$backends," == *",$1,"* ]]; }

postgres_url=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/lighttech_bench}
postgres_db=${postgres_url##*/}
postgres_admin=${postgres_url%/*}/postgres
redis_url=${BENCH_REDIS_URL:-redis://127.0.0.1:6379/0}
server_log_level=${RUST_LOG:-info}

target=$(cargo metadata --no-deps --format-version 1 \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
stamp=$(date -u +%Y%m%dT%H%M%SZ)
# Paths relative to the repository root (the working directory from here on), so the commands
# the report shows are the ones to type.
out="local/bench/out/$stamp"
mkdir -p "$out/results" "$out/reports" "$out/logs" "$out/servers"
redis_prefix="lighttech-bench:$stamp:"
echo "== run $stamp: $out" >&2
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

echo "== cargo build --release -p lighttech-local -p lighttech-bench" >&2
cargo build --release --locked -p lighttech-local -p lighttech-bench
server_bin="$target/release/lighttech-local"
bench_bin="$target/release/lighttech-bench"
bench_bin=${bench_bin#"$root"/}

server=""
moto=""
# stop PID: SIGTERM, up to 10 s to finish, then SIGKILL.
stop() {
    kill "$1" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
stop_server() {
    if [ -n "$server" ]; then
        stop "$server"
        server=""
    fi
}
stop_moto() {
    if [ -n "$moto" ]; then
        stop "$moto"
        moto=""
    fi
}
cleanup() {
    stop_server
    stop_moto
}
trap cleanup EXIT

# start_server LABEL [--init] [VARIABLE=value ...]: a fresh server in a directory of its own (so
# no .env of the working tree reaches it) on a free loopback port; sets $server and $url.
declare -A server_settings
start_server() {
    local label=$1; shift
    local init=""
    if [ "${1:-}" = "--init" ]; then init=--init; shift; fi
    local dir="$root/$out/servers/$label"
    mkdir -p "$dir"
    local settings=("$@" "ACCESS_TOKEN_LIFETIME_MINUTES=60" "RUST_LOG=$server_log_level")
    server_settings[$label]="${settings[*]}"
    : > "$out/logs/$label-server.out"
    (
        cd "$dir"
        exec env -u DATABASE_URL -u REDIS_URL -u REDIS_KEY_PREFIX -u SECRET_KEY -u SECRET_KEY_ARN \
            -u AWS_ENDPOINT_URL LIGHTTECH_DATA_DIR="$dir" "${settings[@]}" \
            "$server_bin" --listen 127.0.0.1:0 $init
    ) > "$out/logs/$label-server.out" 2> "$out/logs/$label-server.log" &
    server=$!
    url=""
    for _ in $(seq 600); do
        url=$(sed -n 's/^listening on \(http:[^ ]*\)$/\1/p' "$out/logs/$label-server.out" || true)
        [ -n "$url" ] && break
        kill -0 "$server" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$url" ]; then
        echo "lighttech-local ($label) did not start:" >&2
        tail -n 20 "$out/logs/$label-server.out" "$out/logs/$label-server.log" >&2
        exit 1
    fi
    echo "== $label: lighttech-local at $url" >&2
}

# bench LABEL TITLE NOTE DURATION CONCURRENCY ACCOUNTS HISTORY_OPS [WORKLOADS]
bench() {
    local label=$1 title=$2 note=$3 d=$4 c=$5 a=$6 h=$7 workloads=${8:-}
    local args=(--base-url "$url" --label "$label" --title "$title"
        --duration "$d" --concurrency "$c" --accounts "$a" --history-ops "$h"
        --results "$out/results/$label.json" --report-dir "$out/reports/$label")
    [ -n "$note" ] && args+=(--note "$note")
    [ -n "$workloads" ] && args+=(--workload "$workloads")
    "$bench_bin" "${args[@]}" 2>&1 | tee "$out/logs/$label-bench.log"
}

fresh_postgres() {
    psql -q "$postgres_admin" -v ON_ERROR_STOP=1 \
        -c "DROP DATABASE IF EXISTS \"$postgres_db\" WITH (FORCE)" \
        -c "CREATE DATABASE \"$postgres_db\"" > /dev/null
}
drop_postgres() {
    psql -q "$postgres_admin" -c "DROP DATABASE IF EXISTS \"$postgres_db\" WITH (FORCE)" > /dev/null || true
}

order=()
if wants sqlite; then
    order+=(sqlite)
    start_server sqlite "DATABASE_URL=sqlite://./lighttech.db"
    bench sqlite "Embedded SQLite" "" "$duration" "$concurrency" "$accounts" 100
    stop_server
fi

if wants sqlite-single-commit; then
    order+=(sqlite-single-commit)
    start_server sqlite-single-commit "DATABASE_URL=sqlite://./lighttech.db" SQLITE_WRITE_BATCH=1
    bench sqlite-single-commit "Embedded SQLite, one commit per write (SQLITE_WRITE_BATCH=1)" \
        "The embedded store before group commit: every write its own transaction and fsync. Compare with Embedded SQLite above." \
        "$duration" "$concurrency" "$accounts" 100 deposit,withdraw,transfer,transfer-hot,mixed
    stop_server
fi

if wants postgres; then
    order+=(postgres)
    fresh_postgres
    start_server postgres --init "DATABASE_URL=$postgres_url"
    bench postgres "PostgreSQL" "" "$duration" "$concurrency" "$accounts" 100
    stop_server
    drop_postgres
fi

if wants postgres-redis; then
    order+=(postgres-redis)
    fresh_postgres
    start_server postgres-redis --init "DATABASE_URL=$postgres_url" "REDIS_URL=$redis_url" \
        "REDIS_KEY_PREFIX=$redis_prefix"
    bench postgres-redis "PostgreSQL, history cache in Redis" "" "$duration" "$concurrency" \
        "$accounts" 100 history-hit,history-miss,mixed
    stop_server
    drop_postgres
    if command -v redis-cli > /dev/null; then
        redis-cli -u "$redis_url" --scan --pattern "$redis_prefix*" \
            | xargs -r -n 500 redis-cli -u "$redis_url" del > /dev/null
    fi
fi

if wants dynamodb; then
    order+=(dynamodb)
    tests/venv
    "$root/.venv/bin/python" local/moto/server.py --port-file "$out/logs/moto.port" \
        > "$out/logs/moto.log" 2>&1 &
    moto=$!
    for _ in $(seq 150); do [ -s "$out/logs/moto.port" ] && break; sleep 0.1; done
    if [ ! -s "$out/logs/moto.port" ]; then
        echo "moto did not start:" >&2; cat "$out/logs/moto.log" >&2; exit 1
    fi
    start_server dynamodb --init "DATABASE_URL=dynamodb://lighttech-bench" \
        "AWS_ENDPOINT_URL=http://127.0.0.1:$(cat "$out/logs/moto.port")" AWS_REGION=us-east-1 \
        AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
    bench dynamodb "DynamoDB on moto" \
        "Emulator-bound: moto serves one request at a time, so these numbers measure the emulator, not DynamoDB." \
        "$dynamo_duration" "$dynamo_concurrency" "$dynamo_accounts" "$dynamo_history_ops"
    stop_server
    stop_moto
fi

# Goose's HTML reports draw their graphs with echarts loaded from a CDN, which a machine with
# no internet beyond the package registries cannot reach: fetch that version once from the npm
# registry (checked against its published integrity), put a copy beside the reports and point
# them at it. Without npm the reports keep the CDN address (graphs then need the internet).
echarts_version=5.2.2
echarts_integrity=sha512-yxuBfeIH5c+0FsoRP60w4De6omXhA06c7eUYBsC1ykB6Ys2yK5fSteIYWvkJ4xJVLQgCvAdO8C4mN6MLeJpBaw==
echarts="$target/bench-assets/echarts-$echarts_version.min.js"
if [ ! -s "$echarts" ] && command -v npm > /dev/null; then
    fetch=$(mktemp -d)
    if (cd "$fetch" && npm pack "echarts@$echarts_version" --silent > /dev/null 2>&1); then
        tgz="$fetch/echarts-$echarts_version.tgz"
        actual=$(python3 -c 'import base64, hashlib, sys
print("sha512-" + base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tgz")
        if [ "$actual" = "$echarts_integrity" ]; then
            tar xzf "$tgz" -C "$fetch" package/dist/echarts.min.js
            mkdir -p "$(dirname "$echarts")"
            cp "$fetch/package/dist/echarts.min.js" "$echarts"
        else
            echo "echarts $echarts_version: integrity mismatch ($actual)" >&2
        fi
    else
        echo "could not fetch echarts $echarts_version from the npm registry" >&2
    fi
    rm -rf "$fetch"
fi
if [ -s "$echarts" ]; then
    cp "$echarts" "$out/reports/echarts.min.js"
    find "$out/reports" -name '*.html' -exec sed -i \
        "s#https://cdn.jsdelivr.net/npm/echarts@$echarts_version/dist/echarts.min.js#../echarts.min.js#g" {} +
fi

# What the report says about the machine and the versions.
export BENCH_META="$out/meta.json" BENCH_ORDER="${order[*]}" BENCH_COMMAND="$command_line" \
    BENCH_STAMP="$stamp" BENCH_LOAD_START="$load_start" BENCH_POSTGRES_ADMIN="$postgres_admin" BENCH_REDIS_URL_USED="$redis_url"
export BENCH_SERVERS
BENCH_SERVERS=$(for label in "${order[@]}"; do printf '%s\t%s\n' "$label" "${server_settings[$label]}"; done)
python3 - <<'EOF'
import datetime, json, os, platform, re, subprocess

def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""

order = os.environ["BENCH_ORDER"].split()
cpu = ""
with open("/proc/cpuinfo") as f:
    for line in f:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
mem = ""
with open("/proc/meminfo") as f:
    for line in f:
        if line.startswith("MemTotal"):
            mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
os_name = ""
try:
    with open("/etc/os-release") as f:
        os_name = dict(l.strip().split("=", 1) for l in f if "=" in l).get("PRETTY_NAME", "").strip('"')
except OSError:
    pass
with open("/proc/loadavg") as f:
    load = " ".join(f.read().split()[:3])

goose = ""
with open("Cargo.lock") as f:
    lock = f.read()
m = re.search(r'name = "goose"\nversion = "([^"]+)"', lock)
if m:
    goose = m.group(1)
commit = run("git", "rev-parse", "--short", "HEAD")
if commit and run("git", "status", "--porcelain"):
    commit += " (with uncommitted changes)"

versions = {
    "LightTech": commit,
    "rustc": run("rustc", "-V"),
    "cargo": run("cargo", "-V"),
    "goose": goose,
}
if any(l.startswith("postgres") for l in order):
    versions["PostgreSQL"] = run("psql", os.environ["BENCH_POSTGRES_ADMIN"], "-tAc", "SHOW server_version")
if "postgres-redis" in order:
    info = run("redis-cli", "-u", os.environ["BENCH_REDIS_URL_USED"], "INFO", "server")
    m = re.search(r"redis_version:(\S+)", info)
    versions["Redis"] = m.group(1) if m else ""
if "dynamodb" in order:
    versions["moto"] = run(".venv/bin/python", "-c", "import moto; print(moto.__version__)")

servers = {}
for line in os.environ.get("BENCH_SERVERS", "").splitlines():
    if "\t" in line:
        label, settings = line.split("\t", 1)
        servers[label] = settings

stamp = datetime.datetime.strptime(os.environ["BENCH_STAMP"], "%Y%m%dT%H%M%SZ")
meta = {
    "started_at": stamp.strftime("%Y-%m-%d %H:%M UTC"),
    "finished_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    "command": os.environ["BENCH_COMMAND"],
    "machine": [
        ["CPU", cpu],
        ["cores (nproc)", run("nproc")],
        ["memory", mem],
        ["OS", os_name],
        ["kernel", run("uname", "-sr")],
        ["load average (1, 5, 15 min) at the start", os.environ["BENCH_LOAD_START"]],
        ["load average (1, 5, 15 min) at the end", load],
    ],
    "versions": [[k, v] for k, v in versions.items() if v],
    "order": order,
    "servers": servers,
}
with open(os.environ["BENCH_META"], "w") as f:
    json.dump(meta, f, indent=2)
    f.write("\n")
EOF

if [ "$write_report" = 1 ]; then
    venv="$target/bench-venv"
    requirements=local/bench/requirements.txt
    want=$(sha256sum "$requirements" | cut -d' ' -f1)
    if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$want" ]; then
        echo "== installing the chart's Python packages into $venv" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
        echo "$want" > "$venv/.requirements.sha256"
    fi
    report=local/bench/report
    rm -rf "$report"
    mkdir -p "$report/results"
    cp "$out/meta.json" "$report/"
    cp "$out"/results/*.json "$report/results/"
    "$venv/bin/python" local/bench/plot.py --run-dir "$out" --output "$report/latency.svg"
    "$bench_bin" report --run-dir "$out" --output BENCHMARKS.md --chart "$report/latency.svg"
fi
echo "== done: $out" >&2
