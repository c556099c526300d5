#!/bin/bash
# The H200 goodput session, as one background pipeline the device calls poll (each call ≤ 10 min;
# the pipeline runs on, detached, while the machine stays warm between calls).
#   bash benchmarks/gpu/goodput_run.sh start   install the staged wheels, start the pipeline
#   bash benchmarks/gpu/goodput_run.sh poll S  wait up to S seconds, then pack /tmp/gp into $OUT
# Steps (benchmarks/gpu/goodput.py), most wanted first; blocks that would start after the deadline
# (GP_BUDGET_S from start, default 1000) are skipped so the session's device time is not overrun:
#   cold start, LLMODAL_PROFILE=throughput (an FP8 build on FP8 tensor cores: 512-token steps, FP8 KV)
#   → its goodput sweep from 4 req/s up (+ vLLM's bench at the knee) → a cold start of the balanced
#   profile with prefix caching off (ten CUDA-graph sizes), then its warm restart (the warm-start
#   timeline) → bench agreement on that server (prefix caching off: vLLM's random prompts repeat with
#   make_model.py's 2,000-token tokenizer, 10.5 % of their tokens came from the cache at c = 128 on
#   2026-12-02) → API-server import times → both tools greedy.
# Poll back to back: the machine is released ~30 s after a call returns, and with it the pipeline and
# every file not yet polled (2026-12-02: the last 7 minutes of a session were lost that way).
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
export PYTHONPATH="/tmp/site:$root/src" PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0
G=/tmp/gp; mkdir -p $G
SLO="ttft_p99<=2s,itl_p99<=100ms"
# The 2026-12-02c run passed --cudagraph-capture-sizes 1 2 4 … 512 here; the planner passes them since.
case "$1" in
  start)
    bash "$root/benchmarks/gpu/stage.sh" --install > $G/install.log 2>&1 || { cat $G/install.log; exit 1; }
    nvidia-smi --query-gpu=name,memory.total --format=csv > $G/gpu.txt
    python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)" >> $G/gpu.txt 2>&1
    cat $G/gpu.txt
    deadline=$(( $(date +%s) + ${GP_BUDGET_S:-1000} ))
    setsid bash -c "
      gp() { python3 '$root/benchmarks/gpu/goodput.py' \"\$@\" >> $G/pipeline.log 2>&1; rc=\$?; echo \"\$(date +%T) step \$1 \${3:-} exit \$rc\" >> $G/steps.txt; }
      late() { [ \$(date +%s) -gt $deadline ] && echo \"\$(date +%T) skipped: \$*\" >> $G/steps.txt; }
      gp serve $G tput --profile throughput
      gp goodput $G tput --rates ${RATES:-4,4.5,5,5.5,6} --n 200 --slo '$SLO'
      gp serve $G nocache --extra '--no-enable-prefix-caching'
      gp serve $G nocache-warm --extra '--no-enable-prefix-caching'
      late agree || gp agree $G --levels 1,32,128
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
