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
    p.add_argument("--allowed-output-dirs", type=str, default=None,
                   help="comma-separated folders outside the data dir that output folders (settings, requests, "
                        "scripts, training logs) may point to")
    p.add_argument("--ckpt", type=str, default=None, help="checkpoint to load at start (path or title)")
    p.add_argument("--ckpt-dir", type=str, default=None, help="folder with Stable Diffusion checkpoints")
    p.add_argument("--vae-dir", type=str, default=None, help="folder with VAE files")
    p.add_argument("--lora-dir", type=str, default=None, help="folder with LoRA files")
    p.add_argument("--embeddings-dir", type=str, default=None, help="folder with textual inversion embeddings")
    p.add_argument("--gradio-allowed-path", action="append", default=[],
                   help="a folder outside the data dir that the Extras tab may read from and write to (repeatable)")
    for kind in ("ESRGAN", "RealESRGAN", "SwinIR", "DAT"):
        p.add_argument(f"--{kind.lower()}-models-path", type=str, default=None,
                       help=f"folder with {kind} upscaler models (default models/{kind})")
    p.add_argument("--api", action="store_true", help="serve the A1111-compatible API under /sdapi/v1")
    p.add_argument("--nowebui", action="store_true", help="serve only the API (implies --api)")
    p.add_argument("--api-auth", type=str, default=None, help='HTTP basic auth for the API, "user:pass[,user2:pass2]"')
    p.add_argument("--gradio-auth", type=str, default=None, help='login for the web UI, "user:pass[,user2:pass2]"')
    p.add_argument("--allowed-hosts", type=str, default=None,
                   help="comma-separated host names the server answers to besides the loopback names and the bound "
                        "address (a guard against DNS rebinding); '*' answers to any")
    p.add_argument("--cors-allow-origins", type=str, default=None, help="comma-separated allowed CORS origins")
    p.add_argument("--skip-load-model-at-start", action="store_true", help="do not load a model until it is needed")
    p.add_argument("--disable-all-extensions", action="store_true", help="load no extension")
    p.add_argument("--skip-install", action="store_true", help="do not run extensions' install.py")
    p.add_argument("--enable-insecure-extension-access", action="store_true",
                   help="allow installing and updating extensions from the page even when listening on the network")
    p.add_argument("--api-server-stop", action="store_true",
                   help="add A1111's /sdapi/v1/server-restart, server-stop and server-kill routes to the API")
    p.add_argument("--extension-timeout", type=float, default=60.0,
                   help="seconds an extension's hook or callback may run before it is abandoned and its extension "
                        "switched off (0: no limit; a script's run() and ui() are never timed)")
    p.add_argument("--allow-code", action="store_true",
                   help="allow scripts that run Python code typed into the page (A1111's Custom code); never with "
                        "--listen unless every user may run code on this machine")
    p.add_argument("--device", type=str, default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--ray-address", type=str, default=None,
                   help="run generation jobs on Ray worker actors of this cluster ('auto', host:port or "
                        "ray://host:10001); needs the optional package ray (see README)")
    p.add_argument("--ray-cpu-workers", type=int, default=None,
                   help="with --ray-address: CPU worker actors to start (default: one per GPU, or 1 without GPUs)")
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
    for flag in ("api_auth", "gradio_auth"):
        try:
            parse_auth(getattr(args, flag), f"--{flag.replace('_', '-')}")
        except ValueError as e:
            parser.error(str(e))
    return args


def parse_auth(value: str | None, flag: str = "auth") -> list[tuple[str, str]]:
    """``"user:pass[,user2:pass2]"`` -> ``[(user, pass), ...]``; None -> []. Anything else that is not a list of
    non-empty users with non-empty passwords raises ``ValueError`` naming ``flag``: a credential that was meant but
    mistyped must never leave a surface open."""
    if value is None:
        return []
    pairs = []
    for item in value.split(","):
        user, sep, password = item.strip().partition(":")
        if not sep or not user.strip() or not password.strip():
            raise ValueError(f"{flag} must be 'user:password[,user2:password2]' with a non-empty user and password "
                             f"in every pair; got {_masked(item)!r}")
        pairs.append((user, password))
    return pairs


def _masked(item: str) -> str:
    """A bad pair as it may be printed: the user part, never the password."""
    user, sep, password = item.strip().partition(":")
    return f"{user}{sep}{'***' if password else ''}"


def api_credentials(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Who may use the API, ``/docs`` and ``/openapi.json``: ``--api-auth`` (empty: anyone, as A1111)."""
    return parse_auth(args.api_auth, "--api-auth")


def ui_credentials(args: argparse.Namespace) -> list[tuple[str, str]]:
    """Who may use the web UI: ``--gradio-auth``, else the ``--api-auth`` users. Unlike A1111, ``--api-auth`` alone
    does not leave the UI open, since the UI's own routes can generate and change settings just as the API can."""
    return parse_auth(args.gradio_auth, "--gradio-auth") or api_credentials(args)


def bind_address(args: argparse.Namespace) -> str:
    """127.0.0.1 unless told otherwise."""
    if args.server_name:
        return args.server_name
    return "0.0.0.0" if args.listen else "127.0.0.1"


LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_NAMES or host.startswith("127.")


def check_network_exposure(args: argparse.Namespace) -> str | None:
    """Refuse to expose a surface without credentials: returns the reason, or None when it is fine to start.
    On the network every surface served needs users: the API (with /docs) ``--api-auth``, the web UI
    ``--gradio-auth`` or ``--api-auth``."""
    host = bind_address(args)
    if is_loopback(host) or args.insecure_listen:
        return None
    if not ui_credentials(args):  # no users at all (the UI falls back to the API's)
        return (f"refusing to listen on {host} without authentication: pass --api-auth/--gradio-auth, "
                "or --insecure-listen if you accept that anyone on the network can use this server")
    if args.api and not api_credentials(args):
        return "the API would be exposed on the network without --api-auth (or pass --insecure-listen)"
    return None


def allowed_hosts(args: argparse.Namespace) -> list[str] | None:
    """The names a request's ``Host`` may carry (None: any). Loopback names, the bound address and, when bound to
    every interface, this machine's names and addresses; plus ``--allowed-hosts``. Checking it stops a web page
    from reaching the server through a DNS name rebound to 127.0.0.1."""
    extra = [h.strip().lower() for h in (args.allowed_hosts or "").split(",") if h.strip()]
    if "*" in extra:
        return None
    host = bind_address(args)
    names = [*LOOPBACK_NAMES, host.lower(), *extra]
    if host in ("0.0.0.0", "::"):
        names += _machine_names()
    return sorted(set(names))


def _machine_names() -> list[str]:
    import socket

    import psutil

    names = [socket.gethostname(), socket.getfqdn()]
    for addresses in psutil.net_if_addrs().values():
        names += [a.address.split("%")[0] for a in addresses if a.family in (socket.AF_INET, socket.AF_INET6)]
    return [n.lower() for n in names if n]
