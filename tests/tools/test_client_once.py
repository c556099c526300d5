"""``llmodal.client()`` / ``async_client()`` send a generation again only when it provably never reached vLLM:
tested through the public functions and the real openai SDK against an HTTP server that counts what it gets."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

import llmodal

OK = {"id": "c1", "object": "chat.completion", "created": 0, "model": "m",
      "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
      "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


class Counting:
    """Answers the first ``times`` POSTs with ``first`` (a status, or 'drop': read the body, close the socket),
    then 200. ``posts`` counts every POST that arrived."""

    def __init__(self, first, times: int = 1) -> None:
        self.posts = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):  # /health: up
                self._send(200, b"{}")

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.posts += 1
                if outer.posts <= times:
                    if first == "drop":
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    extra = {"Retry-After": "0"} if first == 429 else {}
                    self._send(first, json.dumps({"error": {"message": f"status {first}"}}).encode(), extra)
                    return
                self._send(200, json.dumps(OK).encode())

            def _send(self, status, body, extra=None):
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.v1 = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"


# (first answer, how many times, arrives how many times, succeeds): each generation is *run* once at most.
CASES = [
    (500, 1, 1, False),     # vLLM failed while running it: an error, never resent (the SDK's default resends twice)
    (504, 1, 1, False),     # a proxy gave up waiting after sending: it may be running
    ("drop", 1, 1, False),  # the connection broke after the body was read: it may be running
    (502, 2, 3, True),      # the gateway (or Modal) could not connect: nothing was sent, so send again
    (503, 2, 3, True),      # Modal's proxy before a container is live
    (429, 2, 3, True),      # a queue limit in front of vLLM, after its Retry-After
]


@pytest.mark.parametrize("first,times,arrivals,ok", CASES)
def test_sync_client_sends_again_only_what_never_reached_vllm(first, times, arrivals, ok):
    srv = Counting(first, times)
    try:
        c = llmodal.client(base_url=srv.v1, api_key="k", env_file=None, cold_start_timeout=30, timeout=10)
        call = lambda: c.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])  # noqa: E731
        if ok:
            assert call().choices[0].message.content == "hi"
        else:
            with pytest.raises(openai.APIError):
                call()
        assert srv.posts == arrivals, srv.posts
    finally:
        srv.httpd.shutdown()


@pytest.mark.parametrize("first,times,arrivals,ok", CASES)
def test_async_client_sends_again_only_what_never_reached_vllm(first, times, arrivals, ok):
    srv = Counting(first, times)

    async def go():
        c = llmodal.async_client(base_url=srv.v1, api_key="k", env_file=None, cold_start_timeout=30, timeout=10)
        return await c.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])

    try:
        if ok:
            assert asyncio.run(go()).choices[0].message.content == "hi"
        else:
            with pytest.raises(openai.APIError):
                asyncio.run(go())
        assert srv.posts == arrivals, srv.posts
    finally:
        srv.httpd.shutdown()


def test_a_gateway_without_its_proxy_token_fails_at_once():
    """The gateway's 'no proxy token' is a configuration error (500), not 'not up yet': no 600 s of retries."""
    import time

    from llmodal.modal.gateway import NO_TOKEN

    srv = Counting(NO_TOKEN[0], times=99)
    try:
        c = llmodal.client(base_url=srv.v1, api_key="k", env_file=None, cold_start_timeout=600, timeout=10)
        t0 = time.monotonic()
        with pytest.raises(openai.InternalServerError):
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        assert time.monotonic() - t0 < 5 and srv.posts == 1
    finally:
        srv.httpd.shutdown()
