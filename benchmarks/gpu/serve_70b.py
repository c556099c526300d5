"""Start the 70B AWQ plan on this GPU through llmodal's own command-line builder, detached,
and report launch→/health seconds plus the engine's memory lines.

    python benchmarks/gpu/serve_70b.py MODEL_DIR LOG [--eager] [more vLLM flags]

Settings are the default plan's (VLLM_MAX_MODEL_LEN 8192, utilization 0.95, TP 1); the key
travels in the environment; weights are random (--load-format dummy).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from llmodal.core.config import load_settings  # noqa: E402
from llmodal.engine.launch import build_launch  # noqa: E402

KEY = "gpu-bench-key-0123456789"
SERVED = "meta-llama/Llama-3.1-70B-Instruct"
LINES = re.compile(r"KV cache|concurrency|backend|Machete|Marlin|AWQ|Model loading took|memory|Graph capturing|"
                   r"torch.compile|init engine|Available|took", re.I)


def main() -> None:
    model, log = sys.argv[1], Path(sys.argv[2])
    tune = [a for a in sys.argv[3:] if a != "--eager"]
    extra = ["--load-format", "dummy"] + (["--enforce-eager"] if "--eager" in sys.argv else []) + tune
    settings = load_settings(None, model=model)
    launch = build_launch(settings, served_model_name=SERVED, api_key=KEY, extra=extra)
    print("command:", launch.shell(), flush=True)
    env = launch.child_env(dict(os.environ, VLLM_USE_FLASHINFER_SAMPLER="0"))
    t0 = time.monotonic()
    with log.open("wb") as f:
        proc = subprocess.Popen(launch.argv, env=env, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    Path("/tmp/vllm.pid").write_text(str(proc.pid))
    while True:
        time.sleep(1)
        if proc.poll() is not None:
            print(f"vLLM died (code {proc.returncode})")
            print(log.read_text()[-3000:])
            sys.exit(1)
        try:
            if httpx.get(f"http://127.0.0.1:{launch.port}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() - t0 > 560:
            sys.exit("no /health after 560 s")
    print(f"HEALTHY after {time.monotonic() - t0:.0f} s", flush=True)
    for line in log.read_text().splitlines():
        if LINES.search(line) and "Route" not in line:
            print(line[:260])


if __name__ == "__main__":
    main()
