#!/usr/bin/env python3
"""Draw one latency-CDF PNG per workload from `corekv-bench report --cdf` output.

usage: plot_cdf.py CDF_JSON OUT_PREFIX
writes OUT_PREFIX-<workload>-cdf.png and prints each path.

The x axis is latency (ms, log scale); the y axis is the percentile, stretched so the tail
is visible (the HdrHistogram convention: equal steps for 90%, 99%, 99.9%, ...). Colour is
the number in flight, line style the topology, marker the target.
"""
import json
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLES = {"single": "-", "cluster": "--"}
MARKERS = ["o", "s", "^", "D"]


def tail(q):
    """Percentile q (0..1) mapped to -log10(1 - q), capped at 99.999%."""
    return -math.log10(max(1.0 - q, 1e-5))


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: plot_cdf.py CDF_JSON OUT_PREFIX")
    with open(sys.argv[1]) as f:
        series = json.load(f)
    workloads = []
    for s in series:
        if s["workload"] not in workloads:
            workloads.append(s["workload"])
    targets = sorted({s["target"] for s in series}, key=lambda t: t != "etcd")
    inflights = sorted({s["inflight"] for s in series})
    cmap = plt.get_cmap("viridis")
    colours = {n: cmap(i / max(1, len(inflights) - 1) * 0.85) for i, n in enumerate(inflights)}
    for workload in workloads:
        fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
        for s in series:
            if s["workload"] != workload or not s["points"]:
                continue
            xs = [p[0] / 1000.0 for p in s["points"]]
            ys = [tail(p[1]) for p in s["points"]]
            label = f'{s["target"]} {s["topology"]} x{s["inflight"]} ({s["rounds"]} rounds, {s["ops"]} ops)'
            ax.plot(
                xs,
                ys,
                STYLES.get(s["topology"], ":"),
                color=colours[s["inflight"]],
                marker=MARKERS[targets.index(s["target"]) % len(MARKERS)],
                markevery=max(1, len(xs) // 8),
                markersize=4,
                linewidth=1.4,
                label=label,
            )
        ticks = [0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999]
        ax.set_yticks([tail(q) for q in ticks])
        ax.set_yticklabels(["50%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
        ax.set_ylim(0, tail(0.99999))
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_ylabel("percentile")
        ax.set_title(f"{workload}: latency CDF (histograms merged over rounds)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        path = f"{sys.argv[2]}-{workload}-cdf.png"
        fig.savefig(path)
        plt.close(fig)
        print(path)


if __name__ == "__main__":
    main()
