"""``llmodal bench --cold``: idle first, then one timed request."""

import json
import time

import pytest

from conftest import TEST_KEY, free_port
from test_bench import _bench


@pytest.mark.server
def test_cold_waits_the_idle_time_then_times_the_first_request(server, tmp_path):
    out = tmp_path / "cold.json"
    t0 = time.monotonic()
    r = _bench("--base-url", server.base_url, "--api-key", TEST_KEY, "--model", server.model, "--cold", "--idle", "3",
               "--out", str(out))
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    cold = json.loads(out.read_text())["cold"]
    assert cold["ok"] and cold["idle_s"] == 3 and 0 < cold["ttft_s"] <= cold["e2e_s"] and cold["output_tokens"] > 0
    assert took >= 3 and "first token after" in r.stdout


def test_cold_against_nothing_fails_with_the_reason(tmp_path):
    out = tmp_path / "cold.json"
    r = _bench("--base-url", f"http://127.0.0.1:{free_port()}/v1", "--api-key", "k", "--model", "m", "--cold",
               "--idle", "0", "--out", str(out))
    assert r.returncode == 1 and "connect" in r.stdout
    assert json.loads(out.read_text())["cold"]["error"] == "connect"
