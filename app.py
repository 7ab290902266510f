"""Start the web UI (and, with --api, the A1111-compatible API) on one server.

    python app.py                 # UI at http://127.0.0.1:7860
    python app.py --api           # UI + /sdapi/v1
    python app.py --nowebui       # API only, port 7861
"""
from __future__ import annotations

import os

# Offline and quiet by default: no analytics, no hub lookups. Set before gradio / huggingface are imported.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

import logging  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from modules.cmd_args import (allowed_hosts, bind_address, check_network_exposure, parse_args,  # noqa: E402
                              ui_credentials)

log = logging.getLogger("webui")


def build_app(args, runtime):
    """The FastAPI app: API routes (with --api) and the Gradio UI mounted at / (unless --nowebui), every path behind
    the ``Host`` allow-list (the API and its docs behind ``--api-auth``, the UI behind its login)."""
    from fastapi import FastAPI

    from modules import page, script_callbacks, shared
    from modules.api.middleware import HostAllowListMiddleware

    demo = None
    app = FastAPI(title="Stable Diffusion web UI", docs_url=None, redoc_url=None)
    if args.api:
        from modules.api.api import mount_api
        from modules.api.docs import add_offline_docs

        mount_api(app, runtime)
        add_offline_docs(app)
    if not args.nowebui:
        import gradio as gr

        from modules import ui

        demo = ui.create_ui(runtime)
        shared.demo = demo
        app = gr.mount_gradio_app(app, demo, path="/", auth=ui_credentials(args) or None,
                                  css=ui.CSS, head=page.head_html(runtime.paths.data_dir, runtime.opts.localization),
                                  server_name=bind_address(args), server_port=args.port, show_error=True)
        page.add_routes(app, runtime.paths.data_dir, page.gradio_app_of(app))
        ui.ui_extra_networks.add_routes(app, runtime, page.gradio_app_of(app))   # the cards' preview pictures
    hosts = allowed_hosts(args)
    if hosts is not None:
        app.add_middleware(HostAllowListMiddleware, allowed=hosts)
    script_callbacks.app_started_callback(demo, app)
    page.keep_page_mount_last(app)   # routes extensions added come before the page's catch-all mount
    return app


def main(argv: list[str] | None = None) -> None:
    started = time.perf_counter()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv, with_extensions=True)
    problem = check_network_exposure(args)
    if problem:
        log.error(problem)
        sys.exit(2)

    from modules.job_queue import JobQueue
    from modules.runtime import Runtime

    from modules import extensions, scripts
    from modules.a1111 import lifecycle

    runtime = Runtime.create(args)
    runtime.queue = JobQueue(runtime.paths.history_db, batch_limit=lambda: runtime.opts.batch_compatible_jobs)
    if args.ray_address:
        from modules import ray_workers

        runtime.workers = ray_workers.start(runtime, args.ray_address, args.ray_cpu_workers)
    lifecycle.run_installers(runtime.paths.extensions_dir, runtime.opts.disabled_extensions,
                             args.disable_all_extensions, args=sys.argv[1:] if argv is None else argv,
                             skip=args.skip_install)
    extensions.hook_timeout = args.extension_timeout
    scripts.load_scripts(runtime.paths.extensions_dir, runtime.opts.disabled_extensions, args.disable_all_extensions)
    app = build_app(args, runtime)

    import uvicorn

    host = bind_address(args)
    config = uvicorn.Config(app, host=host, port=args.port, log_level="warning")
    server = uvicorn.Server(config)
    url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{args.port}"

    def after_start() -> None:
        """The page is served at once; the model (and torch's heavier libraries) load right after."""
        while not server.started:
            time.sleep(0.05)
        log.info("Running on %s (startup %.1fs)%s", url, time.perf_counter() - started,
                 " — API at /sdapi/v1, docs at /docs" if args.api else "")
        if args.threads:
            import torch

            from modules import cpu_threads

            torch.set_num_threads(args.threads)
            cpu_threads.configure(args.threads)  # the most a job uses; small jobs use one (modules/cpu_threads.py)
        if args.skip_load_model_at_start:
            runtime.model_ready.set()
            return
        runtime.load_initial_model()
        if runtime.models.current is not None:
            log.info("Model %s ready (%.1fs after start)", runtime.models.current.sd_checkpoint_info.title,
                     time.perf_counter() - started)

    threading.Thread(target=after_start, daemon=True, name="model-loader").start()
    try:
        server.run()
    finally:
        runtime.queue.close(timeout=5)
        scripts.unload_scripts()


if __name__ == "__main__":
    main()
