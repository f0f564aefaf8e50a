"""Rewrites local/feature-set/Cargo.toml's [dependencies]: every dependency of the local server,
the load harness or the functions whose features differ from the workspace build's, with the
workspace's features, the library's own backends included. Run from anywhere after a dependency
change that tests/built-once reports.

    python3 local/feature-set/generate.py
"""

import pathlib
import re
import subprocess

root = pathlib.Path(__file__).resolve().parents[2]
manifest = root / "local" / "feature-set" / "Cargo.toml"
MARK = "[dependencies]\n"


def tree(*args):
    out = subprocess.run(
        ["cargo", "tree", *args, "-f", "{p} {f}", "--prefix", "none", "--no-dedupe"],
        cwd=root, capture_output=True, text=True, check=True,
    ).stdout
    features = {}
    for line in out.splitlines():
        parts = line.strip().split(" ")
        if len(parts) < 2:
            continue
        rest = re.sub(r"\([^)]*\)", "", " ".join(parts[2:])).strip()
        features.setdefault((parts[0], parts[1]), set()).update(f for f in rest.split(",") if f)
    return features


head = manifest.read_text().split(MARK)[0] + MARK


def source(name, version):
    # The library itself (its backends: `cargo lambda watch --features embedded` turns on only
    # SQLite) is a path dependency.
    return 'path = "../../shared"' if name == "lighttech" else f'version = "{version[1:]}"'


def listing(need):
    return [
        f'{name} = {{ {source(name, version)}, default-features = false, features = [{", ".join(chr(34) + f + chr(34) for f in sorted(features))}] }}'
        for (name, version), features in sorted(need.items())
    ]


# Only the dependencies built for the target: a build script's or proc macro's are resolved on
# their own, and a list here cannot change them. Measured from no lists at all, then again with
# what was found, until nothing new differs: a dependency listed (the library's backends) brings
# dependencies of its own.
need = {}
try:
    while True:
        manifest.write_text(head + "\n".join(listing(need)) + "\n")
        workspace = tree("--workspace", "-e", "normal,dev")
        found = {}
        for package in ("lighttech-local", "lighttech-bench", "lighttech-functions"):
            for key, features in tree("-p", package, "-e", "normal").items():
                ours = key[0].startswith("lighttech") and key[0] != "lighttech"
                if not ours and key not in need and key in workspace and workspace[key] != features:
                    found[key] = workspace[key]
        if not found:
            break
        need.update(found)
finally:
    manifest.write_text(head + "\n".join(listing(need)) + "\n")
print(f"{len(need)} dependencies listed in {manifest.relative_to(root)}")
