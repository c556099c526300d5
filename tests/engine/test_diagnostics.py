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
