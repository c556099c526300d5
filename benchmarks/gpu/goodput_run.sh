#!/bin/bash
# The H200 goodput session, as one background pipeline the device calls poll (each call ≤ 10 min;
# the pipeline runs on, detached, while the machine stays warm between calls).
#   bash benchmarks/gpu/goodput_run.sh start   install the staged wheels, start the pipeline
#   bash benchmarks/gpu/goodput_run.sh poll S  wait up to S seconds, then pack /tmp/gp into $OUT
# Steps (benchmarks/gpu/goodput.py), most wanted first; those after the deadline (GP_BUDGET_S from
# start, default 1200) are skipped so the session's device time is not overrun:
#   cold start with 512-token steps (VLLM_MAX_NUM_BATCHED_TOKENS, the one flag changed from the stored
#   balanced run) → its goodput sweep (+ vLLM's bench at the knee) → bench agreement on that server →
#   cold start adding fewer CUDA-graph sizes (compile cache keyed by them) → warm restart of the same
#   (the warm-start timeline) → sweep at the knee and the rate that broke it → API-server import
#   times → both tools greedy (temperature 0, the old request) at c = 1 and 128 → stop.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
export PYTHONPATH="/tmp/site:$root/src" PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0
G=/tmp/gp; mkdir -p $G
SLO="ttft_p99<=2s,itl_p99<=100ms"
SIZES="--cudagraph-capture-sizes 1 2 4 8 16 32 64 128 256 512"
case "$1" in
  start)
    bash "$root/benchmarks/gpu/stage.sh" --install > $G/install.log 2>&1 || { cat $G/install.log; exit 1; }
    nvidia-smi --query-gpu=name,memory.total --format=csv > $G/gpu.txt
    python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)" >> $G/gpu.txt 2>&1
    cat $G/gpu.txt
    deadline=$(( $(date +%s) + ${GP_BUDGET_S:-1200} ))
    setsid bash -c "
      gp() { python3 '$root/benchmarks/gpu/goodput.py' \"\$@\" >> $G/pipeline.log 2>&1; rc=\$?; echo \"\$(date +%T) step \$1 \${3:-} exit \$rc\" >> $G/steps.txt; }
      late() { [ \$(date +%s) -gt $deadline ] && echo \"\$(date +%T) skipped: \$*\" >> $G/steps.txt; }
      gp serve $G b512 --batched 512
      gp goodput $G b512 --rates ${RATES:-3.5,4,4.5,5,5.5,6} --n 200 --slo '$SLO'
      late agree || gp agree $G --levels 1,32,128
      late sizes || { gp serve $G b512s --batched 512 --extra '$SIZES'
                      gp serve $G b512s-warm --batched 512 --extra '$SIZES'
                      gp goodput $G b512s --around b512 --n 200 --slo '$SLO'; }
      late importtime || gp importtime $G
      late greedy || gp agree $G --levels 1,128 --greedy
      gp stop
      echo PIPELINE-DONE >> $G/steps.txt" > /dev/null 2>&1 < /dev/null &
    echo started ;;
  poll)
    end=$(( $(date +%s) + ${2:-500} ))
    while [ "$(date +%s)" -lt "$end" ] && ! grep -q PIPELINE-DONE $G/steps.txt 2>/dev/null; do sleep 5; done
    cat $G/steps.txt 2>/dev/null; tail -5 $G/pipeline.log 2>/dev/null
    tar czf "$OUT/gp.tgz" -C /tmp gp ;;
esac
