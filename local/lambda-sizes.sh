#!/usr/bin/env bash
# Builds Lambda functions as `sam build` ships them (local/sam-build.sh: release profile at
# opt-level "z", arm64, cargo lambda, the package's default features) and prints one line per
# function: `NAME BYTES`, the size of its bootstrap zipped the way `sam deploy` uploads it.
#
#   local/lambda-sizes.sh                    # every function of lighttech-functions
#   local/lambda-sizes.sh balance register   # only these
#
# Release arm64 builds are slow (fat LTO, one codegen unit); naming a few functions builds only
# those binaries. The tools come from tests/requirements.txt into .venv, as for sam-build.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

tests/venv
export PATH="$root/.venv/bin:$PATH"

if [ $# -eq 0 ]; then
    # Every binary the functions package declares.
    mapfile -t functions < <(sed -n 's/^name = "\(.*\)"$/\1/p' functions/Cargo.toml | grep -vx 'lighttech-functions' \
        | grep -vx -e lambda)
else
    functions=("$@")
fi

bins=()
for f in "${functions[@]}"; do bins+=(--bin "$f"); done

# The same switches as local/sam-build.sh's release build.
export CARGO_PROFILE_RELEASE_OPT_LEVEL=z
cargo lambda build --release --arm64 --locked -p lighttech-functions "${bins[@]}" >&2

python3 - "${CARGO_TARGET_DIR:-$root/target}/lambda" "${functions[@]}" <<'PY'
import os, sys
sys.path.insert(0, "local")
from lambda_zip import zipped_size
out, names = sys.argv[1], sys.argv[2:]
for name in names:
    print(name, zipped_size(os.path.join(out, name, "bootstrap")))
PY
