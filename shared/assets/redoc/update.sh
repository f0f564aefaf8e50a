#!/usr/bin/env bash
# Re-fetches the vendored ReDoc bundle from the npm registry (the package only, no
# dependencies: `npm install redoc` needs the internet beyond the registry) and checks it against
# the integrity hash npm publishes. The version is pinned here; tests/tests/suite/openapi.rs pins the
# bundle's sha256, so a change must update both.
#
#   shared/assets/redoc/update.sh
set -euo pipefail
version=2.5.2
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack "redoc@$version" --silent > /dev/null
expected=$(npm view "redoc@$version" dist.integrity)
actual="sha512-$(openssl dgst -sha512 -binary "redoc-$version.tgz" | openssl base64 -A)"
[ "$expected" = "$actual" ] || { echo "integrity mismatch: $actual != $expected" >&2; exit 1; }
tar xzf "redoc-$version.tgz"
cp package/bundles/redoc.standalone.js package/bundles/redoc.standalone.js.LICENSE.txt "$here/"
sha256sum "$here/redoc.standalone.js"
