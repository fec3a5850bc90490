"""The viewer reads its data root only, escapes every text, and binds to loopback by default.

Each path-shaped request is tried with ``..``, absolute paths, symlinks that leave the root
and URL-encoded (also doubly encoded) variants; each must be a plain 404 that reveals
nothing of the file it aimed at.
"""

from __future__ import annotations

import asyncio
import os
import socket
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from fastapi import Depends, HTTPException
from fastapi.testclient import TestClient

from ise_core.cli import build_parser
from ise_core.simulate.stage import collect_stage
from ise_core.viewer.app import create_app
from ise_core.viewer.data import DataRoot, NotInRoot, safe_name
from ise_core.viewer.serve import is_loopback
from tests.quality.stage_outputs import build_pipeline_outputs

SECRET = "TOP-SECRET-OUTSIDE-THE-ROOT"


@pytest.fixture
def root(tmp_path: Path) -> DataRoot:
    settings = build_pipeline_outputs(tmp_path / "project", n=3, rejected=1)
    collect_stage(settings)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text(f'{{"secret": "{SECRET}"}}', encoding="utf-8")
    (outside / "secret.png").write_bytes(SECRET.encode())
    root = DataRoot.from_settings("current", settings)
    # Symlinks planted inside the root that point out of it.
    os.symlink(outside / "secret.json", root.folder("episodes") / "intent-99999.json")
    plots = root.folder("plots")
    plots.mkdir(parents=True, exist_ok=True)
    os.symlink(outside / "secret.png", plots / "leak.png")
    os.symlink(outside, root.folder("episodes") / "linked-folder")
    return root


ATTEMPTS = [
    "/episodes/..",
    "/episodes/%2e%2e",
    "/episodes/..%2F..%2F..%2Foutside%2Fsecret",
    "/episodes/%2e%2e%2f%2e%2e%2foutside%2fsecret",
    "/episodes/..%252F..%252Foutside%252Fsecret",  # encoded twice
    "/episodes/%2Fetc%2Fpasswd",
    "/episodes/%2F" + "tmp",
    "/episodes/intent-99999",  # a symlink to a file outside
    "/episodes/linked-folder%2Fsecret",
    "/episodes/.hidden",
    "/plots/plots/leak.png",  # a symlink to a file outside
    "/plots/plots/..%2F..%2Ftrajectories%2Fstats.json",
    "/plots/plots/%2Fetc%2Fhostname.png",
    "/plots/plots/..%252F..%252Foutside%252Fsecret.png",
    "/plots/..%2Fintents/vendi_curve.png",
    "/plots/episodes/intent-00001.json",  # not a plot folder
    "/plots/plots/stats.json",  # not a PNG
    "/static/..%2F__init__.py",
    "/static/%2Fetc%2Fpasswd",
    "/gates/..%2Ftrajectories",
    "/?root=..%2F..%2Foutside",
    "/?root=%2Ftmp",
    "/episodes?root=..",
]


def raw_get(app: Any, target: str) -> tuple[int, str]:
    """GET ``target`` exactly as written: HTTP clients and browsers remove dot segments
    before sending, a hand-made request need not. The path is percent-decoded once, as
    a server does; the query string is passed on as is."""
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": urllib.parse.unquote(path),
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body.decode("utf-8", errors="replace")


@pytest.mark.parametrize("path", ATTEMPTS)
def test_no_request_reaches_outside_the_root(root: DataRoot, path: str) -> None:
    status, text = raw_get(create_app({"current": root}), path)
    assert status == 404, (path, status)
    assert SECRET not in text
    assert "passwd" not in text and "root:" not in text
    # The same through an HTTP client, which may first remove dot segments.
    response = TestClient(create_app({"current": root})).get(path)
    assert response.status_code in (200, 404) and SECRET not in response.text


def test_the_file_resolver_refuses_what_is_not_a_plain_name(root: DataRoot) -> None:
    for name in ("..", "../x", "/etc/passwd", "a/b", ".env", "x\x00y", "%2e%2e", "", "a" * 300):
        assert not safe_name(name), name
        with pytest.raises(NotInRoot):
            root.file("episodes", name)
    with pytest.raises(NotInRoot):
        root.file("episodes", "intent-99999.json")  # a symlink out of the folder
    assert root.file("episodes", "intent-00001.json").is_file()


def test_a_symlink_inside_the_root_is_followed(root: DataRoot) -> None:
    # e.g. a plot linked to another file of the same folder
    os.symlink(root.folder("plots") / "..", root.folder("plots") / "up")
    target = root.folder("episodes") / "intent-00001.json"
    os.symlink(target, root.folder("episodes") / "alias.json")
    assert root.file("episodes", "alias.json") == target.resolve()


def test_files_linked_into_the_projects_dvc_cache_are_read(tmp_path: Path) -> None:
    """DVC's ``symlink`` cache type makes every data file a link into .dvc/cache."""
    settings = build_pipeline_outputs(tmp_path, n=2, rejected=0)
    collect_stage(settings)
    root = DataRoot.from_settings("current", settings)
    cache = tmp_path / ".dvc" / "cache" / "files" / "md5" / "ab"
    cache.mkdir(parents=True)
    episode = root.folder("episodes") / "intent-00001.json"
    stored = cache / "cdef0123"
    episode.rename(stored)
    os.symlink(stored, episode)
    (tmp_path / ".git").mkdir()
    assert root.file("episodes", "intent-00001.json") == stored.resolve()
    status, _ = raw_get(create_app({"current": root}), "/episodes/intent-00001")
    assert status == 200


def test_every_route_carries_the_given_dependencies(root: DataRoot) -> None:
    """What the Airflow plugin relies on: its login check guards static files and plots too."""

    def refuse() -> None:
        raise HTTPException(401, "Not authenticated")

    client = TestClient(create_app({"current": root}, dependencies=[Depends(refuse)]))
    paths = [
        "/",
        "/episodes",
        "/episodes/intent-00001",
        "/compare",
        "/gates/trajectories",
        "/plots/plots/user_turns.png",
        "/static/viewer.css",
        "/static/viewer.js",
        "/dag/ise_refresh",
        "/task/ise_refresh/gate_sft",
    ]
    for path in paths:
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 401, path
        assert "intent-00001" not in response.text
    # And nothing but routes: no mounts or docs pages that a dependency would not cover.
    app = create_app({"current": root})
    assert {type(r).__name__ for r in app.routes} == {"APIRoute"}
    assert TestClient(app).get("/openapi.json").status_code == 404


def test_model_and_tool_text_is_escaped(root: DataRoot) -> None:
    path = root.folder("episodes") / "intent-00001.json"
    text = path.read_text(encoding="utf-8").replace(
        "Done with step 1", "<script>alert(1)</script><img src=x onerror=alert(2)> Done with step 1"
    )
    path.write_text(text, encoding="utf-8")
    response = TestClient(create_app({"current": root})).get("/episodes/intent-00001")
    assert response.status_code == 200
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;"
    assert escaped in response.text
    assert "<script>alert" not in response.text and "<img src=x" not in response.text
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"


def test_ise_view_binds_to_loopback_unless_told(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["view"])
    assert (args.host, args.port) == ("127.0.0.1", 8765)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_ise_view_warns_before_serving_beyond_this_machine(
    root: DataRoot, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    from ise_core.cli import main
    from ise_core.viewer import serve

    served: list[dict[str, object]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(kw))
    params = root.intents.parent.parent / "params.yaml"
    params.write_text("seed: 7\n", encoding="utf-8")  # every folder at its default: data/...
    assert main(["view", "--params", str(params), "--port", "0"]) == 0
    assert served[-1]["host"] == "127.0.0.1" and "WARNING" not in capsys.readouterr().err
    # Nothing is bound here beyond loopback: the port probe is skipped for this case.
    monkeypatch.setattr(serve, "check_port", lambda host, port: None)
    assert main(["view", "--params", str(params), "--host", "0.0.0.0"]) == 0
    err = capsys.readouterr().err
    assert served[-1]["host"] == "0.0.0.0"
    assert "WARNING: serving on 0.0.0.0" in err and "no login" in err
    assert "3 episodes from the index" in err
    monkeypatch.undo()
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(kw))
    assert main(["view", "--params", str(params), "--port", "70000"]) == 2
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert main(["view", "--params", str(params), "--port", port]) == 2
        assert "cannot listen there" in capsys.readouterr().err
    nope = str(root.intents / "nope")
    assert main(["view", "--params", str(params), "--port", "0", "--compare", nope]) == 2
    assert "not found" in capsys.readouterr().err
