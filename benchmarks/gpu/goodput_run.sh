#!/bin/bash
# The H200 goodput session, as one background pipeline the device calls poll (each call ≤ 10 min;
# the pipeline runs on, detached, while the machine stays warm between calls).
#   bash benchmarks/gpu/goodput_run.sh start   install the staged wheels, start the pipeline
#   bash benchmarks/gpu/goodput_run.sh poll S  wait up to S seconds, then pack /tmp/gp into $OUT
# Steps (benchmarks/gpu/goodput.py), most wanted first; a step that would start after its own deadline
# (seconds from start, scaled by GP_BUDGET_S / 1400) is skipped so the session's device time is not overrun.
# Session 4 (2026-12-02d): is the ten-size CUDA-graph list costing goodput? Under Poisson load the decode
# batch wanders (~100–140 sequences at 5.5 req/s) and a batch pads up to the next captured size — 130 to
# 256 with powers of two, to 136 with vLLM's 51 sizes; the closed-loop check that cleared the ten sizes
# ran at c = 1, 32 and 128, all powers of two. So: `throughput` (512-token steps, FP8 KV), prefix cache
# off, the planner's ten sizes, swept 5.5 → 6 req/s with 400 requests a level; the same server with vLLM's
# 51 sizes, same seed (same prompts and arrival gaps), swept 5.5 → 6.5, vLLM's bench at its knee; then
# the c = 1 agreement (llmodal now warms up too), API-server import times, c = 32 and 128 agreement.
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
    t0=$(date +%s)
    setsid bash -c "
      gp() { python3 '$root/benchmarks/gpu/goodput.py' \"\$@\" >> $G/pipeline.log 2>&1; rc=\$?; echo \"\$(date +%T) step \$1 \${3:-} exit \$rc\" >> $G/steps.txt; }
      late() { [ \$(date +%s) -gt \$(( $t0 + \$1 * ${GP_BUDGET_S:-1400} / 1400 )) ] && echo \"\$(date +%T) skipped: \$2\" >> $G/steps.txt; }
      gp serve $G t10 --profile throughput --extra '--no-enable-prefix-caching'
      gp goodput $G t10 --rates 5.5,5.75,6 --n 400 --seed 4 --no-vllm --slo '$SLO'
      gp serve $G t51 --profile throughput --extra '--no-enable-prefix-caching' --graph-sizes vllm
      gp goodput $G t51 --rates 5.5,5.75,6,6.5 --n 400 --seed 4 --slo '$SLO'
      late 1300 agree-c1 || gp agree $G --levels 1
      late 1360 importtime || gp importtime $G
      late 1200 agree-c32-128 || gp agree $G --levels 32,128
      gp stop
      echo PIPELINE-DONE >> $G/steps.txt" > /dev/null 2>&1 < /dev/null &
    echo started ;;
  poll)
    end=$(( $(date +%s) + ${2:-500} ))
    while [ "$(date +%s)" -lt "$end" ] && ! grep -q PIPELINE-DONE $G/steps.txt 2>/dev/null; do sleep 5; done
    cat $G/steps.txt 2>/dev/null; tail -5 $G/pipeline.log 2>/dev/null
    tar czf "$OUT/gp.tgz" -C /tmp gp ;;
esac
