#!/bin/bash
# Whatever card comes: one detached pipeline that spends the GPU time it is given on a priority list
# for that card, each step saving its raw file under /tmp/ra as it finishes (a run cut short keeps
# what it measured). Here: pack_stage.sh makes the .stageNN folders. Device calls: stage the wheels
# (stage.sh, one folder a call, back to back), then
#   RA_GPU_LEFT_S=N bash benchmarks/gpu/run_any.sh start install, read the card, start the pipeline
#   bash benchmarks/gpu/run_any.sh poll S                 wait ≤ S s (or until done), pack /tmp/ra into $OUT
# RA_GPU_LEFT_S: the session's device seconds left when the call began (status's budget_left_s); the pipeline
# gets that less the install and RA_MARGIN_S (60: the last poll's return); RA_BUDGET_S instead: its seconds
# outright. A step starts only if its estimated cost ends inside that; inside a row a level starts only if
# twice its predicted time fits (held_out.py measure --deadline).
# RA_ROWS (optional): row names in the order to run, e.g. "bf16-8b awq-latency warm" (default: the card's list).
# Rows: each records `llmodal plan`'s prediction first (held_out.py predict), then starts the plan's server
# cold through llmodal's own prepare (goodput.py serve: launch → /health and the start's timeline from
# vLLM's log, serve.json), then measures its levels (held_out.py measure → rows.json, one bench file a level).
#   Defaults: what the validation's misses need next (docs/BENCHMARKS.md, "Goals (issue 35)"). H100:
#   fp8-throughput (the 70B FP8 build; at 8,192 tokens only the throughput profile's FP8 KV leaves room, 28,554
#   tokens = 22 streams), then fp8-agree: the same build on a server with the prefix cache off (vllm bench's test
#   prompt is its first measured one), c = 1 with llmodal bench and vllm bench in turn, two rounds (goodput.py
#   agree) — 2026-12-07d's llmodal bench took 150 ms to the first token (ordinary requests 141-144) where the H200s'
#   vllm bench rows took 120-131 ms, and on every H200 server the server itself answered llmodal bench's single
#   streams 10-32 ms later than vllm bench's (why: not found); then prefill-3b and prefill-8b (the small shapes'
#   single streams at 256 … 8,000 prompt tokens) on another host than 07c's and 07d's, whose fixed first-token
#   cost differed by more than the goal; warm restarts (start timelines with a compile cache). H200:
#   prefill-8b-fp8 (the FP8 8B on this card), awq-balanced with fresh prompts, bf16-3b-api2, warm. By RA_ROWS: awq-throughput, awq-latency, awq-again,
#   bf16-8b, bf16-3b, fp8-8b (the 8B in FP8), prefill-8b-fp8, bf16-3b-api2, lora-8b, goodput (the sweep at the
#   SLO: goodput_run.sh's server: FP8, throughput, prefix cache off). A 70B row serves the AWQ checkpoint as it
#   is (the planner never re-quantizes it).
#   lora-8b (both cards, right after bf16-8b, its baseline: same model, profile, mix and levels 1 and 64):
#   4 random rank-16 adapters on all seven linear modules (make_model.py --lora), given as a user gives them
#   (VLLM_LORA_MODULES, VLLM_MAX_LORAS, VLLM_MAX_LORA_RANK: the planner charges them, the flag table passes
#   them); one server, three targets per level: lora-8b (the base), lora-8b-one (adapter a0), lora-8b-mix
#   (a0…a3 in turn), c=1 for all three before c=64, so a short budget still gets the c=1 comparison.
# Every row: the server's `vllm:` lines of /metrics every 15 s under metrics/ (benchmarks/engine_vs_api.py reads them).
# Dry run with stubbed python3/nvidia-smi: benchmarks/gpu/dry_run.sh.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/benchmarks/gpu
export PYTHONPATH="/tmp/site:$root/src" PYTHONUNBUFFERED=1 VLLM_USE_FLASHINFER_SAMPLER=0
R=${RA_DIR:-/tmp/ra}; mkdir -p "$R"
SLO="ttft_p99<=2s,itl_p99<=100ms"
case "$1" in
  start)
    if [ "${RA_INSTALL:-1}" = 1 ]; then
      bash "$here/stage.sh" --install > "$R/install.log" 2>&1 || { cat "$R/install.log"; exit 1; }
    fi
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$R/gpu.txt"
    python3 -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__)" >> "$R/gpu.txt" 2>&1
    cat "$R/gpu.txt"
    name=$(head -1 "$R/gpu.txt")
    case "$name" in
      *H200*) card=H200; price=4.54; rows=${RA_ROWS:-"prefill-8b-fp8 awq-balanced bf16-3b-api2 warm"} ;;
      *H100*) card=H100; price=3.9492; rows=${RA_ROWS:-"fp8-throughput fp8-agree prefill-3b prefill-8b warm"} ;;
      *) echo "card not on the list: $name (H100 and H200 rows only)"; exit 2 ;;
    esac
    # the pipeline's own seconds: RA_BUDGET_S, else the device time left when this call began (RA_GPU_LEFT_S)
    # less what this script has spent (the install) and RA_MARGIN_S for the last poll's return
    budget=${RA_BUDGET_S:-$(( ${RA_GPU_LEFT_S:?pass RA_GPU_LEFT_S (device seconds left) or RA_BUDGET_S} - SECONDS - ${RA_MARGIN_S:-60} ))}
    echo "card $card, budget $budget s, rows: $rows" | tee "$R/plan.txt"
    t0=$(date +%s)
    # a second start on a warm machine appends to steps.txt: poll waits for a PIPELINE-DONE after this line
    echo "$(date +%T) START rows: $rows" >> "$R/steps.txt"
    setsid bash -c "
      export GP_GPU=$card GP_PRICE=$price
      # The plan's in-flight limit (LLMODAL_QUEUE_LIMIT, e.g. 104 for AWQ balanced on an H100) would answer
      # 429 to part of a 128-stream level: the rows measure the engine, so the limit is raised for them.
      export LLMODAL_QUEUE_LIMIT=${RA_QUEUE_LIMIT:-1024}
      end=\$(( $t0 + $budget ))
      # vLLM's own counters beside the client's timings: every 15 s, the engine-side histograms (step
      # tokens, inter-token latency, running/waiting), so step time can be told from delivery lag
      mkdir -p $R/metrics
      # and each busy process's CPU seconds so far (ps's cputimes), to place the API server's cost per token
      ( while :; do t=\$(date +%s); curl -s -m 5 http://127.0.0.1:\${GP_PORT:-8000}/metrics 2>/dev/null | grep '^vllm:' > $R/metrics/\$t.txt
          ps -eo pid,ppid,cputimes,etimes,comm --sort=-cputimes 2>/dev/null | head -12 > $R/metrics/\$t.ps; sleep 15; done ) & mpid=\$!
      log() { echo \"\$(date +%T) +\$(( \$(date +%s) - $t0 ))s \$*\" >> $R/steps.txt; }
      py() { python3 \"\$@\" >> $R/pipeline.log 2>&1; rc=\$?; log \"\$2 \$4 exit \$rc\"; return \$rc; }
      late() { [ \$(( \$(date +%s) + \$1 )) -gt \$end ] && { log \"skipped \$2: needs ~\$1 s, \$(( end - \$(date +%s) )) s left\"; return 0; }; return 1; }
      mk() { [ -f \$1/config.json ] || python3 $here/make_model.py \$1 \${@:2} >> $R/pipeline.log 2>&1; }
      # row TAG MODEL_DIR MAKE_FLAG PROFILE LEVELS SECONDS(cold start + first level) [vLLM flags]
      row() {
        late \$6 \$1 && return
        mk \$2 \$3
        py $here/held_out.py predict $R \$1 --model \$2 --profile \$4 --levels \$5
        GP_MODEL=\$2 py $here/goodput.py serve $R \$1 --profile \$4 --extra \"\${7:-}\" || return
        GP_MODEL=\$2 py $here/held_out.py measure $R \$1 --deadline \$end
        python3 $here/held_out.py table $R > $R/table.md 2>> $R/pipeline.log
      }
      # lora-8b: a subshell, so the LoRA settings it exports reach no later row
      lora_row() (
        late 260 \$1 && exit; mk /tmp/m8 --8b
        [ -f /tmp/m8-lora/a3/adapter_config.json ] ||
          python3 $here/make_model.py --lora /tmp/m8 /tmp/m8-lora 4 >> $R/pipeline.log 2>&1 || { log \"\$1 adapters failed\"; exit; }
        export VLLM_LORA_MODULES=a0=/tmp/m8-lora/a0,a1=/tmp/m8-lora/a1,a2=/tmp/m8-lora/a2,a3=/tmp/m8-lora/a3
        export VLLM_MAX_LORAS=4 VLLM_MAX_LORA_RANK=16
        for t in '' -one -mix; do py $here/held_out.py predict $R \$1\$t --model /tmp/m8 --profile balanced --levels 1,64; done
        GP_MODEL=/tmp/m8 py $here/goodput.py serve $R \$1 --profile balanced || exit
        for c in 1 64; do
          GP_MODEL=/tmp/m8 py $here/held_out.py measure $R \$1 --deadline \$end --levels \$c
          GP_MODEL=/tmp/m8 py $here/held_out.py measure $R \$1-one --deadline \$end --levels \$c --models a0
          GP_MODEL=/tmp/m8 py $here/held_out.py measure $R \$1-mix --deadline \$end --levels \$c --models a0,a1,a2,a3
        done
        python3 $here/held_out.py table $R > $R/table.md 2>> $R/pipeline.log
      )
      # prefill-8b / -3b: one server, single streams at prompt lengths 256 … 8,000 (16 tokens out; one step at
      # the balanced profile's 8,192-token budget): how a single prefill step's time grows with its tokens at
      # the small shapes, whose c = 1 TTFT the FLOPs term misses (30-40 ms measured at 1,024 tokens)
      prefill_row() {
        late \$4 \$1 && return; mk \$2 \$3
        for p in 1024 256 4096 2048 8000; do py $here/held_out.py predict $R \$1-p\$p --model \$2 --profile balanced --levels 1 --mix \$p:16; done
        GP_MODEL=\$2 py $here/goodput.py serve $R \$1 --profile balanced || return
        for p in 1024 256 4096 2048 8000; do GP_MODEL=\$2 py $here/held_out.py measure $R \$1-p\$p --deadline \$end; done
        python3 $here/held_out.py table $R > $R/table.md 2>> $R/pipeline.log
      }
      # awq-again: the repeated-prompts rule judged first seen. Throughput profile (KV 213k tokens on an H100):
      # c = 64 fresh (128 prompts), then c = 128 re-sending those 128 first (as the 2026-11 sessions' calls did,
      # whose rows miss by up to -41 % without the rule), its prediction the rule's, stored before; then c = 128
      # fresh, the same server's figure without cache hits.
      again_row() {
        late 360 \$1 && return; mk /tmp/m70 ''
        py $here/held_out.py predict $R \$1 --model /tmp/m70 --profile throughput --levels 64,128
        py $here/held_out.py predict $R \$1-again --model /tmp/m70 --profile throughput --levels 128 --again 128
        GP_MODEL=/tmp/m70 py $here/goodput.py serve $R \$1 --profile throughput || return
        GP_MODEL=/tmp/m70 py $here/held_out.py measure $R \$1 --deadline \$end --levels 64
        GP_MODEL=/tmp/m70 py $here/held_out.py measure $R \$1-again --deadline \$end --seed-of \$1-c64
        GP_MODEL=/tmp/m70 py $here/held_out.py measure $R \$1 --deadline \$end --levels 128
        python3 $here/held_out.py table $R > $R/table.md 2>> $R/pipeline.log
      }
      # a warm restart of a row served before (compile cache present): its start timeline only
      warm() { grep -q \"\\\"\$1\\\"\" $R/serve.json 2>/dev/null || return; late 130 \$1-warm && return
               GP_MODEL=\$2 py $here/goodput.py serve $R \$1-warm --profile \$3 --extra \"\${4:-}\"; }
      for r in $rows; do
        case \$r in
          awq-balanced)   row \$r /tmp/m70 '' balanced 1,64,128 300 ;;
          awq-throughput) row \$r /tmp/m70 '' throughput 1,64,128 300 ;;
          awq-latency)    row \$r /tmp/m70 '' latency 1,64,128 300 ;;
          fp8-throughput) row \$r /tmp/m70fp8 --fp8 throughput 1,8,22 300 ;;
          fp8-balanced)   row \$r /tmp/m70fp8 --fp8 balanced 1,64,128 300 ;;
          bf16-8b)        row \$r /tmp/m8 --8b balanced 1,64,128 200 ;;
          bf16-3b)        row \$r /tmp/m3 --3b balanced 1,64,128 200 ;;
          bf16-3b-api2)   row \$r /tmp/m3 --3b balanced 1,64,128 200 '--api-server-count 2' ;;
          fp8-8b)         row \$r /tmp/m8fp8 '--8b --fp8' balanced 1,64,128 200 ;;
          fp8-agree)      late 420 \$r && continue; mk /tmp/m70fp8 --fp8
                          GP_MODEL=/tmp/m70fp8 py $here/goodput.py serve $R \$r --profile throughput --extra '--no-enable-prefix-caching' &&
                          GP_MODEL=/tmp/m70fp8 py $here/goodput.py agree $R --levels 1 --rounds 2 ;;
          lora-8b)        lora_row \$r ;;
          prefill-8b)     prefill_row \$r /tmp/m8 --8b 200 ;;
          prefill-3b)     prefill_row \$r /tmp/m3 --3b 180 ;;
          prefill-8b-fp8) prefill_row \$r /tmp/m8fp8 '--8b --fp8' 200 ;;
          awq-again)      again_row \$r ;;
          goodput)        late 600 goodput && continue; mk /tmp/m70fp8 --fp8
                          py $here/held_out.py predict $R gp-t10 --model /tmp/m70fp8 --profile throughput --levels 128
                          GP_MODEL=/tmp/m70fp8 py $here/goodput.py serve $R gp-t10 --profile throughput --extra '--no-enable-prefix-caching' &&
                          GP_MODEL=/tmp/m70fp8 py $here/goodput.py goodput $R gp-t10 --rates ${GP_RATES:-5.5,5.6,5.7} --n 400 --slo '$SLO' ;;
          warm)           warm awq-throughput /tmp/m70 throughput; warm awq-balanced /tmp/m70 balanced
                          warm awq-latency /tmp/m70 latency; warm bf16-8b /tmp/m8 balanced
                          warm gp-t10 /tmp/m70fp8 throughput '--no-enable-prefix-caching'; warm fp8-throughput /tmp/m70fp8 throughput ;;
          *)              log \"unknown row \$r\" ;;
        esac
      done
      python3 $here/goodput.py stop
      python3 $here/held_out.py table $R > $R/table.md 2>> $R/pipeline.log
      kill \$mpid; log PIPELINE-DONE" > /dev/null 2>&1 < /dev/null &
    echo "started at $(date -u +%T)" ;;
  poll)
    stop_at=$(( $(date +%s) + ${2:-500} ))
    finished() { awk '/ START rows:/ { d = 0 } /PIPELINE-DONE/ { d = 1 } END { exit !d }' "$R/steps.txt" 2>/dev/null; }
    while [ "$(date +%s)" -lt "$stop_at" ] && ! finished; do sleep 5; done
    cat "$R/steps.txt" 2>/dev/null; tail -4 "$R/pipeline.log" 2>/dev/null; cat "$R/table.md" 2>/dev/null
    tar czf "${OUT:-/tmp}/ra.tgz" -C "$(dirname "$R")" "$(basename "$R")" ;;
  *) echo "usage: run_any.sh start | poll SECONDS"; exit 2 ;;
esac
