"""The table and the figure of a ``benchmarks/ann.py`` run (also: ``python
benchmarks/ann_report.py RESULTS.json`` redraws them from a saved run).

Regimes of several runs in one file (each regime keeps the name, arguments and load average
of the run it came from, under ``source``):

    python benchmarks/ann_report.py --merge OUT.json RUN1.json:tight,demo RUN2.json:overlap
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

KINDS = ("image", "text")
ORDER = ("ours", "hnswlib", "faiss-hnsw", "faiss-ivf", "autofaiss")
COLOURS = {"ours": "#d62728", "hnswlib": "#1f77b4", "faiss-hnsw": "#2ca02c",
           "faiss-ivf": "#9467bd", "autofaiss": "#8c564b"}


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}" if v < 1 else f"{v:.2f}"


def table(results: dict[str, Any]) -> str:
    """Markdown: per regime and kind, each method's p50 (CPU ms, one thread) at recall@10 =
    0.95, ours' tuned point, ours / best graph peer; then build times."""
    methods = [m for m in ORDER if any(m in r["methods"] for r in results["regimes"])]
    head = ["regime", "queries", *methods, "ours tuned: R@10 / ms", "ours / best graph"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results["regimes"]:
        for kind in KINDS:
            cell = r["summary"][kind]
            tuned = cell.get("ours_tuned") or {}
            ratio = cell.get("ours_vs_best_graph_peer")
            lines.append("| " + " | ".join([
                f"{r['regime']} ({r['n']:,} x {r['dim']})"
                + (f" [{r['source']['file']}]" if "source" in r else ""), kind,
                *(_ms(cell.get(m)) for m in methods),
                f"{tuned.get('recall_at_10', 0):.3f} / {_ms(tuned.get('p50_ms'))}"
                if tuned else "-",
                f"**{ratio:.2f}**" if ratio is not None else "-"]) + " |")
    lines += ["", "| regime | " + " | ".join(f"{m} build s (CPU s)" for m in methods)
              + " | ours / hnswlib | ours' index |",
              "|" + "---|" * (len(methods) + 3)]
    for r in results["regimes"]:
        ms = r["methods"]
        ours = ms.get("ours", {})
        lines.append(f"| {r['regime']} | " + " | ".join(
            f"{ms[m]['build_s']:.0f} ({ms[m]['build_cpu_s']:.0f})" if m in ms else "-"
            for m in methods) + f" | {r['summary'].get('build_vs_hnswlib', '-')} | "
            f"{ours.get('tier', '-')} {ours.get('describe', {}).get('search_params', '')} |")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Recall@10 against single-query p50 (log), one panel per regime and query kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regimes = results["regimes"]
    fig, axes = plt.subplots(len(regimes), 2, figsize=(11, 3.2 * len(regimes)), squeeze=False)
    for row, r in zip(axes, regimes, strict=True):
        for ax, kind in zip(row, KINDS, strict=True):
            for m in ORDER:
                if m not in r["methods"]:
                    continue
                pts = [p for p in r["methods"][m]["curves"][kind] if p["setting"] != "tuned"]
                ax.plot([p["p50_ms"] for p in pts], [p["recall_at_10"] for p in pts], "o-",
                        ms=3, lw=2.2 if m == "ours" else 1.2, color=COLOURS[m], label=m)
                if m == "ours":
                    t = r["methods"][m]["curves"][kind][0]
                    ax.plot([t["p50_ms"]], [t["recall_at_10"]], "*", ms=12, color=COLOURS[m])
            ax.axhline(0.95, color="grey", lw=0.8, ls="--")
            ax.set_xscale("log")
            ax.set_ylim(max(0.5, ax.get_ylim()[0]), 1.0)
            ax.set_title(f"{r['regime']} ({r['n']:,} x {r['dim']}), {kind} queries", fontsize=9)
            ax.set_xlabel("single-query p50, CPU ms (one thread)", fontsize=8)
            ax.set_ylabel("recall@10", fontsize=8)
            ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def merge(parts: list[str]) -> dict[str, Any]:
    """The regimes named after each ``RUN.json:regime,...``, in that order, each with its
    run under ``source``."""
    out: dict[str, Any] = {"merged_from": [], "regimes": []}
    for part in parts:
        path, _, names = part.partition(":")
        run = json.loads(Path(path).read_text())
        source = {"file": Path(path).name, "args": run.get("args"),
                  "load_average": run.get("load_average"), "cores": run.get("cores")}
        out["merged_from"].append(source)
        by_name = {r["regime"]: r for r in run["regimes"]}
        for name in names.split(","):
            out["regimes"].append({**by_name[name], "source": source})
    return out


if __name__ == "__main__":
    if sys.argv[1] == "--merge":
        res = merge(sys.argv[3:])
        Path(sys.argv[2]).write_text(json.dumps(res, indent=1, default=str))
        target = Path(sys.argv[2])
    else:
        target = Path(sys.argv[1])
        res = json.loads(target.read_text())
    print(table(res))
    plot(res, target.with_suffix(".png"))
