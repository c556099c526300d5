"""Llama 3.1 70B Instruct (or any VLLM_MODEL) with vLLM on Modal — the guide's entry point.

    modal secret create vllm-secrets HUGGING_FACE_HUB_TOKEN=hf_... VLLM_SERVER_API_KEY=...
    modal run modal_vllm.py::download      # fill the weights volume once
    modal deploy modal_vllm.py             # https://WORKSPACE--vllm-llama70b-serve-vllm.modal.run/v1

Every setting comes from llmodal's config (environment and .env where you deploy, e.g.
``VLLM_MODEL=... modal deploy modal_vllm.py``) and is carried into the container, which
plans the model (a 4-bit checkpoint when BF16 cannot fit) and starts vLLM with the same
command-line builder and auth middleware as ``llmodal serve``.
"""

import os

import modal

from llmodal.config import from_handoff, load_settings
from llmodal.modal_spec import HF_CACHE_PATH, app_spec, resources

# Where you deploy: your environment and .env (`llmodal deploy --env-file X` passes X here).
# In the container: the one value the deploy handed over.
if os.environ.get("LLMODAL_SETTINGS"):
    settings = from_handoff(os.environ["LLMODAL_SETTINGS"])
else:
    settings = load_settings(os.environ.get("LLMODAL_ENV_FILE", ".env") or None)
spec = app_spec(settings)
image, volumes, secrets = resources(settings)

app = modal.App(spec.app_name)


if settings.snapshot:
    # Fast boot (LLMODAL_FAST_BOOT, the default on one GPU): vLLM starts, warms up and sleeps before Modal
    # snapshots the container (CPU and GPU memory); a restored container only wakes it. Same URL, via the label.
    @app.cls(image=image, secrets=secrets, volumes=volumes, env=spec.container_env, **spec.snapshot_kwargs,
             **spec.function_kwargs)
    @modal.concurrent(max_inputs=spec.concurrent_inputs)
    class Server:
        @modal.enter(snap=True)
        def start(self):
            from llmodal.modal_runtime import start_fast_boot

            self.boot = start_fast_boot()

        @modal.enter(snap=False)
        def wake(self):
            self.boot.restore()

        @modal.web_server(port=spec.web_port, startup_timeout=spec.startup_timeout, label=spec.web_label)
        def serve_vllm(self):
            pass

        @modal.exit()
        def stop(self):
            self.boot.stop()

else:
    @app.function(image=image, secrets=secrets, volumes=volumes, env=spec.container_env, **spec.function_kwargs)
    @modal.concurrent(max_inputs=spec.concurrent_inputs)
    @modal.web_server(port=spec.web_port, startup_timeout=spec.startup_timeout)
    def serve_vllm():
        from llmodal.modal_runtime import start_server

        start_server()


@app.function(image=image, secrets=secrets, volumes=volumes, env=spec.container_env, timeout=2 * 60 * 60)
def download():
    from llmodal.modal_runtime import download_weights

    download_weights(commit=volumes[HF_CACHE_PATH].commit)
