#!/bin/bash
# The 70B AWQ INT4 plan on one GPU with vLLM, measured with llmodal's own tools.
# Needs vLLM importable (on the lent GPU machine: wheels installed into /tmp/site, see stage.sh).
#   STEP=serve  : make the model dir, start vLLM detached (default flags), report startup and memory
#   STEP=bench  : llmodal bench at 1,8,32,64 (1024 in / 256 out) and vLLM's bench serve at 1 and 32
#   STEP=eager  : restart with --enforce-eager, report startup, bench 1 and 32
#   STEP=stop   : stop the server
set -u
here=$(cd "$(dirname "$0")" && pwd); root=$(cd "$here/../.." && pwd)
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONPATH="$root/src:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0
M=/tmp/m70; KEY=gpu-bench-key-0123456789; BASE=http://127.0.0.1:8000/v1
stop() { [ -f /tmp/vllm.pid ] || return 0; pid=$(cat /tmp/vllm.pid); kill -TERM "$pid" 2>/dev/null
  for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done; kill -KILL -- -"$pid" 2>/dev/null; rm -f /tmp/vllm.pid; sleep 3; }
lbench() {  # $1 = levels, $2 = tag
  python3 -m llmodal.cli bench --env-file "" --base-url $BASE --api-key $KEY --model meta-llama/Llama-3.1-70B-Instruct \
    --api completions --tokenizer $M --concurrency "$1" --input-len 1024 --output-len 256 --price-per-hour 3.9492 \
    --out "$OUT/llmodal-$2.json" --plot "$OUT/llmodal-$2.png" 2>&1 | grep -v "━"
}
vbench() {  # $1 = concurrency, $2 = tag
  n=$(( $1 * 4 )); [ $n -lt 8 ] && n=8
  OPENAI_API_KEY=$KEY python3 -c "import sys; from vllm.utils.argparse_utils import FlexibleArgumentParser; from vllm.benchmarks.serve import add_cli_args, main; p=FlexibleArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))" \
    --backend vllm --base-url http://127.0.0.1:8000 --model meta-llama/Llama-3.1-70B-Instruct --tokenizer $M \
    --dataset-name random --random-input-len 1024 --random-output-len 256 --ignore-eos --num-prompts $n \
    --max-concurrency $1 --save-result --result-dir "$OUT" --result-filename "vllm-$2-c$1.json" 2>&1 \
    | grep -E "throughput|Mean TTFT|Mean TPOT|Mean ITL|P99|Successful|Failed" | head -14
}
case "${STEP:-serve}" in
  serve) [ -f $M/config.json ] || python3 "$here/make_model.py" $M
         python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)"
         nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv
         python3 "$here/serve_70b.py" $M "$OUT/serve.log"; cp "$OUT/serve.log" "$OUT/serve-default.log" ;;
  bench) lbench "${LEVELS:-1,8,32,64}" default; for c in ${VCONC:-1 32}; do echo "== vllm bench serve c=$c"; vbench $c default; done ;;
  eager) stop; python3 "$here/serve_70b.py" $M "$OUT/serve-eager.log" --eager; lbench "1,32" eager ;;
  tune)  stop; python3 "$here/serve_70b.py" $M "$OUT/serve-tune.log" ${TUNE:---quantization awq_marlin}
         lbench "${LEVELS:-1,32,64}" tune ;;
  stop) stop ;;
esac
