#!/usr/bin/env bash
# Builds every Lambda function of template.yaml for arm64 (provided.al2023) with `sam build`,
# offline, on this machine, without Docker.
#
#   local/sam-build.sh            # then: sam deploy (samconfig.toml), or all of it: local/deploy.sh
#   local/sam-build.sh --debug    # unoptimised (SAM_BUILD_MODE=debug): the same pipeline in
#                                 # minutes instead of the release build's twenty; for CI
#
# The tools come from tests/requirements.txt into .venv: aws-sam-cli, and cargo-lambda with its
# own zig, which cross-links for aarch64 without a cross toolchain. Rust's aarch64 standard
# library comes from rustup. All functions are first built in one `cargo lambda build` (shared
# dependencies compile once and two binaries link at a time), so the per-function builds
# `sam build` then runs find them up to date. Prints each function's bootstrap and zip size.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

mode=release
case "${1:-}" in
    "") ;;
    --debug) mode=debug ;;
    *) echo "usage: local/sam-build.sh [--debug]" >&2; exit 2 ;;
esac

tests/venv
venv="$root/.venv"
export PATH="$venv/bin:$PATH"

target_triple=aarch64-unknown-linux-gnu
if command -v rustup > /dev/null; then
    if ! rustup target list --installed | grep -qx "$target_triple"; then
        echo "== rustup target add $target_triple"
        rustup target add "$target_triple"
    fi
else
    echo "rustup is not on the PATH: install the $target_triple standard library for this toolchain" >&2
    exit 1
fi

export SAM_CLI_TELEMETRY=0
export SAM_CLI_BETA_RUST_CARGO_LAMBDA=1
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"

if [ "$mode" = release ]; then
    # Sized for Lambda: the release profile at opt-level "z" (Cargo.toml says why). Exported, so
    # the builds `sam build` runs next use it too and find the binaries up to date.
    export CARGO_PROFILE_RELEASE_OPT_LEVEL=z
    echo "== cargo lambda build --release --arm64 (every function, opt-level z)"
    cargo lambda build --release --arm64 --locked -p lighttech-functions
else
    export SAM_BUILD_MODE=debug
    echo "== cargo lambda build --arm64 (every function, unoptimised)"
    cargo lambda build --arm64 --locked -p lighttech-functions
fi

echo "== sam build"
sam build --template-file template.yaml --build-dir .aws-sam/build

echo "== artifacts (.aws-sam/build/<Function>/bootstrap, zipped as sam deploy uploads them)"
python3 - "$root/.aws-sam/build" "$mode" <<'PY'
import os, sys
sys.path.insert(0, os.path.join(os.getcwd(), "local"))
from lambda_zip import check_aarch64, zipped_size
build, mode = sys.argv[1], sys.argv[2]
rows = []
for name in sorted(os.listdir(build)):
    bootstrap = os.path.join(build, name, "bootstrap")
    if not os.path.isfile(bootstrap):
        continue
    # The zip budget is the release build's; an unoptimised build is only checked to be arm64
    # (deflating 17 debug binaries of 50 MB each would cost CI half a CPU-minute for nothing).
    if mode == "release":
        zipped = zipped_size(bootstrap)
    else:
        check_aarch64(bootstrap)
        zipped = None
    rows.append((name, os.path.getsize(bootstrap), zipped))
if not rows:
    sys.exit("sam build produced no bootstrap")
# Exact bytes, and decimal megabytes (1 MB = 1,000,000 bytes).
def size(n):
    return f"{n:>12,} B {n / 1e6:>6.2f} MB" if n is not None else f"{'-':>24}"
print(f"{'function':<28} {'bootstrap':>24} {'zip':>24}")
for name, bootstrap_size, zipped in rows:
    print(f"{name:<28} {size(bootstrap_size)} {size(zipped)}")
BUDGET = 5_000_000  # bytes: LightTech's zip budget, 5 MB
over = [f"{name} ({zipped:,} B)" for name, _, zipped in rows if zipped and zipped > BUDGET]
if mode == "release" and over:
    sys.exit(
        f"over LightTech's zip budget of {BUDGET:,} bytes (5 MB): {', '.join(over)} (the build "
        "itself succeeded and is in .aws-sam/build; Lambda accepts up to 50 MB zipped)"
    )
PY
