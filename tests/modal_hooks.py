"""Run the packaged app's own lifecycle hooks the way Modal calls them, in a process of their own.

    python tests/modal_hooks.py fast-boot

imports ``llmodal.modal.app`` (with the container's environment: LLMODAL_SETTINGS and the secret),
then, as Modal does for the fast-boot class: ``@modal.enter(snap=True)`` (start, warm up, sleep),
[snapshot], ``@modal.enter(snap=False)`` (restore), serve until SIGINT/SIGTERM, ``@modal.exit()``.
Between snapshot and restore it waits for the file named by LLMODAL_HARNESS_RESTORE; a line
``VLLM_SERVER_API_KEY=…`` in it is the secret as Modal would hand it to the restored container.
"""

import os
import signal
import sys
import threading
import time
from pathlib import Path


def say(msg: str) -> None:
    print(f"llmodal-harness: {msg}", flush=True)


def hook(cls, name):
    return vars(cls)[name]._get_raw_f()


def main() -> int:
    import llmodal.modal.app as packaged

    assert sys.argv[1:] == ["fast-boot"] and packaged.settings.snapshot
    user_cls = packaged.Server._get_user_cls()
    obj = user_cls()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    hook(user_cls, "start")(obj)
    say("snapshot taken")
    flag = Path(os.environ["LLMODAL_HARNESS_RESTORE"])
    while not flag.exists() and not stop.is_set():
        time.sleep(0.1)
    for line in flag.read_text().splitlines() if flag.exists() else []:
        name, _, value = line.partition("=")
        os.environ[name] = value
    hook(user_cls, "wake")(obj)
    say("restored")
    stop.wait()
    say("exit hook")
    hook(user_cls, "stop")(obj)
    say("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
