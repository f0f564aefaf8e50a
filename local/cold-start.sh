#!/usr/bin/env bash
# Cold start of every function binary (spawn to init, spawn to first response; median of
# --spawns N, default 11) on the embedded store, against a stand-in Lambda Runtime API:
#
#   local/cold-start.sh                 # every function
#   local/cold-start.sh --spawns 21 --only login,health
#
# Measures this machine's native build with the profile local/sam-build.sh gives the arm64
# binaries it deploys (arm64 binaries cannot run here). Not a test: numbers, no verdict.
set -euo pipefail
cd "$(dirname "$0")/.."
target=$(cargo metadata --no-deps --format-version 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
# The functions as local/sam-build.sh builds them: the release profile at opt-level "z", and
# the deployed features alone (functions/Cargo.toml: host builds otherwise link every backend).
export CARGO_PROFILE_RELEASE_OPT_LEVEL=z RUSTFLAGS="${RUSTFLAGS:-} --cfg lighttech_as_deployed"
echo "== cargo build --release -p lighttech-functions --features embedded (the function binaries on the embedded store, opt-level z)" >&2
cargo build --release --locked -p lighttech-functions --features embedded --bins
echo "== cold start" >&2
cargo run --quiet --locked -p lighttech-functions --example cold_start -- --bin-dir "$target/release" "$@"
