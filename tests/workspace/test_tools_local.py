"""Every tool, for real, on the local (bubblewrap) backend."""

from __future__ import annotations

import http.server
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ise_core.errors import BackendError
from ise_core.records import Check, FixtureFile, Persona
from ise_core.workspace import SandboxWorkspace
from ise_core.workspace.local import LocalWorkspace
from tests.workspace.fixtures import WorkspaceFactory


def run(ws: SandboxWorkspace, command: str, **extra: object) -> str:
    result = ws.call("exec", {"command": command, **extra})
    assert result.ok, result.content
    return result.content


# --- exec ------------------------------------------------------------------------------------


def test_exec_returns_output_and_exit_code(local_ws: SandboxWorkspace) -> None:
    result = local_ws.call("exec", {"command": "echo out; echo err >&2; pwd"})
    assert result.ok and result.exit_code == 0
    assert result.content == "out\nerr\n/workspace\n"
    failed = local_ws.call("exec", {"command": "echo partial; exit 3"})
    assert not failed.ok and failed.exit_code == 3
    assert failed.content == "Error: command exited with code 3\npartial\n"
    missing = local_ws.call("exec", {"command": "no-such-program-here"})
    assert not missing.ok and missing.exit_code == 127 and "not found" in missing.content


def test_exec_has_python_node_git(local_ws: SandboxWorkspace) -> None:
    out = run(local_ws, "python3 -c 'print(6*7)' && node -e 'console.log(6*7)' && git --version")
    assert out.startswith("42\n42\ngit version")
    run(
        local_ws,
        "git init -q repo && cd repo && git -c user.email=a@b -c user.name=a "
        "commit -q --allow-empty -m first && git log --oneline | wc -l",
    )


def test_exec_workdir_and_timeout(local_ws: SandboxWorkspace) -> None:
    run(local_ws, "mkdir -p sub/dir")
    assert run(local_ws, "pwd", workdir="sub/dir") == "/workspace/sub/dir\n"
    escaped = local_ws.call("exec", {"command": "pwd", "workdir": "../.."})
    assert not escaped.ok and "'..' is not allowed" in escaped.content
    started = time.monotonic()
    slow = local_ws.call("exec", {"command": "echo begun; sleep 30", "timeout": 0.5})
    assert time.monotonic() - started < 5
    assert not slow.ok and slow.exit_code is None
    assert (
        slow.content.startswith("Error: command timed out after 0.5s") and "begun" in slow.content
    )


def test_exec_output_is_truncated_with_a_marker(workspace_factory: WorkspaceFactory) -> None:
    ws = workspace_factory("local", output_limit=1000)
    result = ws.call("exec", {"command": "seq 1 100000"})
    assert result.ok and result.truncated
    assert "[... output truncated:" in result.content
    assert result.content.startswith("1\n2\n3\n") and result.content.endswith("100000\n")
    assert len(result.content) < 1200


def test_commands_share_files_with_the_file_tools(local_ws: SandboxWorkspace) -> None:
    assert local_ws.call("write", {"path": "notes/a.txt", "content": "from write\n"}).ok
    assert run(local_ws, "cat notes/a.txt") == "from write\n"
    run(local_ws, "printf 'from exec\\n' > made.txt")
    assert local_ws.call("read", {"path": "made.txt"}).content == "from exec\n"


# --- process ---------------------------------------------------------------------------------


def test_process_start_poll_read_kill_list(local_ws: SandboxWorkspace) -> None:
    started = local_ws.call(
        "process", {"action": "start", "command": "for i in 1 2 3; do echo tick $i; done; sleep 60"}
    )
    assert started.ok and started.content.startswith("Started p1")
    deadline = time.monotonic() + 5
    polled = ""
    while "tick 3" not in polled and time.monotonic() < deadline:
        polled += local_ws.call("process", {"action": "poll", "id": "p1"}).content
        time.sleep(0.05)
    assert "tick 1" in polled and "tick 3" in polled and "running" in polled
    again = local_ws.call("process", {"action": "poll", "id": "p1"})
    assert "(no new output)" in again.content
    read = local_ws.call("process", {"action": "read", "id": "p1", "offset": 7, "limit": 6})
    assert read.content.startswith("tick 2") and "[bytes 7-13 of" in read.content
    listed = local_ws.call("process", {"action": "list"})
    assert listed.content.startswith("p1\trunning")
    killed = local_ws.call("process", {"action": "kill", "id": "p1"})
    assert killed.ok and killed.content == "Killed p1"
    assert "p1\tkilled" in local_ws.call("process", {"action": "list"}).content
    twice = local_ws.call("process", {"action": "kill", "id": "p1"})
    assert not twice.ok and "not running" in twice.content
    assert run(local_ws, "ps -eo args | grep -c '[s]leep 60' || true") == "0\n"


def test_process_exit_code_and_errors(local_ws: SandboxWorkspace) -> None:
    local_ws.call("process", {"action": "start", "command": "echo done; exit 4"})
    deadline = time.monotonic() + 5
    content = ""
    while "exited" not in content and time.monotonic() < deadline:
        content = local_ws.call("process", {"action": "poll", "id": "p1"}).content
        time.sleep(0.05)
    assert content.startswith("p1 exited with code 4")
    assert not local_ws.call("process", {"action": "poll", "id": "p9"}).ok
    assert not local_ws.call("process", {"action": "start"}).ok
    assert not local_ws.call("process", {"action": "poll"}).ok
    assert not local_ws.call("process", {"action": "explode"}).ok


def test_background_server_is_reachable_from_later_commands(local_ws: SandboxWorkspace) -> None:
    local_ws.call("write", {"path": "site/index.html", "content": "hello from the server"})
    local_ws.call(
        "process", {"action": "start", "command": "python3 -m http.server 8765", "workdir": "site"}
    )
    fetch = (
        'python3 -c "import time,urllib.request\n'
        "for _ in range(100):\n"
        "    try:\n"
        "        print(urllib.request.urlopen('http://127.0.0.1:8765/').read().decode()); break\n"
        '    except OSError: time.sleep(0.05)"'
    )
    assert run(local_ws, fetch) == "hello from the server\n"


# --- read / write / edit ----------------------------------------------------------------------


def test_read_with_offset_and_limit(local_ws: SandboxWorkspace) -> None:
    local_ws.call(
        "write", {"path": "lines.txt", "content": "".join(f"L{i}\n" for i in range(1, 11))}
    )
    assert local_ws.call("read", {"path": "lines.txt", "offset": 3, "limit": 2}).content == (
        "L3\nL4\n\n[... 6 more lines; continue with offset=5]"
    )
    assert local_ws.call("read", {"path": "lines.txt", "offset": 9}).content == "L9\nL10\n"
    past = local_ws.call("read", {"path": "lines.txt", "offset": 50})
    assert not past.ok and "past the end" in past.content
    assert not local_ws.call("read", {"path": "nope.txt"}).ok
    local_ws.call("exec", {"command": "printf 'a\\0b' > bin.dat"})
    binary = local_ws.call("read", {"path": "bin.dat"})
    assert not binary.ok and "binary file" in binary.content
    local_ws.call("write", {"path": "empty.txt", "content": ""})
    assert local_ws.call("read", {"path": "empty.txt"}).content == "(empty file)"


def test_read_truncates_long_content(workspace_factory: WorkspaceFactory) -> None:
    ws = workspace_factory("local", output_limit=300)
    ws.call("write", {"path": "big.txt", "content": "x" * 5000})
    result = ws.call("read", {"path": "big.txt"})
    assert result.ok and result.truncated and "[... truncated at 300 characters" in result.content


def test_write_limits(workspace_factory: WorkspaceFactory) -> None:
    ws = workspace_factory("local", max_file_mb=1)
    too_big = ws.call("write", {"path": "big.bin", "content": "x" * (1024 * 1024 + 1)})
    assert not too_big.ok and "limit" in too_big.content
    assert ws.call("write", {"path": "/workspace/abs.txt", "content": "ok"}).ok
    assert ws.call("read", {"path": "abs.txt"}).content == "ok"
    assert not ws.call("write", {"path": "", "content": "x"}).ok


def test_edit_exact_replace(local_ws: SandboxWorkspace) -> None:
    local_ws.call("write", {"path": "code.py", "content": "a = 1\nb = 1\nprint(a)\n"})
    result = local_ws.call(
        "edit", {"path": "code.py", "old_string": "a = 1", "new_string": "a = 2"}
    )
    assert result.ok and result.content == "Edited code.py: replaced 1 occurrence"
    assert run(local_ws, "python3 code.py") == "2\n"
    absent = local_ws.call("edit", {"path": "code.py", "old_string": "zzz", "new_string": "y"})
    assert not absent.ok and "not found" in absent.content
    ambiguous = local_ws.call("edit", {"path": "code.py", "old_string": " = ", "new_string": "="})
    assert not ambiguous.ok and "occurs 2 times" in ambiguous.content
    every = local_ws.call(
        "edit", {"path": "code.py", "old_string": " = ", "new_string": "=", "replace_all": True}
    )
    assert every.ok and "replaced 2 occurrences" in every.content
    assert local_ws.call("read", {"path": "code.py"}).content == "a=2\nb=1\nprint(a)\n"
    assert not local_ws.call("edit", {"path": "code.py", "old_string": "", "new_string": "x"}).ok


# --- memory ----------------------------------------------------------------------------------


def test_memory_search_and_get(local_ws: SandboxWorkspace) -> None:
    local_ws.call(
        "write",
        {"path": "MEMORY.md", "content": "# Notes\n- The deploy key lives in vault\n- Coffee\n"},
    )
    local_ws.call(
        "write", {"path": "memory/projects.md", "content": "Project Atlas: deploy on Fridays\n"}
    )
    found = local_ws.call("memory_search", {"query": "deploy key"})
    assert found.ok
    lines = found.content.splitlines()
    assert lines[0] == "MEMORY.md:2: - The deploy key lives in vault"
    assert "memory/projects.md:1: Project Atlas: deploy on Fridays" in lines
    none = local_ws.call("memory_search", {"query": "kubernetes"})
    assert none.ok and "No notes match" in none.content
    assert not local_ws.call("memory_search", {"query": "  ..."}).ok
    part = local_ws.call("memory_get", {"path": "MEMORY.md", "from_line": 2, "lines": 1})
    assert part.content == "- The deploy key lives in vault"
    whole = local_ws.call("memory_get", {"path": "memory/projects.md"})
    assert whole.content == "Project Atlas: deploy on Fridays"
    outside = local_ws.call("memory_get", {"path": "AGENTS.md"})
    assert not outside.ok and "notes live in" in outside.content


# --- web_fetch -------------------------------------------------------------------------------


class _Pages(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/away":
            self.send_response(302)
            self.send_header("Location", "http://example.invalid/elsewhere")
            self.end_headers()
            return
        body = (
            b"<html><head><title>Status</title><style>p{}</style></head>"
            b"<body><p>All systems normal</p><script>evil()</script></body></html>"
        )
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def page_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Pages)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_web_fetch_is_off_by_default(local_ws: SandboxWorkspace, page_server: int) -> None:
    result = local_ws.call("web_fetch", {"url": f"http://127.0.0.1:{page_server}/"})
    assert not result.ok and "network access is disabled" in result.content


def test_web_fetch_follows_the_allowlist(
    workspace_factory: WorkspaceFactory, page_server: int
) -> None:
    ws = workspace_factory("local", network_allowlist=[f"127.0.0.1:{page_server}"])
    page = ws.call("web_fetch", {"url": f"http://127.0.0.1:{page_server}/"})
    assert page.ok, page.content
    assert page.content.startswith("HTTP 200 text/html")
    assert "# Status" in page.content and "All systems normal" in page.content
    assert "evil" not in page.content
    other_port = ws.call("web_fetch", {"url": f"http://127.0.0.1:{page_server + 1}/"})
    assert not other_port.ok and "not in the network allowlist" in other_port.content
    redirected = ws.call("web_fetch", {"url": f"http://127.0.0.1:{page_server}/away"})
    assert not redirected.ok and "example.invalid is not in the network allowlist" in (
        redirected.content
    )
    assert not ws.call("web_fetch", {"url": "file:///etc/passwd"}).ok


def test_web_fetch_refuses_internal_addresses_behind_names(
    workspace_factory: WorkspaceFactory, page_server: int
) -> None:
    ws = workspace_factory("local", network_allowlist=["localhost"])
    result = ws.call("web_fetch", {"url": f"http://localhost:{page_server}/"})
    assert not result.ok and "internal address" in result.content


# --- the workspace as a whole ----------------------------------------------------------------


PERSONA = Persona(
    id="p-1",
    name="Dana Whitfield",
    role="Data Engineer",
    industry="Logistics",
    expertise=["SQL", "Airflow"],
    experience_level="senior",
    communication_style="terse",
    work_context="nightly batch jobs",
)


def test_open_lays_out_template_persona_and_fixtures(
    workspace_factory: WorkspaceFactory,
) -> None:
    ws = workspace_factory("local", open_now=False)
    ws.open([FixtureFile(path="data/input.csv", content="a,b\n1,2\n")], PERSONA)
    assert ws.list_files() == ["AGENTS.md", "MEMORY.md", "TOOLS.md", "USER.md", "data/input.csv"]
    user = ws.call("read", {"path": "USER.md"}).content
    assert "Dana Whitfield" in user and "SQL, Airflow" in user and "{{" not in user
    assert run(ws, "cat data/input.csv") == "a,b\n1,2\n"


def test_reset_restores_template_and_kills_processes(local_ws: SandboxWorkspace) -> None:
    local_ws.call("write", {"path": "scratch.txt", "content": "temporary"})
    local_ws.call("edit", {"path": "MEMORY.md", "old_string": "Nothing yet.", "new_string": "X"})
    local_ws.call("process", {"action": "start", "command": "sleep 300"})
    local_ws.open([FixtureFile(path="f.txt", content="fresh")])
    assert local_ws.list_files() == ["AGENTS.md", "MEMORY.md", "TOOLS.md", "USER.md", "f.txt"]
    assert "Nothing yet." in local_ws.call("read", {"path": "MEMORY.md"}).content
    assert local_ws.call("process", {"action": "list"}).content == "No background processes."
    assert run(local_ws, "ps -eo args | grep -c '[s]leep 300' || true") == "0\n"
    again = local_ws.call("process", {"action": "start", "command": "echo second life"})
    assert again.content.startswith("Started p1")
    deadline = time.monotonic() + 5
    seen = status = ""
    while "exited" not in status and time.monotonic() < deadline:
        status = local_ws.call("process", {"action": "poll", "id": "p1"}).content
        seen += status
        time.sleep(0.05)
    assert status.startswith("p1 exited with code 0") and "second life" in seen


def test_checks(local_ws: SandboxWorkspace) -> None:
    local_ws.call("write", {"path": "out/report.md", "content": "total: 42\n"})
    passed = [
        local_ws.run_check(Check(kind="file_exists", path="out/report.md")),
        local_ws.run_check(Check(kind="file_exists", path="out")),
        local_ws.run_check(Check(kind="file_contains", path="out/report.md", text="total: 42")),
        local_ws.run_check(Check(kind="command_succeeds", command="grep -q 42 out/report.md")),
    ]
    assert all(r.passed for r in passed), passed
    failed = [
        local_ws.run_check(Check(kind="file_exists", path="out/missing.md")),
        local_ws.run_check(Check(kind="file_contains", path="out/report.md", text="43")),
        local_ws.run_check(Check(kind="command_succeeds", command="exit 2")),
        local_ws.run_check(Check(kind="file_exists", path="../etc/passwd")),
    ]
    assert not any(r.passed for r in failed), failed
    assert failed[2].detail.startswith("exit 2")


def test_unknown_tool_and_bad_arguments(local_ws: SandboxWorkspace) -> None:
    unknown = local_ws.call("rm_rf", {})
    assert not unknown.ok and unknown.content.startswith("Error: unknown tool 'rm_rf'")
    bad = local_ws.call("exec", {"cmd": "ls"})
    assert not bad.ok and "'command' is required" in bad.content
    wrong_type = local_ws.call("read", {"path": ["a"]})
    assert not wrong_type.ok and "'path'" in wrong_type.content
    assert not local_ws.call("write", "not a dict").ok  # type: ignore[arg-type]


def test_schemas_and_lifecycle(workspace_factory: WorkspaceFactory, tmp_path: Path) -> None:
    ws = workspace_factory("local", open_now=False)
    names = {s["function"]["name"] for s in ws.tool_schemas()}
    assert {"exec", "process", "read", "write", "edit", "web_fetch"} <= names
    with pytest.raises(BackendError, match="not open"):
        ws.call("exec", {"command": "true"})
    with ws:
        ws.open()
        session_dir = ws.session_dir
        assert session_dir.parent == tmp_path / "sandboxes"
        assert session_dir.name.startswith("ise-sbx-") and (session_dir / "owner.json").exists()
    assert not session_dir.exists()
    ws.close()  # idempotent
    with pytest.raises(BackendError, match="closed"):
        ws.call("exec", {"command": "true"})
    with pytest.raises(BackendError, match="closed"):
        ws.open()


def test_the_sandbox_survives_kill_all_from_inside(local_ws: SandboxWorkspace) -> None:
    result = local_ws.call("exec", {"command": "kill -9 -1; kill -9 1; echo still here"})
    assert "still here" in result.content or not result.ok
    assert run(local_ws, "echo alive") == "alive\n"


def test_a_dead_sandbox_is_restarted_with_its_files(local_ws: SandboxWorkspace) -> None:
    assert isinstance(local_ws, LocalWorkspace) and local_ws.host_pid is not None
    local_ws.call("write", {"path": "kept.txt", "content": "survives"})
    os.kill(local_ws.host_pid, signal.SIGKILL)
    failed = local_ws.call("exec", {"command": "true"})
    assert not failed.ok and "the sandbox stopped" in failed.content
    assert run(local_ws, "cat kept.txt") == "survives"


def test_a_workspace_outlives_the_thread_that_opened_it(
    workspace_factory: WorkspaceFactory,
) -> None:
    opened: list[SandboxWorkspace] = []
    thread = threading.Thread(target=lambda: opened.append(workspace_factory("local")))
    thread.start()
    thread.join()
    time.sleep(0.2)  # PR_SET_PDEATHSIG would have fired by now
    assert run(opened[0], "echo still alive") == "still alive\n"
