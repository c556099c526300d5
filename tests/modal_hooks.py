"""Run the packaged app's own lifecycle hooks the way Modal calls them, in a process of their own.

    python tests/modal_hooks.py server       enter() → serve → SIGINT/SIGTERM → exit()
    python tests/modal_hooks.py fast-boot    enter(snap=True) → [snapshot] → enter(snap=False) → serve →
                                             SIGINT/SIGTERM → exit()

It imports ``llmodal.modal.app`` with the container's environment (LLMODAL_SETTINGS and the secret)
and calls the ``Server`` class's hooks; two things are swapped, as in the rest of the rehearsal: the
volumes (objects that log their reload/commit calls, here ``llmodal-harness: volume …``) and the
GPU (LLMODAL_CPU_REHEARSAL=1 lets the CPU engine stand in). Between snapshot and restore it waits for
the file named by LLMODAL_HARNESS_RESTORE; its ``NAME=value`` lines are the secret as Modal would hand it
to the restored container. LLMODAL_HARNESS_FAIL=warm_up or =restore makes that step fail (a warm-up
that errors at snapshot time, a wake gone wrong after restore).
"""

import os
import signal
import sys
import threading
import time
from pathlib import Path


def say(msg: str) -> None:
    # one write with its newline (the container runs unbuffered: print's newline is a second write, and the
    # server's log lines land between)
    sys.stdout.write(f"llmodal-harness: {msg}\n")
    sys.stdout.flush()


class LoggedVolume:
    def __init__(self, path: str) -> None:
        self.path = path

    def reload(self) -> None:
        say(f"volume {self.path} reload")

    def commit(self) -> None:
        say(f"volume {self.path} commit")


def hook(cls, name):
    return vars(cls)[name]._get_raw_f()


def main() -> int:
    import llmodal.modal.app as packaged

    kind = sys.argv[1]
    assert packaged.settings.snapshot == (kind == "fast-boot"), (kind, packaged.settings.fast_boot)
    for path in list(packaged.volumes):
        packaged.volumes[path] = LoggedVolume(path)
    failing = os.environ.get("LLMODAL_HARNESS_FAIL")
    if failing:
        from llmodal.modal import fast_boot

        def broken(self, *args, **kw):
            raise RuntimeError(f"{failing} answered HTTP 500 (simulated)")
        setattr(fast_boot.FastBoot, failing, broken)
    user_cls = packaged.Server._get_user_cls()
    obj = user_cls()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):  # Modal's runtime catches these, then runs @modal.exit
        signal.signal(sig, lambda *_: stop.set())
    hook(user_cls, "start")(obj)
    if kind == "fast-boot":
        say("snapshot taken")
        flag = Path(os.environ["LLMODAL_HARNESS_RESTORE"])
        while not flag.exists() and not stop.is_set():
            time.sleep(0.1)
        for line in flag.read_text().splitlines() if flag.exists() else []:
            name, _, value = line.partition("=")
            os.environ[name] = value
        hook(user_cls, "wake")(obj)
        say("restored")
    say("serving")
    stop.wait()
    say("exit hook")
    t0 = time.monotonic()
    hook(user_cls, "stop")(obj)
    say(f"stopped after {time.monotonic() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
