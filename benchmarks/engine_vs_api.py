"""Where a request's time goes, by vLLM's own counters: the engine's part against the API server's.

    .venv/bin/python benchmarks/engine_vs_api.py benchmarks/results/h100-2026-12-07b > benchmarks/results/h100-2026-12-07b/engine-vs-api.md

Input: RUN/metrics/EPOCH.txt, the server's `vllm:` lines of /metrics every 15 s (run_any.sh), and RUN/serve.json
(which server was up when). Between two polls, over the requests that finished: the API server's mean e2e latency
(`vllm:e2e_request_latency_seconds`: from the request's arrival at the API server to its last output handled
there) against the engine's own timestamps (`request_queue_time` + `request_prefill_time` +
`request_decode_time`: queued in the engine core, first scheduled, first token, last token). What the API server
adds beyond the engine's part is time the request waited in the API server, before the engine had it or after
the engine had produced its tokens; `inter_token_latency` and `time_per_output_token` are engine timestamps too.
The last two columns: the API server's time to first token against the engine's prefill (first scheduled to
first token), which at one stream is the prompt's one prefill step.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ENGINE = ("request_queue_time_seconds", "request_prefill_time_seconds", "request_decode_time_seconds")


def read(f: Path) -> tuple[dict[str, float], str]:
    """A poll's samples, without the `vllm:` prefix and the histograms' buckets, and the model it served."""
    d, model = {}, "?"
    for family in text_string_to_metric_families(f.read_text()):
        for s in family.samples:
            if "le" not in s.labels:
                d[s.name.removeprefix("vllm:")] = s.value
                model = s.labels.get("model_name", model)
    return d, model


def main(run: Path) -> None:
    polls = sorted((int(f.stem), *read(f)) for f in (run / "metrics").glob("*.txt"))
    print(f"# The engine's part of each request against the API server's ({run.name})\n")
    print("Command: `.venv/bin/python benchmarks/engine_vs_api.py " + str(run.relative_to(Path.cwd()) if
          run.is_relative_to(Path.cwd()) else run) + "` (this file is its output).\n")
    print("| poll (UTC) | model served | requests finished | API server e2e, mean ms | engine: queue + prefill + "
          "decode, mean ms | API server beyond the engine, ms | engine inter-token latency, mean ms | API server TTFT, "
          "mean ms | engine prefill, mean ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (_, a, _), (t1, b, model) in zip(polls, polls[1:]):
        d = {k: b.get(k, 0.0) - a.get(k, 0.0) for k in b}
        n = d.get("e2e_request_latency_seconds_count", 0)
        if n <= 0:
            continue  # nothing finished, or a new server's counters started again
        mean = lambda k: d.get(k + "_sum", 0.0) / max(d.get(k + "_count", 0.0), 1) * 1000  # noqa: E731
        # "–": no first token in this poll
        first = lambda k: f"{mean(k):,.1f}" if d.get(k + "_count", 0) > 0 else "–"  # noqa: E731
        e2e = mean("e2e_request_latency_seconds")
        engine = sum(mean(k) for k in ENGINE)
        when = datetime.fromtimestamp(t1, timezone.utc).strftime("%H:%M:%S")
        print(f"| {when} | {model} | {int(n)} | {e2e:,.0f} | {engine:,.0f} | {e2e - engine:,.0f} "
              f"| {mean('inter_token_latency_seconds'):.2f} | {first('time_to_first_token_seconds')} "
              f"| {first('request_prefill_time_seconds')} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
