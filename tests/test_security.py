"""Reliability and security guards (issue #20): auth that cannot be bypassed, the Host allow-list, limits that keep
one request from taking the box, outputs confined to the data dir, extensions that cannot stop the server."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

import app as webui
from modules import cmd_args
from tests.test_api import API, make_runtime

REPO = Path(__file__).resolve().parent.parent


# -- auth ---------------------------------------------------------------------------------------------------------------
MALFORMED_AUTH = ["nocolon", ":", ":pw", " ", ",", "", "user:", "alice:pw,", "alice:pw,nocolon", " :pw", "user: "]


@pytest.mark.parametrize("flag", ["--api-auth", "--gradio-auth"])
@pytest.mark.parametrize("value", MALFORMED_AUTH)
def test_a_malformed_credential_is_a_start_up_error_naming_the_flag(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cmd_args.parse_args(["--listen", "--api", flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and "user:password" in err
    if value.partition(":")[2].strip():
        assert value.partition(":")[2] not in err.replace("user:password", ""), "the password is never printed"


def test_the_server_refuses_to_start_with_a_malformed_credential():
    """The probe's bypass: `--listen --nowebui --api-auth nocolon` served the API to the network with no login."""
    for value in ("nocolon", ":", ":pw", " ", ","):
        r = subprocess.run([sys.executable, "app.py", "--listen", "--nowebui", "--api-auth", value, "--port", "9"],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (value, r.stderr)
        assert "--api-auth" in r.stderr


@pytest.mark.parametrize("flags, refused", [
    (["--listen", "--nowebui"], "without authentication"),
    (["--listen", "--api", "--gradio-auth", "u:p"], "API would be exposed"),
    (["--listen"], "without authentication"),
    (["--server-name", "10.0.0.5", "--api"], "without authentication"),
    (["--listen", "--api", "--api-auth", "u:p"], None),        # the UI falls back to the API users
    (["--listen", "--gradio-auth", "u:p"], None),
    (["--listen", "--nowebui", "--api-auth", "u:p"], None),
    (["--listen", "--api", "--insecure-listen"], None),
    (["--api"], None),                                           # loopback: A1111's defaults
])
def test_listen_needs_credentials_for_every_surface_it_serves(flags, refused):
    problem = cmd_args.check_network_exposure(cmd_args.parse_args(flags))
    assert (problem is None) if refused is None else (refused in problem), problem


def test_the_ui_login_takes_the_api_users_when_it_has_none_of_its_own():
    args = cmd_args.parse_args(["--listen", "--api", "--api-auth", "alice:s3cret"])
    assert cmd_args.ui_credentials(args) == [("alice", "s3cret")]
    args = cmd_args.parse_args(["--api", "--api-auth", "alice:s3cret", "--gradio-auth", "bob:pw"])
    assert cmd_args.ui_credentials(args) == [("bob", "pw")] and cmd_args.api_credentials(args) == [("alice", "s3cret")]


@pytest.fixture
def app_with(tmp_path):
    """The app as `app.py` builds it (API only, so no Gradio page is built), for the given extra flags."""
    made = []

    def build(*flags: str) -> TestClient:
        runtime = make_runtime(tmp_path, *flags)
        made.append(runtime)
        return TestClient(webui.build_app(runtime.args, runtime), base_url="http://127.0.0.1:7861")

    yield build
    for runtime in made:
        runtime.queue.close()


def test_docs_and_openapi_need_the_api_credentials(app_with):
    with app_with("--api-auth", "alice:s3cret") as client:
        for path in ("/docs", "/openapi.json", "/docs/oauth2-redirect", "/openapi.json/"):
            assert client.get(path).status_code == 401, path
            assert client.get(path, auth=("alice", "wrong")).status_code == 401, path
        assert client.get("/openapi.json", auth=("alice", "s3cret")).json()["paths"]
        assert client.get("/docs", auth=("alice", "s3cret")).status_code == 200


def test_without_api_auth_docs_stay_open_on_loopback(app_with):
    with app_with() as client:
        assert client.get("/openapi.json").status_code == 200


# -- Host header ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("host, status", [
    ("127.0.0.1:7861", 200), ("localhost:7861", 200), ("LOCALHOST", 200), ("[::1]:7861", 200),
    ("evil.example:7861", 400), ("127.0.0.1.evil.example", 400), ("", 400), ("localhost.:7861", 400),
])
def test_a_request_for_another_host_is_refused(app_with, host, status):
    """DNS rebinding: a page on evil.example whose name now resolves to 127.0.0.1 sends `Host: evil.example`."""
    with app_with() as client:
        for path in (f"{API}/options", "/openapi.json"):
            r = client.get(path, headers={"Host": host})
            assert r.status_code == status, (host, path, r.text)
            if status == 400:
                assert "--allowed-hosts" in r.json()["detail"]


def test_allowed_hosts_adds_names_and_star_allows_any(app_with):
    with app_with("--allowed-hosts", "box.lan,*.example.org") as client:
        for host, status in (("box.lan", 200), ("a.example.org:7861", 200), ("example.org", 400), ("x.lan", 400),
                             ("localhost", 200)):
            assert client.get(f"{API}/options", headers={"Host": host}).status_code == status, host
    with app_with("--allowed-hosts", "*") as client:
        assert client.get(f"{API}/options", headers={"Host": "anything.example"}).status_code == 200


def test_listening_on_every_interface_answers_to_this_machines_names():
    hosts = cmd_args.allowed_hosts(cmd_args.parse_args(["--listen", "--insecure-listen"]))
    assert "0.0.0.0" in hosts and "localhost" in hosts and "127.0.0.1" in hosts
    import socket

    assert socket.gethostname().lower() in hosts
    assert "evil.example" not in hosts
