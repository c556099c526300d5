"""Llama 3.1 70B Instruct (or any VLLM_MODEL) with vLLM on Modal: the app `modal deploy` sends.

    modal secret create vllm-secrets HUGGING_FACE_HUB_TOKEN=hf_... VLLM_SERVER_API_KEY=... \\
        MODAL_PROXY_TOKEN_ID=wk-... MODAL_PROXY_TOKEN_SECRET=ws-...
    modal run modal_vllm.py::download      # fill the weights volume once
    modal deploy modal_vllm.py             # https://WORKSPACE--vllm-llama70b-serve-vllm.modal.run/v1

(``llmodal deploy`` sends this module from any folder; the guide's ``modal_vllm.py`` imports it.)

Two web functions. ``serve_vllm`` owns the guide's URL: a small CPU function that checks the key
(``llmodal.modal.gateway``) and relays to the GPU server, so a request without a valid key never starts
or keeps a GPU. The GPU server (``Server.serve_gpu``) sits behind
Modal's proxy auth. Every setting comes from llmodal's config where you deploy (environment and
.env, e.g. ``VLLM_MODEL=... modal deploy modal_vllm.py``) and travels into the containers as one value.
"""

import os
import sys

import modal

from llmodal.core.config import from_handoff, load_settings
from llmodal.modal.spec import HF_CACHE_PATH, app_spec, deploy_settings, gateway_image, resources

# Where you deploy: your environment and .env (`llmodal deploy --env-file X` passes X here).
# In the container: the one value the deploy handed over.
if os.environ.get("LLMODAL_SETTINGS"):
    settings = from_handoff(os.environ["LLMODAL_SETTINGS"])
else:
    settings = deploy_settings(load_settings(os.environ.get("LLMODAL_ENV_FILE", ".env") or None))
    from llmodal.modal.preflight import missing_proxy_token, proxy_token_fix

    if _missing := missing_proxy_token(os.environ.get("LLMODAL_ENV_FILE", ".env") or None):
        # The guide's `modal deploy modal_vllm.py` has no preflight of its own: say it where the deploy runs.
        print(f"llmodal: warning: {proxy_token_fix(settings, _missing)}", file=sys.stderr)
spec = app_spec(settings)
image, volumes, secrets = resources(settings)

app = modal.App(spec.app_name)


# One lifecycle for both kinds, the one Modal runs: @modal.enter starts vLLM through the supervisor,
# @modal.exit drains it (Modal calls it on scale-down and on preemption's SIGINT, within its grace).
# With fast boot (LLMODAL_FAST_BOOT, the default on one GPU) the start is split around Modal's memory
# snapshot: enter(snap=True) starts, warms up and sleeps vLLM; enter(snap=False) serves the secret's
# current keys and wakes it.
@app.cls(image=image, secrets=secrets, volumes=volumes, env=spec.container_env, **spec.snapshot_kwargs,
         **spec.function_kwargs)
@modal.concurrent(max_inputs=spec.concurrent_inputs)
class Server:
    if settings.snapshot:
        @modal.enter(snap=True)
        def start(self):
            from llmodal.modal.container import start_fast_boot

            self.boot = start_fast_boot(volumes=volumes)

        @modal.enter(snap=False)
        def wake(self):
            from llmodal.modal.container import restore_fast_boot

            restore_fast_boot(self.boot, volumes=volumes)

        @modal.exit()
        def stop(self):
            self.boot.stop()
    else:
        @modal.enter()
        def start(self):
            from llmodal.modal.container import start_server

            self.sup = start_server(volumes=volumes)

        @modal.exit()
        def stop(self):
            from llmodal.modal.container import stop_server

            stop_server(self.sup)

    @modal.web_server(port=spec.web_port, startup_timeout=spec.startup_timeout, label=spec.gpu_label,
                      requires_proxy_auth=True)
    def serve_gpu(self):
        pass


def _gpu_url() -> str:
    return Server().serve_gpu.get_web_url()


@app.function(image=gateway_image(), secrets=secrets, env=spec.container_env, **spec.gateway_kwargs)
@modal.concurrent(max_inputs=spec.gateway_inputs)
@modal.asgi_app(label=spec.web_label)
def serve_vllm():
    from llmodal.modal.container import start_gateway

    return start_gateway(_gpu_url)


@app.function(image=image, secrets=secrets, volumes=volumes, env=spec.container_env, timeout=2 * 60 * 60)
def download():
    from llmodal.modal.container import download_weights

    download_weights(commit=volumes[HF_CACHE_PATH].commit)


__all__ = ["Server", "app", "download", "serve_vllm", "settings", "spec"]
