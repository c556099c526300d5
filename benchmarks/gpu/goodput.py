"""Goodput on one GPU: bench agreement with vLLM's own tool, an open-loop SLO sweep, one flag at a time.

    python benchmarks/gpu/goodput.py serve OUT TAG [--profile P] [--batched N] [--seqs N] [--extra "vLLM flags"]
                                          [--graph-sizes vllm]
    python benchmarks/gpu/goodput.py agree OUT [--levels 1,32,128] [--rounds 2] [--greedy]
    python benchmarks/gpu/goodput.py goodput OUT TAG [--rates 3,4,5,6 | --around TAG2] [--n 160] [--slo "..."]
                                            [--seed N] [--no-vllm]
    python benchmarks/gpu/goodput.py importtime OUT
    python benchmarks/gpu/goodput.py stop

``serve`` plans MODEL (env GP_MODEL, default /tmp/m70fp8: make_model.py --fp8) for this GPU through
llmodal's own ``prepare`` (planner KV size, the profile's flags), starts vLLM detached (dummy weights,
/metrics open so the server's own TTFT histogram can be read) and records launch → /health with a
timeline parsed from vLLM's log. ``agree`` runs llmodal bench and ``vllm bench serve`` alternately on
that server, fresh prompts each run, and reads the server's TTFT histogram (``/metrics``) before and
after each run: the server's own mean TTFT per run says whether a difference is the client's, and
its prefix-cache counters say whether one tool's prompts were partly served from cache.
Every step appends to OUT/*.json as it goes (a run cut by its time limit keeps what it measured).
``--graph-sizes vllm`` drops the planner's CUDA-graph sizes from the command line (vLLM then captures
its own 51), to measure that one flag; ``--seed`` gives two sweeps the same prompts and arrival draws;
``--no-vllm`` leaves out vLLM's bench at the knee.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from llmodal.core.config import load_settings  # noqa: E402
from llmodal.engine.prepare import prepare  # noqa: E402
from llmodal.core.errors import LlmodalError  # noqa: E402
from llmodal.modal.spec import IMAGE_ENV  # noqa: E402
from llmodal.run.health import wait_healthy  # noqa: E402

KEY = "gpu-bench-key-0123456789"
PORT = int(os.environ.get("GP_PORT", "8000"))
BASE = f"http://127.0.0.1:{PORT}"
MODEL = os.environ.get("GP_MODEL", "/tmp/m70fp8")
GPU, PRICE = os.environ.get("GP_GPU", "H200"), float(os.environ.get("GP_PRICE", "4.54"))
PID = Path("/tmp/gp-vllm.pid")
# vLLM's log lines that mark the start's phases (time-stamped to the second by vLLM's logger).
PHASES = [("engine_args", r"non-default args"), ("model_config", r"Resolved architecture|Using max model len"),
          ("engine_core_start", r"EngineCore.*(Initializing|init)|Initializing a V1 LLM engine"),
          ("weights_loaded", r"Model loading took"), ("dynamo_done", r"Dynamo bytecode transform time"),
          ("compile_done", r"torch.compile takes|Compiling a graph for"),
          ("kv_allocated", r"GPU KV cache size"), ("graphs_captured", r"Graph capturing finished"),
          ("engine_ready", r"init engine .* took"), ("api_up", r"Application startup complete|Starting vLLM API server")]
STAMP = re.compile(r"(\d\d-\d\d \d\d:\d\d:\d\d)")


def _arg(name: str, default: str | None = None) -> str | None:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def _save(path: Path, key: str, value) -> None:
    doc = json.loads(path.read_text()) if path.exists() else {}
    doc[key] = value
    path.write_text(json.dumps(doc, indent=2))


def stop() -> None:
    if not PID.exists():
        return
    pid = int(PID.read_text())
    try:
        os.kill(pid, 15)
        for _ in range(60):
            os.kill(pid, 0)
            time.sleep(1)
    except ProcessLookupError:
        pass
    try:
        os.killpg(pid, 9)
    except ProcessLookupError:
        pass
    PID.unlink()
    time.sleep(3)


def timeline(log: str, t_launch: float, wall_launch: float) -> dict:
    """Seconds from launch to each phase's first log line (vLLM stamps to the second)."""
    out = {}
    year = time.strftime("%Y", time.localtime(wall_launch))
    for name, pat in PHASES:
        for line in log.splitlines():
            if re.search(pat, line) and (m := STAMP.search(line)):
                t = time.mktime(time.strptime(f"{year}-{m.group(1)}", "%Y-%m-%d %H:%M:%S"))
                out[name] = round(t - wall_launch, 1)
                break
    return out


def serve(out: Path, tag: str) -> None:
    stop()
    if not (Path(MODEL) / "config.json").exists():
        subprocess.run([sys.executable, str(Path(__file__).with_name("make_model.py")), MODEL, "--fp8"], check=True)
    extra = "--load-format dummy " + (_arg("--extra") or "")
    batching = {k: int(v) for k, v in (("max_num_batched_tokens", _arg("--batched")), ("max_num_seqs", _arg("--seqs")))
                if v}
    settings = load_settings(None, model=MODEL, gpu=GPU, server_api_key=KEY, metrics_public=True, port=PORT,
                             extra_args=extra.strip(), profile=_arg("--profile", "balanced"), **batching)
    prep = prepare(settings, gpu=True)
    launch = prep.launch
    if _arg("--graph-sizes") == "vllm":  # the planner's sizes off: vLLM's default list
        i = launch.argv.index("--cudagraph-capture-sizes")
        j = i + 1
        while j < len(launch.argv) and launch.argv[j].isdigit():
            j += 1
        del launch.argv[i:j]
    env = launch.child_env({**os.environ, **IMAGE_ENV})
    log = out / f"{tag}-serve.log"
    wall, t0 = time.time(), time.monotonic()
    with log.open("wb") as f:
        proc = subprocess.Popen(launch.argv, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    PID.write_text(str(proc.pid))
    rec = {"command": launch.shell(), "plan": prep.summary}
    try:  # llmodal's own health wait: the one the supervisor and the container use
        wait_healthy(f"{BASE}/health", 540, alive=lambda: proc.poll() is None, interval=0.5, cap=1.0)
    except LlmodalError as e:
        print(log.read_text()[-4000:])
        sys.exit(f"vLLM did not come up: {e}")
    rec["launch_to_health_s"] = round(time.monotonic() - t0, 1)
    rec["timeline_s"] = timeline(log.read_text(errors="replace"), t0, wall)
    kv = re.findall(r"GPU KV cache size: ([\d,]+) tokens", log.read_text(errors="replace"))
    rec["engine_kv_tokens"] = int(kv[-1].replace(",", "")) if kv else None
    _save(out / "serve.json", tag, rec)
    print(json.dumps(rec, indent=2), flush=True)


def server_ttft() -> tuple[float, ...]:
    """(sum, count) of the server's own time-to-first-token histogram, its prefix cache's (hit tokens, queried
    tokens), and (sum, count) of the engine's prefill-time histogram (scheduled to first token)."""
    try:
        text = httpx.get(f"{BASE}/metrics", timeout=30).text
    except httpx.HTTPError:
        return (0.0,) * 6
    get = lambda name: sum(float(m) for m in re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M))  # noqa: E731
    return (get("vllm:time_to_first_token_seconds_sum"), get("vllm:time_to_first_token_seconds_count"),
            get("vllm:prefix_cache_hits_total"), get("vllm:prefix_cache_queries_total"),
            get("vllm:request_prefill_time_seconds_sum"), get("vllm:request_prefill_time_seconds_count"))


def _served() -> str:
    return httpx.get(f"{BASE}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=30).json()["data"][0]["id"]


def llmodal_bench(out: Path, tag: str, *, c: int | None = None, rates: str | None = None, n: int,
                  slo: str | None = None, temperature: float | None = None, seed: int | None = None,
                  models: str | None = None, mix: tuple[int, int] = (1024, 256)) -> dict:
    # One uncounted request first, as vLLM's bench sends its test prompt: in 2026-12-02c llmodal ran
    # first on a just-restarted server with none, and its first two c = 1 requests took 181–183 ms
    # against 122–124 ms for the next two.
    # models: one served name (e.g. a LoRA adapter) or several, comma-separated (a mixed run); default the base
    path = out / f"{tag}.json"
    which = ["--models", models] if models and "," in models else ["--model", models or _served()]
    argv = [sys.executable, "-m", "llmodal.cli", "bench", "--env-file", "", "--base-url", BASE + "/v1",
            "--api-key", KEY, *which, "--api", "completions", "--tokenizer", MODEL,
            "--input-len", str(mix[0]), "--output-len", str(mix[1]), "--num-prompts", str(n), "--warmup", "1",
            "--price-per-hour", str(PRICE), "--out", str(path),
            "--seed", str(zlib.crc32(tag.encode()) if seed is None else seed)]
    argv += ["--request-rate", rates] if rates else ["--concurrency", str(c)]
    argv += ["--slo", slo] if slo else []
    argv += ["--temperature", str(temperature)] if temperature is not None else []
    before = server_ttft()
    t = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True)
    after = server_ttft()
    print(r.stdout[-3000:], r.stderr[-1500:], flush=True)
    doc = json.loads(path.read_text()) if path.exists() else {}
    lv = doc.get("levels", [{}])[-1] if doc.get("levels") else {}
    return {"tool": "llmodal", "exit": r.returncode, "wall_s": round(time.monotonic() - t, 1),
            "out_tok_s": lv.get("output_tok_s"), "ttft_mean_ms": (lv.get("ttft_ms") or {}).get("mean"),
            "ttft_p50_ms": (lv.get("ttft_ms") or {}).get("p50"), "ttft_p99_ms": (lv.get("ttft_ms") or {}).get("p99"),
            "itl_p50_ms": (lv.get("itl_ms") or {}).get("p50"), "itl_p99_ms": (lv.get("itl_ms") or {}).get("p99"),
            "output_tokens": lv.get("output_tokens"), "prompt_tokens": lv.get("prompt_tokens"),
            "server_ttft_mean_ms": _server_mean(before, after), **_cache(before, after), "slo": doc.get("slo"),
            # the warm-up request is inside both differences (it is sent by the same bench call)
            "engine_prefill_mean_ms": _server_mean(before[4:], after[4:]),
            "server_requests_counted": after[1] - before[1]}


def _server_mean(before, after) -> float | None:
    d = after[1] - before[1]
    return round((after[0] - before[0]) / d * 1000, 1) if d else None


def _cache(before, after) -> dict:
    q = after[3] - before[3]
    hits = after[2] - before[2]
    return {"prefix_cache_hit_tokens": hits, "prefix_cache_hit_share": round(hits / q, 4) if q else None}


def vllm_bench(out: Path, tag: str, *, c: int | None = None, rate: float | None = None, n: int,
               temperature: float | None = None) -> dict:
    code = ("import sys; from vllm.utils.argparse_utils import FlexibleArgumentParser; "
            "from vllm.benchmarks.serve import add_cli_args, main; p = FlexibleArgumentParser(); add_cli_args(p); "
            "main(p.parse_args(sys.argv[1:]))")
    argv = [sys.executable, "-c", code, "--backend", "vllm", "--base-url", BASE, "--model", _served(),
            "--tokenizer", MODEL, "--dataset-name", "random", "--random-input-len", "1024", "--random-output-len",
            "256", "--ignore-eos", "--num-prompts", str(n), "--percentile-metrics", "ttft,tpot,itl,e2el",
            "--metric-percentiles", "50,99", "--seed", str(zlib.crc32(tag.encode()) % 100000), "--save-result",
            "--save-detailed", "--result-dir", str(out), "--result-filename", f"{tag}.json"]
    argv += ["--max-concurrency", str(c)] if c else ["--request-rate", str(rate)]
    argv += ["--temperature", str(temperature)] if temperature is not None else []
    before = server_ttft()
    t = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "OPENAI_API_KEY": KEY})
    after = server_ttft()
    f = out / f"{tag}.json"
    doc = json.loads(f.read_text()) if f.exists() else {}
    print(f"vllm bench {tag}: {doc.get('output_throughput')} tok/s, exit {r.returncode} {r.stderr[-400:]}", flush=True)
    return {"tool": "vllm", "exit": r.returncode, "wall_s": round(time.monotonic() - t, 1),
            "out_tok_s": doc.get("output_throughput"), "ttft_mean_ms": doc.get("mean_ttft_ms"),
            "ttft_p50_ms": doc.get("median_ttft_ms"), "ttft_p99_ms": doc.get("p99_ttft_ms"),
            "itl_p50_ms": doc.get("median_itl_ms"), "itl_p99_ms": doc.get("p99_itl_ms"),
            "output_tokens": doc.get("total_output_tokens"), "prompt_tokens": doc.get("total_input_tokens"),
            "server_ttft_mean_ms": _server_mean(before, after), **_cache(before, after)}


def agree(out: Path) -> None:
    """Both tools at each level; --greedy: both with temperature 0 (what llmodal sent before
    2026-12-02), to see whether sampling alone moves the server's TTFT."""
    levels = [int(x) for x in (_arg("--levels") or "1,32,128").split(",")]
    greedy = "--greedy" in sys.argv
    key = "greedy" if greedy else "rows"
    doc = json.loads((out / "agree.json").read_text()) if (out / "agree.json").exists() else {}
    rows = doc.get(key, [])
    for rnd in range(int(_arg("--rounds", "1"))):
        for c in levels:
            n = 4 if c == 1 else 2 * c
            order = (llmodal_bench, vllm_bench) if rnd % 2 == 0 else (vllm_bench, llmodal_bench)
            for fn in order:
                tag = f"agree{'-t0' if greedy else ''}-r{rnd}-c{c}-{'llmodal' if fn is llmodal_bench else 'vllm'}"
                rows.append({"round": rnd, "c": c, **fn(out, tag, c=c, n=n, temperature=0.0 if greedy else None)})
                _save(out / "agree.json", key, rows)


def goodput(out: Path, tag: str) -> None:
    slo = _arg("--slo", "ttft_p99<=2s,itl_p99<=100ms")
    n = int(_arg("--n", "160"))
    rates = _arg("--rates", "3,4,5,6")
    if around := _arg("--around"):  # from the first rate that broke an earlier sweep, upward
        s = json.loads((out / "goodput.json").read_text())[around]["llmodal"]["slo"]
        if first := (s.get("first_failing") or "").split(" ")[0]:
            rates = ",".join(str(float(first) + d) for d in (0, 0.5, 1.0))
    rec = {"slo": slo, "rates": rates,
           "llmodal": llmodal_bench(out, f"{tag}-sweep", rates=rates, n=n, slo=slo,
                                    seed=int(_arg("--seed")) if _arg("--seed") else None)}
    _save(out / "goodput.json", tag, rec)
    knee = (rec["llmodal"].get("slo") or {}).get("knee")
    if knee and knee.get("request_rate") and "--no-vllm" not in sys.argv:
        rec["vllm_at_knee"] = vllm_bench(out, f"{tag}-vllm-at-knee", rate=knee["request_rate"], n=n)
        _save(out / "goodput.json", tag, rec)
    print(json.dumps(rec, indent=2), flush=True)


def importtime(out: Path) -> None:
    """Where the API server's first ~20 s go: its imports, cumulative, largest first."""
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", "import vllm.entrypoints.openai.api_server"],
                       capture_output=True, text=True, env={**os.environ, **IMAGE_ENV})
    (out / "importtime.txt").write_text(r.stderr)
    rows = []
    for line in r.stderr.splitlines():
        if m := re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line):
            rows.append((int(m.group(2)) / 1e6, len(m.group(3)), m.group(4), int(m.group(1)) / 1e6))
    top = sorted([x for x in rows if x[1] <= 9], reverse=True)[:25]
    own = sorted(rows, key=lambda x: -x[3])[:15]
    print("cumulative:\n" + "\n".join(f"{t:7.2f} s  {' ' * d}{name}" for t, d, name, _ in top), flush=True)
    print("self:\n" + "\n".join(f"{o:7.2f} s  {name}" for _, _, name, o in own), flush=True)


def main() -> None:
    step = sys.argv[1]
    if step == "stop":
        return stop()
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    if step == "serve":
        serve(out, sys.argv[3])
    elif step == "agree":
        agree(out)
    elif step == "goodput":
        goodput(out, sys.argv[3])
    elif step == "importtime":
        importtime(out)
    else:
        sys.exit(f"unknown step {step!r}: serve, agree, goodput, importtime, stop")


if __name__ == "__main__":
    main()
