"""A fake Modal control plane: just enough of Modal's gRPC API for the real `modal deploy`.

Built on the SDK's own test helper (``modal._utils.grpc_testing.patch_mock_servicer``): every
method we do not implement answers UNIMPLEMENTED, so a new call the SDK starts making shows up
as a clear failure. Every request is recorded (``calls``) so tests assert on what was *sent*.
It answers with plausible ids and the web URL Modal would give, so `llmodal deploy` prints the
URL and the client `.env` lines as it would for real.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
import threading
from collections import defaultdict

from google.protobuf.empty_pb2 import Empty
from grpclib.server import Server
from modal._utils.grpc_testing import patch_mock_servicer
from modal_proto import api_grpc, api_pb2

WORKSPACE = "acme"


@patch_mock_servicer
class FakeModal(api_grpc.ModalClientBase):
    def __init__(self) -> None:
        self.calls: dict[str, list] = defaultdict(list)
        self.app_name = ""
        self.environment = ""  # the deploy's environment, from its requests
        self._n = 0

    def _id(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}-{self._n:06d}"

    async def _rec(self, stream, name):
        req = await stream.recv_message()
        self.calls[name].append(req)
        return req

    async def ClientHello(self, stream):
        await self._rec(stream, "ClientHello")
        await stream.send_message(api_pb2.ClientHelloResponse())

    async def AppGetByDeploymentName(self, stream):
        await self._rec(stream, "AppGetByDeploymentName")
        await stream.send_message(api_pb2.AppGetByDeploymentNameResponse())  # not deployed yet

    async def AppCreate(self, stream):
        req = await self._rec(stream, "AppCreate")
        self.app_name = req.description
        self.environment = getattr(req, "environment_name", "") or self.environment
        await stream.send_message(api_pb2.AppCreateResponse(app_id=self._id("ap"),
                                                            app_page_url=f"https://modal.com/apps/{WORKSPACE}"))

    async def EnvironmentGetOrCreate(self, stream):
        await self._rec(stream, "EnvironmentGetOrCreate")
        await stream.send_message(api_pb2.EnvironmentGetOrCreateResponse(
            environment_id=self._id("en"), metadata=api_pb2.EnvironmentMetadata(
                name="main", settings=api_pb2.EnvironmentSettings(image_builder_version="2025.06",
                                                                  webhook_suffix="modal.run"))))

    async def AppGetOrCreate(self, stream):
        req = await self._rec(stream, "AppGetOrCreate")
        self.app_name = req.app_name
        self.environment = getattr(req, "environment_name", "") or self.environment
        await stream.send_message(api_pb2.AppGetOrCreateResponse(app_id=self._id("ap")))

    async def AppGetLayout(self, stream):
        await self._rec(stream, "AppGetLayout")
        await stream.send_message(api_pb2.AppGetLayoutResponse())

    async def AppHeartbeat(self, stream):
        await self._rec(stream, "AppHeartbeat")
        await stream.send_message(Empty())

    async def AppPublish(self, stream):
        await self._rec(stream, "AppPublish")
        await stream.send_message(api_pb2.AppPublishResponse(
            url=f"https://modal.com/apps/{WORKSPACE}/main/deployed/{self.app_name}"))

    async def SecretGetOrCreate(self, stream):
        await self._rec(stream, "SecretGetOrCreate")
        await stream.send_message(api_pb2.SecretGetOrCreateResponse(secret_id=self._id("st")))

    async def VolumeGetOrCreate(self, stream):
        await self._rec(stream, "VolumeGetOrCreate")
        await stream.send_message(api_pb2.VolumeGetOrCreateResponse(volume_id=self._id("vo"),
                                                                    version=api_pb2.VOLUME_FS_VERSION_V2))

    async def ImageGetOrCreate(self, stream):
        await self._rec(stream, "ImageGetOrCreate")
        await stream.send_message(api_pb2.ImageGetOrCreateResponse(
            image_id=self._id("im"), result=api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS)))

    async def MountGetOrCreate(self, stream):
        await self._rec(stream, "MountGetOrCreate")
        await stream.send_message(api_pb2.MountGetOrCreateResponse(mount_id=self._id("mo"),
                                                                   handle_metadata=api_pb2.MountHandleMetadata()))

    async def MountBatchedCheckExistence(self, stream):
        req = await self._rec(stream, "MountBatchedCheckExistence")
        self.uploaded_hashes = getattr(self, "uploaded_hashes", set())
        await stream.send_message(api_pb2.MountBatchedCheckExistenceResponse(
            missing_sha256_hex_hashes=[h for h in req.sha256_hex_hashes]))

    async def MountPutFile(self, stream):
        await self._rec(stream, "MountPutFile")
        await stream.send_message(api_pb2.MountPutFileResponse(exists=True))

    async def FunctionPrecreate(self, stream):
        req = await self._rec(stream, "FunctionPrecreate")
        await stream.send_message(api_pb2.FunctionPrecreateResponse(
            function_id=self._id("fu"), handle_metadata=self._meta(req.function_name, req.webhook_config,
                                                                   req.method_definitions)))

    async def FunctionCreate(self, stream):
        req = await self._rec(stream, "FunctionCreate")
        data = api_pb2.FunctionData()
        if req.HasField("function_data"):
            data.CopyFrom(req.function_data)
        if not data.ranked_functions and req.HasField("function"):
            data.ranked_functions.add(rank=0, function=req.function)
        fn = data.ranked_functions[0].function
        meta = self._meta(fn.function_name, fn.webhook_config, fn.method_definitions)
        shown = api_pb2.Function()  # what the CLI prints URLs from: a class's web methods carry theirs
        if req.HasField("function"):
            shown.CopyFrom(req.function)
            for m, d in shown.method_definitions.items():
                d.web_url = meta.method_handle_metadata[m].web_url
        await stream.send_message(api_pb2.FunctionCreateResponse(
            function_id=req.existing_function_id or self._id("fu"), function_data=data, function=shown,
            handle_metadata=meta))

    def _meta(self, name: str, webhook, methods=None) -> api_pb2.FunctionHandleMetadata:
        if methods:  # a class: each web method gets its own URL, like a function would
            meta = api_pb2.FunctionHandleMetadata(function_name=name)
            for m, d in methods.items():
                meta.method_handle_metadata[m].CopyFrom(self._meta(f"{name[:-2]}.{m}", d.webhook_config))
            return meta
        url = ""
        if webhook and webhook.type:
            label = webhook.requested_suffix or f"{self.app_name}-{name.replace('_', '-').replace('.', '-')}"
            url = web_url(label, self.environment)
        return api_pb2.FunctionHandleMetadata(function_name=name, web_url=url)

    async def ClassCreate(self, stream):
        await self._rec(stream, "ClassCreate")
        await stream.send_message(api_pb2.ClassCreateResponse(class_id=self._id("cs"),
                                                              handle_metadata=api_pb2.ClassHandleMetadata()))

    async def AppSetObjects(self, stream):
        await self._rec(stream, "AppSetObjects")
        await stream.send_message(Empty())

    async def AppClientDisconnect(self, stream):
        await self._rec(stream, "AppClientDisconnect")
        await stream.send_message(Empty())


def web_url(label: str, environment: str | None = None) -> str:
    """Modal's rule for a deployed web endpoint (modal.com/docs/guide/webhook-urls, read 2026-12-02):
    ``https://<source>--<label>.modal.run``; the source is the workspace, with ``-<environment>`` for an
    environment other than the default; a subdomain past 63 characters (one DNS label) is shortened.
    How Modal shortens is not documented there: here the first 56 characters, a dash, 6 of a hash."""
    source = WORKSPACE if environment in (None, "", "main") else f"{WORKSPACE}-{environment}"
    sub = f"{source}--{label}"
    if len(sub) > 63:
        sub = f"{sub[:56]}-{hashlib.sha256(sub.encode()).hexdigest()[:6]}"
    return f"https://{sub}.modal.run"


class FakeModalServer:
    """Runs FakeModal on a free port in a background thread; ``url`` goes into MODAL_SERVER_URL."""

    def __init__(self) -> None:
        self.servicer = FakeModal()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = Server([self.servicer])
        self._loop.run_until_complete(server.start("127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# --- what the deploy tests share: run a command against a fresh fake control plane ---

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
TOKEN = {"MODAL_TOKEN_ID": "ak-test", "MODAL_TOKEN_SECRET": "as-test"}
# The server key and the gateway's proxy token, stated where the deploy runs (the preflight checks both).
KEY = {"VLLM_SERVER_API_KEY": "server-key-0123456789", "MODAL_PROXY_TOKEN_ID": "wk-fake0123",
       "MODAL_PROXY_TOKEN_SECRET": "ws-fake0123"}


def deploy_via_fake(tmp_path, argv, cwd=ROOT, **env_extra):
    """Run ``argv`` (a `modal deploy` or `llmodal deploy`) against a fresh fake; (result, calls received)."""
    import os
    import subprocess
    from pathlib import Path

    srv = FakeModalServer()
    Path(tmp_path).mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "MODAL_", "LLMODAL_S"))}
    env.update(HOME=str(tmp_path), MODAL_SERVER_URL=srv.url, **TOKEN, **env_extra)
    r = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=180)
    return r, srv.servicer.calls


def sent_functions(calls) -> dict:
    return {c.function.function_name: c.function for c in calls["FunctionCreate"]}
