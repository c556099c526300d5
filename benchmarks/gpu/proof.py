"""The 70B AWQ plan on one GPU through llmodal's own launcher and supervisor, start to stop.

    python benchmarks/gpu/proof.py MODEL_DIR OUT_DIR TAG [--sleep | --fast-boot] [--profile P]
                                   [--levels 1,8,32,64,128] [--vllm-levels 1,64] [--no-fill]

One run: plan (KV size from the planner: --kv-cache-memory-bytes), start vLLM (dummy weights),
time launch → /health, then a full-length prompt (8,100 tokens in) and a load that overfills
the KV cache (16 × 6,000 in / 1,024 out, ≈ 114k tokens), optionally sleep/wake timings and
llmodal bench levels, then stop. Everything lands in OUT_DIR/TAG.json and TAG.log.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zlib
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from llmodal.core.config import load_settings  # noqa: E402
from llmodal.modal.spec import IMAGE_ENV  # noqa: E402
from llmodal.engine.prepare import prepare  # noqa: E402
from llmodal.run.supervisor import Supervisor  # noqa: E402

KEY = "gpu-bench-key-0123456789"
BASE = "http://127.0.0.1:8000"
KV_LINE = re.compile(r"GPU KV cache size: ([\d,]+) tokens")


def gpu_used_mib() -> int:
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True).stdout
    return int(out.split()[0])


def bench(model: str, out: Path, tag: str, *, levels: str, input_len: int, output_len: int, n: int | None = None) -> dict:
    argv = [sys.executable, "-m", "llmodal.cli", "bench", "--env-file", "", "--base-url", BASE + "/v1", "--api-key", KEY,
            "--model", model, "--api", "completions", "--tokenizer", model, "--concurrency", levels,
            "--input-len", str(input_len), "--output-len", str(output_len), "--warmup", "0",
            "--price-per-hour", "3.9492", "--out", str(out / f"{tag}.json"),
            # every call its own prompts: a level must not find an earlier level's in vLLM's prefix cache
            "--seed", str(zlib.crc32(tag.encode()))]
    if n:
        argv += ["--num-prompts", str(n)]
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True)
    print(r.stdout[-2500:], r.stderr[-1500:], flush=True)
    doc = json.loads((out / f"{tag}.json").read_text()) if (out / f"{tag}.json").exists() else {}
    return {"exit": r.returncode, "seconds": time.monotonic() - t0,
            "levels": [{k: lv[k] for k in ("label", "sent", "completed", "failed", "failures", "output_tok_s",
                                           "prompt_tokens", "ttft_ms", "itl_ms")} for lv in doc.get("levels", [])]}


def vllm_bench(model: str, out: Path, tag: str, c: int) -> dict:
    """vLLM's own benchmark at concurrency ``c`` (random 1024 in / 256 out, ignore_eos, 2 × c prompts)."""
    n = max(4, 2 * c)
    code = ("import sys; from vllm.utils.argparse_utils import FlexibleArgumentParser; "
            "from vllm.benchmarks.serve import add_cli_args, main; p = FlexibleArgumentParser(); add_cli_args(p); "
            "main(p.parse_args(sys.argv[1:]))")
    argv = [sys.executable, "-c", code, "--backend", "vllm", "--base-url", BASE, "--model", model, "--tokenizer", model,
            "--dataset-name", "random", "--random-input-len", "1024", "--random-output-len", "256", "--ignore-eos",
            "--num-prompts", str(n), "--max-concurrency", str(c), "--percentile-metrics", "ttft,tpot,itl,e2el",
            "--metric-percentiles", "50,99", "--seed", str(1000 + c), "--save-result", "--result-dir", str(out),
            "--result-filename", f"{tag}-vllm-c{c}.json"]
    r = subprocess.run(argv, capture_output=True, text=True, env={**__import__("os").environ, "OPENAI_API_KEY": KEY})
    f = out / f"{tag}-vllm-c{c}.json"
    doc = json.loads(f.read_text()) if f.exists() else {}
    print(f"vllm bench c={c}: {doc.get('output_throughput')} tok/s; exit {r.returncode} {r.stderr[-300:]}", flush=True)
    return {k: doc.get(k) for k in ("completed", "failed", "output_throughput", "mean_ttft_ms", "p99_ttft_ms",
                                    "mean_tpot_ms", "p99_itl_ms")}


def _arg(name: str, default: str | None = None) -> str | None:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


def main() -> None:
    model, out, tag = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    sleep = "--sleep" in sys.argv
    levels = _arg("--levels")
    out.mkdir(parents=True, exist_ok=True)
    settings = load_settings(None, model=model, gpu="H100", server_api_key=KEY,
                             extra_args="--load-format dummy", profile=_arg("--profile", "balanced"))
    if "--fast-boot" in sys.argv:
        return fast_boot(settings, out, tag)
    prep = prepare(settings, gpu=True, sleep_mode=sleep)
    plan = prep.resolution.chosen
    rec: dict = {"tag": tag, "command": prep.launch.shell(), "planner_kv_tokens": plan.kv_tokens,
                 "kv_cache_bytes": plan.kv_cache_bytes, "gpu_mib_before": gpu_used_mib()}
    print("command:", rec["command"], flush=True)
    env = {**IMAGE_ENV, **({"VLLM_SERVER_DEV_MODE": "1"} if sleep else {})}
    import os

    def save() -> None:  # after every step: a run cut off by its time limit keeps what it measured
        (out / f"{tag}.json").write_text(json.dumps(rec, indent=2))

    sup = Supervisor(prep.launch, out / f"{tag}.log", env={**os.environ, **env})
    sup.start()
    try:
        rec["launch_to_health_s"] = round(sup.wait_ready(900), 1)
        kv = KV_LINE.findall((out / f"{tag}.log").read_text())
        rec["engine_kv_tokens"] = int(kv[-1].replace(",", "")) if kv else None
        rec["gpu_mib_serving"] = gpu_used_mib()
        print(json.dumps(rec), flush=True)
        save()
        h = {"Authorization": f"Bearer {KEY}"}
        if sleep:
            c = httpx.Client(base_url=BASE, headers=h, timeout=600)
            rec["sleep_route_without_key"] = httpx.post(BASE + "/sleep?level=1").status_code
            t = time.monotonic()
            rec["sleep_status"] = c.post("/sleep", params={"level": 1}).status_code
            rec["sleep_s"] = round(time.monotonic() - t, 2)
            rec["gpu_mib_asleep"] = gpu_used_mib()
            t = time.monotonic()
            rec["wake_status"] = c.post("/wake_up").status_code
            rec["wake_s"] = round(time.monotonic() - t, 2)
            t = time.monotonic()
            r = c.post("/v1/completions", json={"model": model, "prompt": "hello", "max_tokens": 1})
            rec["first_token_after_wake_s"] = round(time.monotonic() - t, 3)
            rec["first_request_status"] = r.status_code
            rec["gpu_mib_awake"] = gpu_used_mib()
            save()
        rec["full_length"] = bench(model, out, f"{tag}-8k", levels="1", input_len=8100, output_len=64, n=1)
        save()
        if "--no-fill" not in sys.argv:
            rec["fill_kv"] = bench(model, out, f"{tag}-fill", levels="16", input_len=6000, output_len=1024, n=16)
            save()
        for lv in (levels.split(",") if levels else []):
            c = int(lv)
            rec.setdefault("bench", {})[f"c{c}"] = bench(model, out, f"{tag}-c{c}", levels=lv, input_len=1024,
                                                         output_len=256, n=max(4, 2 * c))["levels"]
            save()
        for lv in (_arg("--vllm-levels") or "").split(","):
            if lv:
                rec.setdefault("vllm_bench", {})[f"c{lv}"] = vllm_bench(model, out, tag, int(lv))
                save()
        rec["alive_after"] = sup.alive()
        oom = re.findall(r"out of memory|OutOfMemoryError", (out / f"{tag}.log").read_text(), re.I)
        rec["oom_lines"] = len(oom)
    finally:
        t = time.monotonic()
        rec["stop_code"] = sup.stop(grace=40)
        rec["stop_s"] = round(time.monotonic() - t, 1)
        save()
        print(json.dumps({k: v for k, v in rec.items() if k not in ("full_length", "fill_kv", "bench")}), flush=True)


def fast_boot(settings, out: Path, tag: str) -> None:
    """The fast-boot steps on this GPU through llmodal's own FastBoot: start with sleep mode, warm
    up, decode speed before sleeping (the fresh start), sleep (what the snapshot holds), wake,
    first token, decode speed after waking. Saved after every step."""
    import os

    from llmodal.modal.fast_boot import FastBoot

    os.environ.update(IMAGE_ENV)  # in Modal these are the image's environment
    prep = prepare(settings, gpu=True, sleep_mode=True)
    boot = FastBoot(prep, gpu=True)
    boot.sup.log_path = out / f"{tag}.log"
    model = prep.launch.argv[prep.launch.argv.index("--model") + 1]
    rec: dict = {"tag": tag, "command": prep.launch.shell(), "planner_kv_tokens": prep.resolution.chosen.kv_tokens,
                 "gpu_mib_before": gpu_used_mib()}

    def save() -> None:
        rec["timings"] = boot.timings
        (out / f"{tag}.json").write_text(json.dumps(rec, indent=2))

    def c1(name: str) -> list:
        return bench(model, out, f"{tag}-{name}", levels="1", input_len=1024, output_len=256, n=4)["levels"]

    warm_up = boot.warm_up

    def warm_then_measure() -> None:  # the fresh start's decode speed, same process, before the sleep
        warm_up()
        rec["gpu_mib_serving"] = gpu_used_mib()
        rec["before_sleep"] = c1("fresh")
        save()

    boot.warm_up = warm_then_measure
    try:
        boot.prepare_snapshot(900)
        rec["gpu_mib_asleep"] = gpu_used_mib()
        rec["host_rss_gib_asleep"] = round(sum(p.memory_info().rss for p in _tree(boot.sup.proc.pid)) / 2**30, 2)
        save()
        boot.restore()
        rec["gpu_mib_awake"] = gpu_used_mib()
        t = time.monotonic()
        r = httpx.post(BASE + "/v1/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=120,
                       json={"model": prep.served_name, "prompt": "hello", "max_tokens": 1})
        rec["first_token_after_wake_s"] = round(time.monotonic() - t, 3)
        rec["first_request_status"] = r.status_code
        rec["post_restore_s"] = round(boot.timings.get("wake", 0) + boot.timings["health_after_restore"]
                                      + rec["first_token_after_wake_s"], 3)
        kv = KV_LINE.findall((out / f"{tag}.log").read_text())
        rec["engine_kv_tokens"] = int(kv[-1].replace(",", "")) if kv else None
        save()
        rec["after_wake"] = c1("woken")
    finally:
        boot.stop()
        save()
        print(json.dumps({k: v for k, v in rec.items() if k not in ("after_wake", "before_sleep")}), flush=True)


def _tree(pid: int) -> list:
    import psutil

    p = psutil.Process(pid)
    return [p, *p.children(recursive=True)]


if __name__ == "__main__":
    main()
