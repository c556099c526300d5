"""A closed-loop load against vLLM's scheduler, one engine step at a time.

``clients`` users each send a request (``n_in`` prompt tokens, ``n_out`` output tokens) and send the next
one the moment the last finishes, until ``requests`` have been sent — what `llmodal bench` and
`vllm bench serve` do at a concurrency level. Each step, as vLLM v1 schedules it:

1. every running sequence that has its prompt done decodes one token (if the KV cache cannot hold that
   token, the newest sequence is preempted: its blocks are freed and it waits to be prefilled again, and no
   waiting request starts in that step);
2. the rest of the step's token budget (``max_num_batched_tokens``) goes to prompt chunks, oldest first:
   running sequences mid-prompt, then waiting requests while fewer than ``max_num_seqs`` run and the KV
   cache has room for the chunk.

A step's duration comes from ``step_time(tokens, kv_read, attn)``: tokens the GEMMs process, KV tokens the
decode attention reads, and prompt-attention token pairs; it must be linear in ``kv_read`` (``fast`` adds up
runs of plain decode steps in closed form). The first token comes with the step that ends a
prompt. The result is what a benchmark reports: output tokens over the run's wall time, and the mean TTFT.
Ramp, drain, queueing behind ``max_num_seqs``, chunked prefill and preemption are all in it.

``first_s``: what a request's first token costs beyond the engine's steps, whatever the prompt (the API
server's handling of the request before the engine sees it, the engine's fixed cost of a prefill step, the first
token's way back): the request reaches the engine that much after it is sent, and its TTFT includes it.

``token_s``: the delivery path's time per output token, one after another (the engine core hands each step's
outputs to vLLM's one API-server process, which turns them into streamed text on one event loop). A step's
tokens reach the client once that path has worked through them and every token of the steps before; a request
is done for its client (who then sends the next) when its last token is through. Zero: delivery keeps up with
any engine (every 70B run); on the H100 host the 8B and 3B engines outran it (docs/BENCHMARKS.md, "The API
server's ceiling").
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Load:
    n_in: int
    n_out: int
    clients: int
    requests: int
    cached_in: int = 0  # prompt tokens of a repeated prompt that vLLM's prefix cache already holds
    cached_requests: int = 0  # how many of the first requests repeat an earlier run's prompt


@dataclass(frozen=True)
class Result:
    out_tok_s: float
    ttft_s: float  # mean over the requests
    steps: int
    preemptions: int
    max_batch: int  # most sequences decoding in one step


def simulate(load: Load, step_time: Callable[[int, int, int], float], *, max_num_seqs: int,
             max_num_batched_tokens: int, kv_tokens: int, fast: bool = True, token_s: float = 0.0,
             first_s: float = 0.0) -> Result:
    n_in, n_out = load.n_in, load.n_out

    def request(i: int, now: float) -> list:
        hit = load.cached_in if i < load.cached_requests else 0
        # [prompt tokens left, tokens in the KV cache, arrival at the engine, step of the first token]; decoding
        # adds [4]: the output tokens owed after that first one. A request sent at `now` reaches the engine
        # first_s later (the API server's handling before it; its TTFT counts from `now`).
        return [n_in - hit, hit, now + first_s, 0]

    waiting: deque[list] = deque(request(i, 0.0) for i in range(min(load.clients, load.requests)))
    sent, done, clock, step, preempted, max_batch = len(waiting), 0, 0.0, 0, 0, 0
    prefilling: list[list] = []  # admitted, prompt not done
    # Decoding sequences in the order they started, so in the order they finish; a sequence holds
    # r[1] + (step - r[3]) KV tokens, so the KV the batch reads is kept as one running sum.
    decoding: deque[list] = deque()
    dec_base = 0  # Σ (r[1] - r[3]) over decoding: their KV tokens are dec_base + len(decoding) × step
    ttft_sum = 0.0
    api = 0.0  # when the API server has streamed every token of the steps so far
    while done < load.requests:
        if not decoding and not prefilling and waiting[0][2] > clock:
            clock = waiting[0][2]  # the engine idles until the next request reaches it
        n_dec = len(decoding)
        used = dec_base + n_dec * step + sum(r[1] for r in prefilling)
        if fast and decoding and not prefilling:
            # Nothing but decodes until a sequence finishes: no prompt can start (none waits, or no slot, budget
            # or KV room for one) and the KV cache has room for every step. Those steps differ only in the KV
            # they read, n_dec more each, and a step's time is linear in it: add them up in one go.
            room = max_num_batched_tokens - n_dec
            if (not waiting or waiting[0][2] > clock or n_dec >= max_num_seqs or room <= 0
                    or used + n_dec + min(waiting[0][0], room) > kv_tokens):
                k = min(min(r[3] + r[4] for r in decoding) - step, (kv_tokens - used) // n_dec) - 1
                kv0 = dec_base + n_dec * step
                t0 = step_time(n_dec, kv0, 0)
                grow = step_time(n_dec, kv0 + n_dec, 0) - t0
                if waiting and waiting[0][2] > clock and k > 0:
                    # stop before a step that would start after the next request reaches the engine (each of
                    # the k steps takes at most t0 + grow × k): it is admitted at that step, as step by step
                    k = min(k, int((waiting[0][2] - clock) / (t0 + grow * k)))
                if k > 0:
                    first = clock + t0
                    clock += k * t0 + grow * k * (k - 1) / 2
                    # the API server works through n_dec tokens a step, starting each step's no sooner than it
                    # ends; step ends are convex in the step number, so the latest start is the first or last
                    api = max(api + k * n_dec * token_s, first + k * n_dec * token_s, clock + n_dec * token_s)
                    step += k
                    max_batch = max(max_batch, n_dec)
                    continue
        while decoding and used + len(decoding) > kv_tokens:  # no block for the next token: preempt the newest
            victim = decoding.pop()
            held = victim[1] + step - victim[3]
            dec_base -= victim[1] - victim[3]
            used -= held
            victim[0], victim[1] = held, 0  # recomputed: prompt and the tokens generated so far
            victim[4] -= step - victim[3] + 1  # output tokens still owed once the recompute samples one
            waiting.appendleft(victim)
            preempted += 1
        shed = len(decoding) < n_dec  # vLLM starts no waiting request in a step that had to preempt
        n_dec = len(decoding)
        kv_read = dec_base + n_dec * step
        budget = max_num_batched_tokens - n_dec
        used += n_dec
        chunks: list[tuple[list, int]] = []
        for r in prefilling:  # prompts already under way, oldest first
            take = min(r[0], budget, max(0, kv_tokens - used))
            if take > 0:
                chunks.append((r, take))
                budget -= take
                used += take
        while (waiting and waiting[0][2] <= clock and budget > 0 and n_dec + len(prefilling) < max_num_seqs
               and not shed):
            r = waiting[0]
            take = min(r[0], budget)
            if used + take > kv_tokens:
                break
            waiting.popleft()
            prefilling.append(r)
            chunks.append((r, take))
            budget -= take
            used += take
        tokens = n_dec + sum(t for _, t in chunks)
        if tokens == 0:
            raise RuntimeError("the KV cache cannot hold one request of this mix")
        clock += step_time(tokens, kv_read, sum(t * (r[1] + t // 2) for r, t in chunks))
        step += 1
        max_batch = max(max_batch, n_dec)
        api = max(api, clock) + token_s * (n_dec + sum(1 for r, t in chunks if r[0] == t))
        # Step `step` is done: every decoder has one more token; finished ones leave, oldest first.
        while decoding and step - decoding[0][3] >= decoding[0][4]:
            r = decoding.popleft()
            dec_base -= r[1] - r[3]
            done += 1
            if sent < load.requests:
                waiting.append(request(sent, api))
                sent += 1
        for r, take in chunks:
            r[0] -= take
            r[1] += take
            if r[0] == 0:  # the prompt's last chunk samples the first token
                prefilling.remove(r)
                if len(r) == 4:
                    ttft_sum += api - r[2] + first_s
                    r.append(n_out - 1)  # output tokens still owed
                r[3] = step
                if r[4] <= 0:
                    done += 1
                    if sent < load.requests:
                        waiting.append(request(sent, api))
                        sent += 1
                    continue
                decoding.append(r)
                dec_base += r[1] - r[3]
    return Result(out_tok_s=load.requests * n_out / max(clock, api), ttft_s=ttft_sum / load.requests, steps=step,
                  preemptions=preempted, max_batch=max_batch)
