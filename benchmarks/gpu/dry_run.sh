#!/bin/bash
# run_any.sh on a machine without a GPU, so no device time goes to a script bug: nvidia-smi and the
# GPU steps of python3 are stubs (a server start that only records itself, a bench that returns fixed
# figures after a second); `llmodal plan`, the predictions, the row bookkeeping and the tables are real.
#   bash benchmarks/gpu/dry_run.sh CARD BUDGET_S [RA_ROWS]     e.g. H100 2000, H100 250 (rows skipped), H200 900
# Needs a Python with llmodal's dependencies and transformers (DRY_PY, default .venv/bin/python).
set -u
here=$(cd "$(dirname "$0")" && pwd)
D=$(mktemp -d /tmp/ra-dry.XXXX); mkdir -p "$D/bin" "$D/out"
export DRY_PY=${DRY_PY:-$here/../../.venv/bin/python} DRY_CARD=$1 DRY_FAIL=${DRY_FAIL:-}
cat > "$D/bin/nvidia-smi" <<'EOF'
#!/bin/bash
case "$*" in
  *name*) [ "$DRY_CARD" = H200 ] && echo "NVIDIA H200, 143771 MiB, 580.82" || echo "NVIDIA H100 80GB HBM3, 81559 MiB, 580.82" ;;
  *memory.used*) echo 75267 ;;
esac
EOF
cat > "$D/bin/python3" <<'EOF'
#!/bin/bash
# serve OUT TAG: record a start (DRY_FAIL names tags whose start fails); goodput: a sweep record; agree: its record;
# held_out.py measure: the real code with goodput.llmodal_bench replaced by fixed figures.
case "$*" in
  *"import vllm"*) echo "vllm 0.32.0 (stub) torch 2.13.0 (stub)" ;;
  *goodput.py\ serve*) sleep 1; case " $DRY_FAIL " in *" $4 "*) echo "vLLM did not come up (stub)"; exit 1 ;; esac
    exec "$DRY_PY" -c "import json,sys,pathlib; p=pathlib.Path(sys.argv[1])/'serve.json'; d=json.loads(p.read_text()) if p.exists() else {}; d[sys.argv[2]]={'launch_to_health_s': 1.0, 'stub': True}; p.write_text(json.dumps(d))" "$3" "$4" ;;
  *goodput.py\ goodput*) exec "$DRY_PY" -c "import json,sys,pathlib; p=pathlib.Path(sys.argv[1])/'goodput.json'; p.write_text(json.dumps({sys.argv[2]: {'stub': True}}))" "$3" "$4" ;;
  *goodput.py\ agree*) exec "$DRY_PY" -c "import json,sys,pathlib; p=pathlib.Path(sys.argv[1])/'agree.json'; p.write_text(json.dumps({'rows': [], 'stub': True}))" "$3" ;;
  *goodput.py\ stop*) exit 0 ;;
  *held_out.py\ measure*) shift 0
    exec "$DRY_PY" -c "
import sys, time, runpy
sys.path.insert(0, sys.argv[1].rsplit('/', 1)[0])
import goodput
def fake(out, tag, *, c, n, **k):
    time.sleep(1)
    return {'tool': 'llmodal', 'exit': 0, 'out_tok_s': 40.0 * c ** 0.8, 'ttft_mean_ms': 200.0, 'stub': True}
goodput.llmodal_bench = fake
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')" "$@" ;;
  *) exec "$DRY_PY" "$@" ;;
esac
EOF
chmod +x "$D/bin/"*
export PATH="$D/bin:$PATH" RA_DIR=$D/ra RA_INSTALL=0 RA_GPU_LEFT_S=$2 RA_MARGIN_S=0 OUT=$D/out
[ -n "${3:-}" ] && export RA_ROWS=$3
bash "$here/run_any.sh" start || exit 1
bash "$here/run_any.sh" poll 300
echo "--- rows.json keys and measured levels:"
"$DRY_PY" -c "import json,sys; d=json.load(open(sys.argv[1])); [print(k, {c: m.get('out_tok_s', m.get('skipped', m.get('error'))) for c, m in v['measured'].items()}) for k, v in d.items()]" "$D/ra/rows.json" 2>&1
tar tzf "$D/out/ra.tgz" | head -30
echo "dry-run folder: $D"
