"""The agent's tool set. Each function here is one tool; its schema comes from the signature.

Commands run inside the sandbox; file and memory tools work on the shared workspace directory
from the host through ``ConfinedDir`` (no ``..``, no symlink out); ``web_fetch`` (behind the
allowlist) and ``web_search`` (when a provider is configured) run on the host because the
sandbox has no network. Failures are raised as
``ToolError`` and reach the agent as ``Error: ...`` observations.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Literal, Protocol

from ise_core.config import WorkspaceSettings
from ise_core.errors import FetchError, FileAccessError, SearchError, ToolError
from ise_core.workspace.base import ExecOutcome, ProcessInfo, ToolResult
from ise_core.workspace.confined import ConfinedDir
from ise_core.workspace.toolkit import tool
from ise_core.workspace.webfetch import fetch
from ise_core.workspace.websearch import render, search

DEFAULT_READ_LINES = 2000
MEMORY_FILE = "MEMORY.md"
MEMORY_DIR = "memory"


class ToolContext(Protocol):
    """What the tools need from a workspace (``SandboxWorkspace`` provides it)."""

    settings: WorkspaceSettings
    base_dir: Path
    files: ConfinedDir
    procs: ConfinedDir

    def run_command(
        self, command: str, *, timeout_s: float, workdir: str | None = None
    ) -> ExecOutcome: ...

    def start_process(self, command: str, workdir: str | None = None) -> ProcessInfo: ...

    def refresh_processes(self) -> list[ProcessInfo]: ...

    def kill_process(self, proc_id: str) -> ProcessInfo | None: ...


def _max_file_bytes(ctx: ToolContext) -> int:
    return ctx.settings.max_file_mb * 1024 * 1024


def _read_text(ctx: ToolContext, path: str) -> str:
    try:
        data = ctx.files.read_bytes(path, _max_file_bytes(ctx))
    except FileAccessError as exc:
        raise ToolError(str(exc)) from None
    if b"\x00" in data[:8192]:
        raise ToolError(f"{path}: binary file ({len(data)} bytes); inspect it with exec")
    # surrogateescape keeps bytes that are not UTF-8 exactly as they were on a write-back.
    return data.decode("utf-8", errors="surrogateescape")


def _write_text(ctx: ToolContext, path: str, text: str) -> int:
    data = text.encode("utf-8", errors="surrogateescape")
    if len(data) > _max_file_bytes(ctx):
        raise ToolError(f"{path}: {len(data)} bytes is over the {_max_file_bytes(ctx)}-byte limit")
    try:
        ctx.files.write_bytes(path, data)
    except FileAccessError as exc:
        raise ToolError(str(exc)) from None
    return len(data)


def _cap(ctx: ToolContext, text: str, hint: str) -> tuple[str, bool]:
    limit = ctx.settings.output_limit
    if len(text) <= limit:
        return text, False
    return f"{text[:limit]}\n[... truncated at {limit} characters; {hint}]", True


@tool(name="exec")
def exec_command(
    ctx: ToolContext, command: str, workdir: str | None = None, timeout: float | None = None
) -> ToolResult:
    """Run a shell command in the workspace and return its combined stdout and stderr.

    Args:
        command: The shell command line (run with /bin/sh -c).
        workdir: Directory to run in, relative to the workspace (default: its root).
        timeout: Seconds before the command and its children are killed (capped by the
            workspace's limit).
    """
    limit = ctx.settings.call_timeout_s
    timeout_s = limit if timeout is None else max(0.1, min(float(timeout), limit))
    outcome = ctx.run_command(command, timeout_s=timeout_s, workdir=workdir)
    output = outcome.output if outcome.output else "(no output)"
    if outcome.timed_out:
        content = f"Error: command timed out after {timeout_s:g}s and was killed\n{output}"
    elif outcome.exit_code != 0:
        content = f"Error: command exited with code {outcome.exit_code}\n{output}"
    else:
        content = output
    return ToolResult(
        ok=outcome.exit_code == 0 and not outcome.timed_out,
        content=content,
        exit_code=outcome.exit_code,
        duration_s=outcome.duration_s,
        truncated=outcome.truncated,
    )


def _status(info: ProcessInfo) -> str:
    if info.killed:
        return "killed"
    if info.exit_code is not None:
        return f"exited with code {info.exit_code}"
    return f"running for {time.time() - info.started:.1f}s"


def _find(ctx: ToolContext, proc_id: str | None) -> ProcessInfo:
    if not proc_id:
        raise ToolError("this action needs the process id (from 'start' or 'list')")
    for info in ctx.refresh_processes():
        if info.id == proc_id:
            return info
    raise ToolError(f"no background process {proc_id!r}; use action 'list'")


def _log_chunk(
    ctx: ToolContext, info: ProcessInfo, offset: int, limit: int
) -> tuple[str, int, int]:
    try:
        data, size = ctx.procs.read_tail(f"{info.id}.log", offset, limit)
    except FileAccessError as exc:
        raise ToolError(f"cannot read the output of {info.id}: {exc}") from None
    return data.decode("utf-8", errors="replace"), offset + len(data), size


@tool
def process(
    ctx: ToolContext,
    action: Literal["start", "poll", "read", "kill", "list"],
    command: str | None = None,
    id: str | None = None,
    offset: int | None = None,
    limit: int | None = None,
    workdir: str | None = None,
) -> ToolResult:
    """Manage background processes: start one, poll it for new output, read its output,
    kill it, or list them.

    Args:
        action: start (needs command), poll (status and new output), read (output from a byte
            offset), kill, or list.
        command: Shell command to start in the background (action start).
        id: The process id returned by start (actions poll, read, kill).
        offset: Byte offset into the output to read from (action read; default 0).
        limit: Maximum number of bytes to return (actions read and poll).
        workdir: Directory to start in, relative to the workspace (action start).
    """
    cap = ctx.settings.output_limit if limit is None else max(1, min(limit, 10 * 1024 * 1024))
    if action == "start":
        if not command or not command.strip():
            raise ToolError("action 'start' needs a command")
        info = ctx.start_process(command, workdir)
        return ToolResult(ok=True, content=f"Started {info.id}: {command}")
    if action == "list":
        infos = ctx.refresh_processes()
        if not infos:
            return ToolResult(ok=True, content="No background processes.")
        lines = [f"{i.id}\t{_status(i)}\t{i.command}" for i in infos]
        return ToolResult(ok=True, content="\n".join(lines))
    info = _find(ctx, id)
    if action == "kill":
        was_running = info.running
        ctx.kill_process(info.id)
        if not was_running:
            return ToolResult(
                ok=False, content=f"Error: {info.id} is not running ({_status(info)})"
            )
        return ToolResult(ok=True, content=f"Killed {info.id}")
    if action == "poll":
        text, info.cursor, size = _log_chunk(ctx, info, info.cursor, cap)
        more = f" ({size - info.cursor} more bytes: poll again)" if size > info.cursor else ""
        body = text if text else "(no new output)"
        return ToolResult(ok=True, content=f"{info.id} {_status(info)}{more}\n{body}")
    start = max(0, offset or 0)
    text, end, size = _log_chunk(ctx, info, start, cap)
    footer = f"[bytes {start}-{end} of {size}; {info.id} {_status(info)}]"
    return ToolResult(ok=True, content=f"{text}\n{footer}" if text else footer)


@tool
def read(
    ctx: ToolContext, path: str, offset: int | None = None, limit: int | None = None
) -> ToolResult:
    """Read a text file from the workspace.

    Args:
        path: File path, relative to the workspace.
        offset: First line to return, counting from 1 (default 1).
        limit: Maximum number of lines to return (default 2000).
    """
    text = _read_text(ctx, path)
    lines = text.splitlines(keepends=True)
    first = 1 if offset is None else offset
    if first < 1:
        raise ToolError("offset counts lines from 1")
    if not lines:
        return ToolResult(ok=True, content="(empty file)")
    if first > len(lines):
        raise ToolError(f"{path}: offset {first} is past the end of the file ({len(lines)} lines)")
    count = DEFAULT_READ_LINES if limit is None else max(1, limit)
    chosen = lines[first - 1 : first - 1 + count]
    body = (
        "".join(chosen).encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
    )
    after = first - 1 + len(chosen)
    content, truncated = _cap(ctx, body, "read a smaller range with offset and limit")
    if after < len(lines) and not truncated:
        content += f"\n[... {len(lines) - after} more lines; continue with offset={after + 1}]"
    return ToolResult(ok=True, content=content, truncated=truncated)


@tool
def write(ctx: ToolContext, path: str, content: str) -> str:
    """Create or overwrite a file in the workspace (parent directories are created).

    Args:
        path: File path, relative to the workspace.
        content: The complete new content of the file.
    """
    size = _write_text(ctx, path, content)
    return f"Wrote {size} bytes to {path}"


@tool
def edit(
    ctx: ToolContext, path: str, old_string: str, new_string: str, replace_all: bool = False
) -> str:
    """Replace an exact piece of text in a file. The text must occur exactly once unless
    replace_all is set.

    Args:
        path: File path, relative to the workspace.
        old_string: The exact text to replace, including whitespace.
        new_string: The text to put in its place.
        replace_all: Replace every occurrence instead of requiring exactly one.
    """
    if not old_string:
        raise ToolError("old_string must not be empty")
    text = _read_text(ctx, path)
    count = text.count(old_string)
    if count == 0:
        raise ToolError(f"old_string was not found in {path}")
    if count > 1 and not replace_all:
        raise ToolError(
            f"old_string occurs {count} times in {path}; include more surrounding text to make "
            "it unique, or set replace_all"
        )
    _write_text(ctx, path, text.replace(old_string, new_string))
    return f"Edited {path}: replaced {count} occurrence{'s' if count > 1 else ''}"


def _memory_files(ctx: ToolContext) -> list[str]:
    names = [MEMORY_FILE] if ctx.files.kind(MEMORY_FILE) == "file" else []
    if ctx.files.kind(MEMORY_DIR) == "directory":
        names += [p for p in ctx.files.list_files(under=MEMORY_DIR) if p.endswith(".md")]
    return names


_WORD = re.compile(r"\w+")


@tool
def memory_search(ctx: ToolContext, query: str, max_results: int = 5) -> ToolResult:
    """Search your notes (MEMORY.md and memory/*.md in the workspace) for lines about a topic.

    Args:
        query: Words to look for.
        max_results: Maximum number of matching lines to return.
    """
    terms = {w.lower() for w in _WORD.findall(query)}
    if not terms:
        raise ToolError("query must contain at least one word")
    hits: list[tuple[float, str, int, str]] = []
    for name in _memory_files(ctx):
        for number, line in enumerate(_read_text(ctx, name).splitlines(), start=1):
            words = {w.lower() for w in _WORD.findall(line)}
            score = len(terms & words) + (0.5 if query.lower() in line.lower() else 0.0)
            if score > 0:
                hits.append((-score, name, number, line.strip()))
    if not hits:
        return ToolResult(ok=True, content=f"No notes match {query!r}.")
    hits.sort()
    shown = [f"{name}:{number}: {line}" for _, name, number, line in hits[: max(1, max_results)]]
    return ToolResult(ok=True, content="\n".join(shown))


@tool
def memory_get(
    ctx: ToolContext, path: str, from_line: int | None = None, lines: int | None = None
) -> ToolResult:
    """Read one of your notes files (MEMORY.md or a file under memory/), whole or in part.

    Args:
        path: MEMORY.md or memory/<name>.md.
        from_line: First line to return, counting from 1.
        lines: Number of lines to return.
    """
    normalized = "/".join(ctx.files.parts(path))
    if normalized != MEMORY_FILE and not normalized.startswith(f"{MEMORY_DIR}/"):
        raise ToolError(f"{path}: notes live in {MEMORY_FILE} or under {MEMORY_DIR}/")
    text = _read_text(ctx, normalized)
    all_lines = text.splitlines()
    first = max(1, from_line or 1)
    chosen = all_lines[first - 1 : None if lines is None else first - 1 + max(1, lines)]
    body = "\n".join(chosen) if chosen else "(no lines in that range)"
    content, truncated = _cap(ctx, body, "ask for fewer lines")
    return ToolResult(ok=True, content=content, truncated=truncated)


@tool
def web_fetch(ctx: ToolContext, url: str, max_chars: int = 20000) -> ToolResult:
    """Fetch a web page or file over HTTP(S) and return it as text (HTML is reduced to text).

    Args:
        url: The http:// or https:// URL to fetch.
        max_chars: Maximum number of characters to return.
    """
    try:
        status, content_type, text = fetch(
            url, ctx.settings.network_allowlist, timeout_s=min(30.0, ctx.settings.call_timeout_s)
        )
    except FetchError as exc:
        raise ToolError(str(exc)) from None
    cap = max(1, min(max_chars, ctx.settings.output_limit))
    truncated = len(text) > cap
    body = text[:cap] + (f"\n[... truncated at {cap} characters]" if truncated else "")
    header = f"HTTP {status} {content_type}".strip()
    return ToolResult(ok=True, content=f"{header}\n\n{body}", truncated=truncated)


def _search_offered(settings: WorkspaceSettings) -> bool:
    return settings.web_search.provider != "off"


@tool(offered_when=_search_offered)
def web_search(ctx: ToolContext, query: str, count: int | None = None) -> ToolResult:
    """Search the web and return the top results, each with title, URL and snippet.

    Args:
        query: What to search for.
        count: Number of results to return (1-10).
    """
    settings = ctx.settings.web_search
    wanted = settings.max_results if count is None else max(1, min(int(count), 10))
    try:
        results = search(
            settings,
            query,
            wanted,
            network_allowlist=ctx.settings.network_allowlist,
            base_dir=ctx.base_dir,
        )
    except SearchError as exc:
        raise ToolError(str(exc)) from None
    return ToolResult(ok=True, content=render(query, settings.provider, results))
