#!/bin/bash
# On the lent GPU machine (no network): collect carried wheel pieces in /tmp/stage, then install.
#   bash benchmarks/gpu/stage.sh DIR        append the files in DIR to /tmp/stage
#   bash benchmarks/gpu/stage.sh --install  join each split wheel (NAME.whl.part.NN), check SHA256SUMS,
#                                           install everything into /tmp/site (put it first on PYTHONPATH)
# The wheels: vllm 0.32.0 (the Modal image's release), torch 2.13.0, triton 3.7.1 and torchvision
# 0.28.0 it is built against, nvidia-nccl-cu13 2.32.3 (the image's NCCL 2.28.9 lacks ncclCommResume,
# which torch 2.13 links against), and the small pure dependencies the machine's image lacks (downloaded with
# `pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 ...`).
set -eu
if [ "$1" != "--install" ]; then
  mkdir -p /tmp/stage && cp -n "$1"/* /tmp/stage/ && echo "staged $(ls /tmp/stage | wc -l) files, $(du -sh /tmp/stage | cut -f1)"
  exit 0
fi
[ -d /tmp/site/vllm ] && { echo "already installed"; exit 0; }
cd /tmp/stage
for w in $(ls *.part.* | sed 's/\.part\.[0-9]*$//' | sort -u); do cat "$w".part.* > "$w" && rm "$w".part.*; done
sha256sum -c SHA256SUMS
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site /tmp/stage/*.whl
# The image's torchvision/torchaudio are built for its torch 2.11 and break transformers beside 2.13
# ("operator torchvision::nms does not exist"); /tmp/site carries torchvision 0.28.0 for torch 2.13.
python3 -m pip uninstall -q -y torchvision torchaudio 2>/dev/null || true
echo "installed into /tmp/site: $(ls /tmp/site | wc -l) entries"
