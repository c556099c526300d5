#!/bin/bash
# Here (with network to the package index): download the wheels of the vLLM 0.32.0 list and pack them into
# the repo's ignored folders .stage01, .stage02, … each as large as a device call leaves room for (it carries
# ≤ 64 MiB, the tracked working tree included: 63 MiB less the tree, measured now), in the format stage.sh
# reads: whole wheels, big ones split into NAME.whl.part.NN, and SHA256SUMS of the whole wheels.
#   bash benchmarks/gpu/pack_stage.sh [WHEEL_LIST] [DOWNLOAD_DIR]
# Then on the device, one call a folder, back to back: `bash benchmarks/gpu/stage.sh .stageNN` with carry
# [".stageNN"]; the last folder's call can go on with `run_any.sh start`.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
L=${1:-/work/shared/gpu/wheels-vllm032-py312.txt}; W=${2:-/tmp/llmodal-wheels}
mkdir -p "$W/w"
P="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
   --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64
   --platform manylinux_2_26_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64
   --platform manylinux_2_5_x86_64 --platform any"
for f in $(grep -v '^#' "$L" | cut -f1 | grep '\.whl$') platformdirs-4.14.7-py3-none-any.whl; do
  [ -f "$W/w/$f" ] && continue
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp $P \
    -d "$W/w" "$(echo "$f" | cut -d- -f1)==$(echo "$f" | cut -d- -f2)"
done
# every wheel the list names, at the size it gives
grep -v '^#' "$L" | grep '\.whl' | while IFS=$'\t' read -r f s; do
  case $s in *[!0-9]*) continue ;; esac  # platformdirs: a note, not a size
  [ "$(stat -c %s "$W/w/$f")" = "$s" ] || { echo "size of $f is not the list's $s"; exit 1; }
done
rm -rf "$W/parts" "$root"/.stage[0-9]*; mkdir -p "$W/parts"
(cd "$W/w" && sha256sum ./*.whl | sed 's#\./##') > "$W/parts/SHA256SUMS"
tree=$(cd "$root" && git ls-files -z | xargs -0 stat -c %s | awk '{s += $1} END {print s}')
python3 - "$W" "$root" "$tree" <<'EOF'
import os, subprocess, sys
W, root, tree = sys.argv[1], sys.argv[2], int(sys.argv[3])
B = 63 * 1024 * 1024 - tree
items = [(f"{W}/parts/SHA256SUMS", "SHA256SUMS")]
for f in sorted(os.listdir(f"{W}/w")):
    if os.path.getsize(f"{W}/w/{f}") > B:
        subprocess.run(["split", "-b", str(B), "-d", "-a", "2", f"{W}/w/{f}", f"{W}/parts/{f}.part."], check=True)
        items += [(f"{W}/parts/{p}", p) for p in sorted(os.listdir(f"{W}/parts")) if p.startswith(f + ".part.")]
    else:
        items.append((f"{W}/w/{f}", f))
items.sort(key=lambda x: -os.path.getsize(x[0]))
bins = []  # first fit, largest first
for path, name in items:
    s = os.path.getsize(path)
    for b in bins:
        if b[0] + s <= B:
            b[0] += s
            b[1].append((path, name))
            break
    else:
        bins.append([s, [(path, name)]])
for i, (s, files) in enumerate(bins, 1):
    d = f"{root}/.stage{i:02d}"
    os.makedirs(d)
    for path, name in files:
        try:
            os.link(path, f"{d}/{name}")
        except OSError:  # another filesystem
            subprocess.run(["cp", path, f"{d}/{name}"], check=True)
    print(f".stage{i:02d}: {s / 2**20:.1f} MiB, {len(files)} files")
EOF
