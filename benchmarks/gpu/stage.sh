#!/bin/bash
# On the lent GPU machine (no network): collect carried wheel pieces in /tmp/stage, then install.
#   bash benchmarks/gpu/stage.sh DIR        append the pieces in DIR to /tmp/stage
#   bash benchmarks/gpu/stage.sh --install  join vllm, check its sha256, install everything into /tmp/site
set -eu
SHA=adb1e4c9b46d0dfdb094121ae5aad670a42412dd813ed4e5db069ed6a15006de  # vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl
if [ "$1" != "--install" ]; then
  mkdir -p /tmp/stage && cp -n "$1"/* /tmp/stage/ && echo "staged $(ls /tmp/stage | wc -l) files, $(du -sh /tmp/stage | cut -f1)"
  exit 0
fi
[ -d /tmp/site/vllm ] && { echo "already installed"; exit 0; }
w=/tmp/vllm-0.26.0-cp38-abi3-manylinux_2_28_x86_64.whl
cat /tmp/stage/vllm.part.* > $w
echo "$SHA  $w" | sha256sum -c -
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $w /tmp/stage/*.whl
echo "installed into /tmp/site"
