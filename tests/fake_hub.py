"""A stand-in for the Hugging Face hub: the routes the planner reads, and model info, a repo's file tree and
its files for what ``download`` fetches (``HF_ENDPOINT`` points huggingface_hub and llmodal at it). A made-up
base model and its quantized children, some honest, one lying about its quantization, one of another
architecture, one whose config is gone."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

BASE = "acme/Big-Chat-70B"
LLAMA_70B = {"architectures": ["LlamaForCausalLM"], "hidden_size": 8192, "num_hidden_layers": 80,
             "num_attention_heads": 64, "num_key_value_heads": 8, "intermediate_size": 28672, "vocab_size": 128256,
             "max_position_embeddings": 131072}
AWQ = {"quant_method": "awq", "bits": 4, "group_size": 128}
FP8 = {"quant_method": "compressed-tensors", "config_groups": {"g0": {"weights": {"num_bits": 8, "type": "float"}}}}
W4A16 = {"quant_method": "compressed-tensors", "config_groups": {"g0": {"weights": {"num_bits": 4, "type": "int"}}}}
QWEN = dict(LLAMA_70B, architectures=["Qwen2ForCausalLM"])

# repo → (downloads, config or None for a missing config.json)
CHILDREN = {
    "hugging-quants/Big-Chat-70B-AWQ-INT4": (100, dict(LLAMA_70B, quantization_config=AWQ)),
    "someone/Big-Chat-70B-AWQ": (5000, dict(LLAMA_70B, quantization_config=AWQ)),
    "liar/Big-Chat-70B-AWQ": (9000, dict(LLAMA_70B)),  # says AWQ in its name, declares nothing
    "other/Big-Chat-70B-Qwen-AWQ": (8000, dict(QWEN, quantization_config=AWQ)),
    "neuralmagic/Big-Chat-70B-FP8": (50, dict(LLAMA_70B, quantization_config=FP8)),
    "someone/Big-Chat-70B-W4A16": (10, dict(LLAMA_70B, quantization_config=W4A16)),
    "gone/Big-Chat-70B-GPTQ": (7000, None),
}


class FakeHub:
    def __init__(self, children: dict | None = None, base: str = BASE, base_cfg: dict | None = None,
                 gated: tuple[str, ...] = (BASE,), files: dict[str, dict[str, bytes]] | None = None):
        self.children = CHILDREN if children is None else children
        # repo → {file name: bytes}: what hf_hub_download and a safetensors header read fetch (any revision)
        self.files = files or {}
        self.configs = {base: base_cfg or LLAMA_70B, **{r: c for r, (_, c) in self.children.items() if c},
                        **{r: json.loads(f["config.json"]) for r, f in self.files.items() if "config.json" in f}}
        self.base, self.requests, self.gated = base, [], set(gated)
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _file(self):
                """(repo, revision, bytes) for /{repo}/resolve/{revision}/{file} in ``files``; else answers 404."""
                u = urlparse(self.path)
                repo, _, rest = u.path[1:].partition("/resolve/")
                revision, _, name = rest.partition("/")
                if repo not in hub.files or name not in hub.files[repo] or revision == "no-such-branch":
                    code = "RevisionNotFound" if revision == "no-such-branch" else (
                        "EntryNotFound" if repo in hub.files else "RepoNotFound")
                    self._json(404, {"error": code}, {"X-Error-Code": code})
                    return None
                return repo, revision, hub.files[repo][name]

            def do_HEAD(self):
                hub.requests.append("HEAD " + self.path)
                found = self._file() if "/resolve/" in self.path else self._json(404, {})
                if found:
                    _, _, body = found
                    self.send_response(200)
                    self.send_header("X-Repo-Commit", "0" * 40)
                    self.send_header("ETag", f'"{hash(body) & 0xffffffff:08x}"')
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()

            def do_GET(self):
                u = urlparse(self.path)
                hub.requests.append(self.path)
                if "/resolve/" in u.path and u.path[1:].split("/resolve/")[0] in hub.files:
                    found = self._file()
                    if found:
                        body = found[2]
                        self.send_response(200)
                        self.send_header("X-Repo-Commit", "0" * 40)
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                    return
                if u.path == "/api/models":
                    f = parse_qs(u.query).get("filter", [""])[0]
                    rows = [{"id": r, "downloads": d} for r, (d, _) in hub.children.items()] \
                        if f == f"base_model:quantized:{hub.base}" else []
                    rows.sort(key=lambda x: -x["downloads"])
                    return self._json(200, rows)
                if u.path.startswith("/api/models/") and "/tree/" in u.path:  # list_repo_tree: the repo's files
                    repo = u.path[len("/api/models/"):].split("/tree/")[0]
                    if repo not in hub.files:
                        return self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    return self._json(200, [{"type": "file", "path": n, "size": len(b),
                                             "oid": f"{hash(b) & 0xffffffff:040x}"}
                                            for n, b in sorted(hub.files[repo].items())])
                if u.path.startswith("/api/models/"):  # model_info, and auth_check on a gated repo
                    repo = u.path[len("/api/models/"):].split("/revision/")[0].removesuffix("/auth-check")
                    if repo not in hub.configs:
                        return self._json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    if u.path.endswith("/auth-check") and repo in hub.gated:
                        return self._json(403, {"error": f"Access to model {repo} is restricted."},
                                          {"X-Error-Code": "GatedRepo", "X-Error-Message": "restricted"})
                    return self._json(200, {"id": repo, "sha": "0" * 40, "gated": repo in hub.gated and "manual"})
                if u.path.endswith("/resolve/main/config.json"):
                    repo = u.path[1:].split("/resolve/")[0]
                    if repo in hub.configs:
                        return self._json(200, hub.configs[repo])
                return self._json(404, {"error": "not found"})

            def _json(self, code, obj, headers=None):
                body = json.dumps(obj).encode()
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
