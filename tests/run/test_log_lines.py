"""llmodal's own log lines in a container whose stdout it shares with vLLM's processes."""

import sys

from llmodal.run.supervisor import say


def test_each_line_is_written_whole_with_its_newline(monkeypatch):
    # The image runs Python unbuffered (PYTHONUNBUFFERED=1, modal/spec.py): there print's text and its newline are two
    # writes, and a line of vLLM's landed between them in the container's log ("… commitINFO: 127.0.0.1 …")
    writes = []

    class Stdout:
        def write(self, s):
            writes.append(s)
            return len(s)

        def flush(self):
            pass

    monkeypatch.setattr(sys, "stdout", Stdout())
    say("volume /root/.cache/huggingface commit")
    say("fast boot: warm_up: 1.2 s")
    assert writes == ["llmodal: volume /root/.cache/huggingface commit\n", "llmodal: fast boot: warm_up: 1.2 s\n"]
