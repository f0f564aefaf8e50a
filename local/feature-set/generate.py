"""Rewrites local/feature-set/Cargo.toml's [dependencies]: every dependency of the local server,
the load harness or the functions whose features differ from the workspace build's, with the
workspace's features. Run from anywhere after a dependency change that tests/built-once reports.

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
manifest.write_text(head)  # measure without this crate's own lists
try:
    workspace = tree("--workspace")
    need = {}
    for package in ("lighttech-local", "lighttech-bench", "lighttech-functions"):
        for key, features in tree("-p", package, "-e", "normal,build").items():
            if not key[0].startswith("lighttech") and key in workspace and workspace[key] != features:
                need[key] = workspace[key]
finally:
    lines = [
        f'{name} = {{ version = "{version[1:]}", default-features = false, features = [{", ".join(chr(34) + f + chr(34) for f in sorted(features))}] }}'
        for (name, version), features in sorted(need.items())
    ]
    manifest.write_text(head + "\n".join(lines) + "\n")
print(f"{len(need)} dependencies listed in {manifest.relative_to(root)}")
