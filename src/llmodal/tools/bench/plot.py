"""The bench's picture: latency against throughput per level, with the SLO lines and the knee."""

from __future__ import annotations

from pathlib import Path


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = result["levels"]
    x = [lv["output_tok_s"] for lv in levels]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label, style in (("ttft_ms", "TTFT p50", "o-"), ("tpot_ms", "TPOT p50", "s--"),
                              ("e2el_ms", "end-to-end p50 / 10", "^:")):
        ys = [lv[key]["p50"] / (10 if key == "e2el_ms" else 1) for lv in levels]
        ax.plot(x, ys, style, label=label)
    for lv, xi in zip(levels, x):
        ax.annotate(lv["label"], (xi, lv["ttft_ms"]["p50"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    slo = result.get("slo")
    if slo:  # each term's own series against its limit, and the knee
        from llmodal.tools.bench.slo import parse

        for t in parse(",".join(slo["terms"])):
            line = ax.plot(x, [t.value(lv) for lv in levels], "x-", label=f"{t.metric} {t.stat}")[0]
            ax.axhline(t.limit_ms, color=line.get_color(), linestyle="--", linewidth=1, label=f"SLO {t}")
        if slo["knee"]:
            ax.axvline(slo["knee"]["output_tok_s"], color="gray", linestyle=":", label=f"knee {slo['knee']['label']}")
    m = result["meta"]
    ax.set_xlabel("output tokens / s")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{m['model']} — {m['input_len']} in / {m['output_len']} out", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
