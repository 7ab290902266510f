"""Command-line flags, with A1111's names where A1111 has them."""
from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="app.py", description="Local Stable Diffusion web UI (A1111-compatible)")
    p.add_argument("--port", type=int, default=None, help="port to listen on (default 7860; 7861 with --nowebui)")
    p.add_argument("--listen", action="store_true", help="listen on 0.0.0.0 (needs --api-auth/--gradio-auth or --insecure-listen)")
    p.add_argument("--server-name", type=str, default=None, help="address to bind to (overrides --listen)")
    p.add_argument("--insecure-listen", action="store_true",
                   help="accept listening on the network without authentication")
    p.add_argument("--data-dir", type=str, default=None, help="base folder for models, outputs and settings")
    p.add_argument("--ckpt", type=str, default=None, help="checkpoint to load at start (path or title)")
    p.add_argument("--ckpt-dir", type=str, default=None, help="folder with Stable Diffusion checkpoints")
    p.add_argument("--vae-dir", type=str, default=None, help="folder with VAE files")
    p.add_argument("--lora-dir", type=str, default=None, help="folder with LoRA files")
    p.add_argument("--embeddings-dir", type=str, default=None, help="folder with textual inversion embeddings")
    p.add_argument("--api", action="store_true", help="serve the A1111-compatible API under /sdapi/v1")
    p.add_argument("--nowebui", action="store_true", help="serve only the API (implies --api)")
    p.add_argument("--api-auth", type=str, default=None, help='HTTP basic auth for the API, "user:pass[,user2:pass2]"')
    p.add_argument("--gradio-auth", type=str, default=None, help='login for the web UI, "user:pass[,user2:pass2]"')
    p.add_argument("--cors-allow-origins", type=str, default=None, help="comma-separated allowed CORS origins")
    p.add_argument("--skip-load-model-at-start", action="store_true", help="do not load a model until it is needed")
    p.add_argument("--disable-all-extensions", action="store_true", help="load no extension")
    p.add_argument("--skip-install", action="store_true", help="do not run extensions' install.py")
    p.add_argument("--allow-code", action="store_true",
                   help="allow scripts that run Python code typed into the page (A1111's Custom code); never with "
                        "--listen unless every user may run code on this machine")
    p.add_argument("--device", type=str, default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p


def parse_args(argv: list[str] | None = None, with_extensions: bool = False) -> argparse.Namespace:
    """Parse ``argv``; ``with_extensions``: first let each enabled extension's ``preload.py`` add its flags."""
    parser = build_parser()
    if with_extensions:
        from modules.a1111 import lifecycle
        from modules.paths import Paths

        early, _ = parser.parse_known_args(argv)
        paths = Paths.from_args(early.data_dir)
        lifecycle.preload_extensions(parser, paths.extensions_dir, lifecycle.disabled_in_config(paths.data_dir),
                                     early.disable_all_extensions)
    args = parser.parse_args(argv)
    if args.nowebui:
        args.api = True
    if args.port is None:
        args.port = 7861 if args.nowebui else 7860
    return args


def bind_address(args: argparse.Namespace) -> str:
    """127.0.0.1 unless told otherwise."""
    if args.server_name:
        return args.server_name
    return "0.0.0.0" if args.listen else "127.0.0.1"


def check_network_exposure(args: argparse.Namespace) -> str | None:
    """Refuse to expose an unauthenticated server: returns the reason, or None when it is fine to start."""
    host = bind_address(args)
    local = host in ("127.0.0.1", "localhost", "::1")
    if local or args.insecure_listen:
        return None
    if args.gradio_auth or args.api_auth:
        if args.api and not args.api_auth:
            return "the API would be exposed on the network without --api-auth (or pass --insecure-listen)"
        if not args.nowebui and not args.gradio_auth:
            return "the web UI would be exposed on the network without --gradio-auth (or pass --insecure-listen)"
        return None
    return (f"refusing to listen on {host} without authentication: pass --api-auth/--gradio-auth, "
            "or --insecure-listen if you accept that anyone on the network can use this server")
