#!/bin/bash
# The H200 goodput session, as one background pipeline the device calls poll (each call ≤ 10 min;
# the pipeline runs on, detached, while the machine stays warm between calls).
#   bash benchmarks/gpu/goodput_run.sh start   install the staged wheels, start the pipeline
#   bash benchmarks/gpu/goodput_run.sh poll S  wait up to S seconds, then pack /tmp/gp into $OUT
# Steps (benchmarks/gpu/goodput.py): cold start (balanced) → bench agreement → goodput sweep →
# warm restart (same flags: the warm-start timeline) → a profile (default latency: 2,048-token prefill
# chunks) → its goodput sweep → stop. Flags a profile owns go through LLMODAL_PROFILE, never
# VLLM_EXTRA_ARGS (llmodal refuses them there: the 2026-12-02 run lost its tuning step to that).
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
export PYTHONPATH="/tmp/site:$root/src" PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0
G=/tmp/gp; mkdir -p $G
gp() { python3 "$root/benchmarks/gpu/goodput.py" "$@" >> $G/pipeline.log 2>&1; echo "$(date +%T) step $1 ${3:-} exit $?" >> $G/steps.txt; }
SLO="ttft_p99<=2s,itl_p99<=100ms"
case "$1" in
  start)
    bash "$root/benchmarks/gpu/stage.sh" --install > $G/install.log 2>&1 || { cat $G/install.log; exit 1; }
    nvidia-smi --query-gpu=name,memory.total --format=csv > $G/gpu.txt
    python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)" >> $G/gpu.txt 2>&1
    cat $G/gpu.txt
    setsid bash -c "
      $(declare -f gp); G=$G; root=$root
      gp serve $G cold
      gp agree $G --levels 1,32,128 --rounds 2
      gp goodput $G balanced --rates ${RATES:-3,4,5,5.5,6} --n 160 --slo '$SLO'
      gp serve $G warm
      gp serve $G tuned --profile ${TUNE_PROFILE:-latency}
      gp goodput $G tuned --rates ${RATES:-3,4,5,5.5,6} --n 160 --slo '$SLO'
      gp stop
      echo PIPELINE-DONE >> $G/steps.txt" > /dev/null 2>&1 < /dev/null &
    echo started ;;
  poll)
    end=$(( $(date +%s) + ${2:-500} ))
    while [ "$(date +%s)" -lt "$end" ] && ! grep -q PIPELINE-DONE $G/steps.txt 2>/dev/null; do sleep 5; done
    cat $G/steps.txt 2>/dev/null; tail -5 $G/pipeline.log 2>/dev/null
    tar czf "$OUT/gp.tgz" -C /tmp gp ;;
esac
