"""Every route vLLM registers for a command line, from vLLM's own app builder (no engine, no llmodal):
``python tests/vllm_routes.py <vLLM args>`` prints JSON [[method, path], …]. The route sweep reads
the list here rather than from the guarded server, so the guard under test cannot shape it."""

import json
import sys

from vllm.entrypoints.launchers.app import build_app
from vllm.entrypoints.launchers.cli_args import make_arg_parser
from vllm.utils.argparse_utils import FlexibleArgumentParser

args = make_arg_parser(FlexibleArgumentParser()).parse_args(sys.argv[1:])
app = build_app(args, ("generate",))
routes = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops}
routes |= {(m, r.path) for r in app.routes for m in (getattr(r, "methods", None) or ["GET"])}
print(json.dumps(sorted(routes)))
