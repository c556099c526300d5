import pytest

from llmodal.engine.diagnostics import diagnose

CASES = [
    ("ERROR: [Errno 98] error while attempting to bind on address ('127.0.0.1', 8000): address already in use",
     "port_in_use"),
    ("huggingface_hub.errors.GatedRepoError: 403 Client Error. Access to model meta-llama/X is restricted.",
     "gated_model"),
    ("requests.exceptions.HTTPError: 401 Client Error: Unauthorized for url: https://huggingface.co/api/x",
     "hf_token"),
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "out_of_memory"),
    ("ValueError: To serve at least one request with the models's max seq len (8192), (2.50 GiB KV cache is "
     "needed, which is larger than the available KV cache memory (1.00 GiB). ... is larger than the maximum number "
     "of tokens that can be stored in KV cache", "out_of_memory"),
    # vLLM 0.32's CPU engine (v1/worker/cpu_worker.py) refusing the KV size llmodal passed.
    ("ValueError: Available memory on node 0 (9.80/11.00 GiB) on kv cache allocation is less than requested "
     "memory for kv (12.00 GiB). Decrease --kv-cache-memory-bytes, VLLM_CPU_KVCACHE_SPACE, or reduce CPU memory "
     "used by other processes.", "host_memory"),
    ("ValueError: Unknown quantization method: int3. Must be one of ['awq', ...]", "unsupported_quantization"),
    ("Value error, Invalid repository ID or local directory specified: '/tmp/x'.", "bad_model"),
    ("RuntimeError: Engine core initialization failed. See root cause above.", "engine_died"),
    ("vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above)",
     "engine_died"),
]


def test_the_root_cause_wins_over_the_wrapper():
    # Seen on the H100 with vLLM 0.32.0: the wrapper line came last, the cause above it.
    log = ("(EngineCore pid=1) ERROR [core.py:1] ModuleNotFoundError: No module named 'flashinfer'\n"
           "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}\n")
    d = diagnose(log)
    assert d.kind == "engine_error" and "flashinfer" in d.message


@pytest.mark.parametrize("line,kind", CASES)
def test_each_class(line, kind):
    d = diagnose("INFO starting\n" + line + "\n")
    assert d.kind == kind and "\n" not in d.message


def test_nothing_useful():
    assert diagnose("").kind == "unknown"


def test_a_warning_that_quotes_an_error_is_not_the_cause():
    log = ("(APIServer pid=1) WARNING 11-24 15:32:27 [system_utils.py:255] Found ulimit of 20000 … fd limit errors like "
           "`OSError: [Errno 24] Too many open files`. Consider increasing with ulimit -n\n"
           "(APIServer pid=1) ERROR 11-24 16:20:43 [async_llm.py:906] vllm.v1.engine.exceptions.EngineDeadError: "
           "EngineCore encountered an issue. See stack trace (above) for the root cause.\n"
           "INFO:     Finished server process [1]\n")
    d = diagnose(log)
    assert d.kind == "engine_died" and "Errno 24" not in d.message, d


def test_host_memory_advice_names_the_cpu_setting_not_a_4_bit_build():
    d = diagnose("ValueError: Available memory on node 1 (2.00/8.00 GiB) on kv cache allocation is less than "
                 "requested memory for kv (4.00 GiB).\n")
    assert "VLLM_GPU_MEMORY_UTILIZATION" in d.message and "4-bit" not in d.message
