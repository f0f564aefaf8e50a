"""The latency chart of BENCHMARKS.md: p50, p90 and p99 per endpoint, one panel per backend.

    python local/bench/plot.py --run-dir local/bench/out/<run> --output local/bench/report/latency.svg

Reads the run directory written by local/bench/run-all.sh (meta.json for the order of the
backends, results/<label>.json for the numbers). Each row is one request of one workload; the
three overlaid bars are its p99 (lightest), p90 and p50 (darkest), on a log scale, with the
5 ms p99 target of the embedded store drawn as a dashed line. The SVG is written
deterministically (no date, fixed ids), so an unchanged result gives an unchanged file.
"""

import argparse
import json
import pathlib
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

P99_TARGET_MS = 5.0
COLOURS = {"p99": "#c6dbef", "p90": "#6baed6", "p50": "#08519c"}


def load(run_dir: pathlib.Path):
    meta = json.loads((run_dir / "meta.json").read_text())
    runs = {}
    for path in sorted((run_dir / "results").glob("*.json")):
        run = json.loads(path.read_text())
        runs[run["label"]] = run
    order = [label for label in meta.get("order", []) if label in runs]
    order += [label for label in runs if label not in order]
    return [runs[label] for label in order]


def rows_of(run):
    """(row label, p50, p90, p99) for every request of every workload, in run order."""
    rows = []
    for workload in run["workloads"]:
        for request in workload["requests"]:
            label = workload["workload"]
            if len(workload["requests"]) > 1:
                label += " · " + request["name"]
            rows.append((label, request["p50_ms"], request["p90_ms"], request["p99_ms"]))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True, type=pathlib.Path)
    parser.add_argument("--output", required=True, type=pathlib.Path)
    args = parser.parse_args()

    runs = load(args.run_dir)
    if not runs:
        raise SystemExit(f"no results in {args.run_dir / 'results'}")

    # Every row label any backend has, in the order they first appear.
    labels = []
    for run in runs:
        for label, *_ in rows_of(run):
            if label not in labels:
                labels.append(label)

    plt.rcParams["svg.hashsalt"] = "lighttech-bench"
    plt.rcParams["svg.fonttype"] = "none"
    plt.rcParams["font.size"] = 9
    height = 1.2 + 0.32 * len(labels)
    width = 1.8 + 3.2 * len(runs)
    fig, axes = plt.subplots(
        1, len(runs), figsize=(width, height), sharey=True, squeeze=False, constrained_layout=True
    )
    low = min(
        (p50 for run in runs for _, p50, _, _ in rows_of(run) if p50 > 0), default=0.1
    )
    high = max((p99 for run in runs for *_, p99 in rows_of(run)), default=10.0)
    for ax, run in zip(axes[0], runs):
        rows = {label: (p50, p90, p99) for label, p50, p90, p99 in rows_of(run)}
        ys = range(len(labels))
        for name, index in (("p99", 2), ("p90", 1), ("p50", 0)):
            values = [rows[label][index] if label in rows else 0 for label in labels]
            ax.barh(ys, values, height=0.7, color=COLOURS[name], label=name)
        for y, label in enumerate(labels):
            if label not in rows:
                ax.text(low, y, " not run", va="center", fontsize=7, color="#777777")
        ax.set_xscale("log")
        ax.set_xlim(low / 2, high * 2)
        ax.axvline(P99_TARGET_MS, color="#d62728", linestyle="--", linewidth=1)
        title = textwrap.fill(run["title"], 34)
        if run.get("note"):
            # The first clause of the caveat ("Emulator-bound: ..."); the report has the rest.
            title += "\n(" + textwrap.fill(run["note"].split(":")[0].split(".")[0], 34) + ")"
        title += f"\n{run['concurrency']} connections, {run['duration_s']} s"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("latency, ms (log)")
        ax.grid(axis="x", which="both", color="#eeeeee", linewidth=0.5)
        ax.set_axisbelow(True)
    axes[0][0].set_yticks(range(len(labels)), labels)
    axes[0][0].invert_yaxis()
    axes[0][-1].legend(loc="lower right", fontsize=8)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"Date": None} if args.output.suffix == ".svg" else {}
    fig.savefig(args.output, metadata=metadata)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
