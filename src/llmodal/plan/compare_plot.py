"""``llmodal plan --compare --plot FILE.png``: $/1M tokens against predicted throughput, one point per
option, with the public API's price for the same mix as a line — people choose a GPU by looking."""

from __future__ import annotations

from pathlib import Path


def plot_compare(doc: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    builds = sorted({r["build"] for r in doc["rows"]})
    markers = dict(zip(builds, "os^Dv<>"))
    for gpu in sorted({r["gpu"] for r in doc["rows"]}):
        points: dict[tuple, list[str]] = {}  # builds predicted alike (AWQ, GPTQ) share one point and label
        for r in doc["rows"]:
            if r["gpu"] == gpu:
                points.setdefault((r["saturated_out_tok_s"], r["cost_per_1m_tokens"], r["tp"]), []).append(r["build"])
        color = ax.plot([], [])[0].get_color()
        for (x, y, tp), names in points.items():
            ax.scatter(x, y, color=color, marker=markers[names[0]])
            ax.annotate(f"{gpu} {'/'.join(names)} TP{tp}", (x, y), textcoords="offset points", xytext=(4, 3),
                        fontsize=7)
    if doc.get("api"):
        ax.axhline(doc["api"]["usd_per_1m_tokens"], color="gray", linestyle="--", linewidth=1,
                   label=f"public API, same mix: ${doc['api']['usd_per_1m_tokens']:.3f}/1M")
        ax.legend(fontsize=8)
    ax.set_xlabel("predicted output tokens / s at saturation (one replica)")
    ax.set_ylabel("$ per 1M tokens (in + out)")
    ax.set_yscale("log")
    ax.set_title(f"every option that fits, mix {doc['mix'][0]}:{doc['mix'][1]} (predicted: docs/BENCHMARKS.md)",
                 fontsize=10)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
