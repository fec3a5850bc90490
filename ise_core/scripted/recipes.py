"""Recipes of real tool calls for the scripted agent: one family per domain, and the units that
satisfy an intent's checks.

A ``Unit`` is a piece of work (write a script and run it; set up a repository; draft a
message) made of ``Step``s; each step is one or more messages of tool calls (``Phase``s). A
unit may have a ``slip``: the same work done with a realistic mistake (a syntax error in a
script it wrote, a wrong path, a missing directory, a bad flag, an edit that does not match,
a wrong notes path). A slipping step carries a ``Recovery`` that is planned from the *real*
error text the workspace returned (e.g. the line number in a traceback), so the fix follows
what actually happened.

Every command here is chosen to give the same output on every run (no timestamps, sizes of
directories, process times or random ordering), so scripted episodes are reproducible.
"""

from __future__ import annotations

import random
import re
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from ise_core.scripted.content import (
    broken_variant,
    file_content,
    python_script,
    slug_words,
)

# Fixed commit dates keep commit hashes, and so every later output, reproducible.
GIT_ENV = (
    "GIT_AUTHOR_DATE='2024-05-06T09:00:00+00:00' GIT_COMMITTER_DATE='2024-05-06T09:00:00+00:00'"
)


@dataclass(frozen=True)
class Call:
    """One tool call with canonical argument names (mapped onto the real schema later)."""

    name: str
    args: dict[str, Any]


Phase = tuple[Call, ...]


@dataclass(frozen=True)
class Recovery:
    """How a slipping step recovers, planned from the real error text of its last call."""

    kind: str
    plan: Callable[[str], tuple[Phase, ...]]
    explain: str


@dataclass(frozen=True)
class Step:
    phases: tuple[Phase, ...]
    done: str = ""
    recovery: Recovery | None = None
    check: bool = False  # a verification: one call per check of the intent, run at once
    labels: tuple[str, ...] = ()  # what each call of a verification checks


@dataclass(frozen=True)
class Unit:
    steps: tuple[Step, ...]
    slip: tuple[Step, ...] | None = None
    artifacts: tuple[str, ...] = ()
    runs: tuple[str, ...] = ()


def ex(command: str) -> Call:
    return Call("exec", {"command": command})


def rd(path: str, offset: int | None = None, limit: int | None = None) -> Call:
    args: dict[str, Any] = {"path": path}
    if offset is not None:
        args["offset"] = offset
    if limit is not None:
        args["limit"] = limit
    return Call("read", args)


def wr(path: str, content: str) -> Call:
    return Call("write", {"path": path, "content": content})


def ed(path: str, old: str, new: str) -> Call:
    return Call("edit", {"path": path, "old_string": old, "new_string": new})


def one(call: Call, done: str = "", recovery: Recovery | None = None) -> Step:
    return Step(((call,),), done, recovery)


def parent(path: str) -> str:
    folder = str(PurePosixPath(path).parent)
    return "." if folder in ("", ".") else folder


_LINE = re.compile(r"line (\d+)|:(\d+):")


def error_line(error: str) -> int | None:
    match = _LINE.search(error)
    if not match:
        return None
    return int(match.group(1) or match.group(2))


# --- recoveries -------------------------------------------------------------------------------


def syntax_recovery(path: str, old: str, new: str, run: str) -> Recovery:
    def plan(error: str) -> tuple[Phase, ...]:
        line = error_line(error)
        look = rd(path, max(1, line - 3), 7) if line else rd(path)
        return ((look,), (ed(path, old, new),), (ex(run),))

    return Recovery("syntax_error", plan, f"fixed the syntax error in `{path}` and re-ran it")


def missing_dir_recovery(folder: str, retry: Call) -> Recovery:
    def plan(error: str) -> tuple[Phase, ...]:
        return ((ex(f"mkdir -p {folder}"),), (retry,))

    return Recovery("missing_dir", plan, f"created the missing `{folder}/` directory and retried")


def wrong_path_recovery(folder: str, retry: Call) -> Recovery:
    def plan(error: str) -> tuple[Phase, ...]:
        return ((ex(f"ls -1 {folder}"),), (retry,))

    return Recovery("wrong_path", plan, f"looked up the right path under `{folder}` and retried")


def bad_flag_recovery(retry: Call) -> Recovery:
    def plan(error: str) -> tuple[Phase, ...]:
        return ((retry,),)

    return Recovery("bad_flag", plan, "used the correct option and ran it again")


def bad_edit_recovery(path: str, old: str, new: str, look: Call) -> Recovery:
    def plan(error: str) -> tuple[Phase, ...]:
        return ((look,), (ed(path, old, new),))

    return Recovery("bad_edit", plan, f"re-read `{path}` and applied the edit to the exact text")


# --- units for the intent's checks -------------------------------------------------------------


@dataclass
class TargetFile:
    path: str
    texts: list[str] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)


def script_unit(target: TargetFile, topic: str, rng: random.Random, existing: str | None) -> Unit:
    """Write a file the checks name, run what the checks run on it, with a syntax slip."""
    path = target.path
    content = file_content(path, topic, target.texts, rng)
    if existing is not None and not target.runs and path.endswith((".md", ".txt", ".csv")):
        extra = "".join(f"{text}\n" for text in target.texts if text not in existing)
        content = existing + ("" if existing.endswith("\n") else "\n") + extra
    write = one(wr(path, content), f"wrote `{path}`")
    runs = tuple(target.runs)
    if not runs:
        if rng.random() < 0.5:
            return Unit((write,), None, (path,))
        check = one(rd(path), f"read `{path}` back to check it")
        typo = _typo(path)
        slip = (
            write,
            Step(
                ((rd(typo),),),
                f"read `{path}` back to check it",
                wrong_path_recovery(parent(path), rd(path)),
            ),
        )
        return Unit((write, check), slip, (path,))
    steps = [write] + [one(ex(cmd), f"ran `{cmd}`") for cmd in runs]
    breakage = broken_variant(path, content)
    slip_steps: tuple[Step, ...] | None = None
    if breakage is not None:
        first = runs[0]
        slip_steps = (
            one(wr(path, breakage.content), f"wrote `{path}`"),
            one(
                ex(first),
                f"ran `{first}`",
                syntax_recovery(path, breakage.old, breakage.new, first),
            ),
            *[one(ex(cmd), f"ran `{cmd}`") for cmd in runs[1:]],
        )
    return Unit(tuple(steps), slip_steps, (path,), runs)


def directory_unit(folder: str) -> Unit:
    step = one(ex(f"mkdir -p {folder} && ls -d {folder}"), f"created `{folder}/`")
    return Unit((step,), None, (folder,))


def git_unit(folder: str, persona_name: str, files: Sequence[str]) -> Unit:
    """A repository with one commit, so ``git -C <dir> log --oneline -1`` succeeds."""
    readme = f"{folder}/README.md"
    identity = f"-c user.name={shlex.quote(persona_name)} -c user.email=assistant@example.com"
    # Commit only when something is staged, so running the unit again is harmless.
    commit = (
        f"git -C {folder} add -A && (git -C {folder} diff --cached --quiet || {GIT_ENV} "
        f"git -C {folder} {identity} commit -q -m 'Initial commit')"
    )
    steps: list[Step] = [
        one(ex(f"git init -q -b main {folder}"), f"initialised a git repository in `{folder}`"),
        one(wr(f"{folder}/.gitignore", "__pycache__/\n*.log\n.env\n"), "added a `.gitignore`"),
    ]
    if readme not in files:
        steps.append(
            one(wr(readme, f"# {slug_words(folder)}\n\nTracked work files.\n"), f"wrote `{readme}`")
        )
    commit_step = one(ex(commit + f" && git -C {folder} log --format=%s"), "committed the work")
    bad = (
        f"git -C {folder} add -A && {GIT_ENV} git -C {folder} {identity} "
        f"commit -q --mesage 'Initial commit'"
    )
    slip = (
        *steps,
        Step(
            ((ex(bad),),),
            "committed the work",
            bad_flag_recovery(ex(commit + f" && git -C {folder} log --format=%s")),
        ),
    )
    return Unit(
        (*steps, commit_step), tuple(slip), (folder,), (f"git -C {folder} log --format=%s",)
    )


def _typo(path: str) -> str:
    pure = PurePosixPath(path)
    stem = pure.stem
    swapped = stem[:-2] + stem[-1] + stem[-2] if len(stem) >= 3 else stem + "s"
    return str(pure.with_name(swapped + pure.suffix))


# --- one recipe family per domain --------------------------------------------------------------


@dataclass(frozen=True)
class TaskInfo:
    domain: str
    slug: str
    title: str
    persona: str


def _analysis(task: TaskInfo, rng: random.Random) -> Unit:
    script = f"analysis/{task.slug}.py"
    report = f"analysis/{task.slug}.md"
    content = python_script(task.slug, [task.title], rng, writes=report)
    run = f"python3 {script}"
    steps = (
        one(wr(script, content), f"wrote `{script}`"),
        one(ex(run), f"ran `{run}`"),
        one(rd(report), f"checked `{report}`"),
    )
    breakage = broken_variant(script, content)
    assert breakage is not None
    slip = (
        one(wr(script, breakage.content), f"wrote `{script}`"),
        one(ex(run), f"ran `{run}`", syntax_recovery(script, breakage.old, breakage.new, run)),
        steps[2],
    )
    return Unit(steps, slip, (script, report), (run,))


def _code(task: TaskInfo, rng: random.Random) -> Unit:
    module = f"src/{task.slug.replace('-', '_')}.py"
    test = f"tests/test_{task.slug.replace('-', '_')}.py"
    name = task.slug.replace("-", "_")
    values = [rng.randint(2, 40) for _ in range(4)]
    code = (
        f'"""{task.title.capitalize()}."""\n\n\n'
        f"def total(values):\n    return sum(values)\n\n\n"
        f"def average(values):\n    return total(values) / len(values) if values else 0.0\n"
    )
    test_code = (
        "import sys\nfrom pathlib import Path\n\n"
        "sys.path.insert(0, str(Path(__file__).resolve().parent.parent / 'src'))\n\n"
        f"from {name} import average, total  # noqa: E402\n\n"
        f"VALUES = {values!r}\n"
        f"assert total(VALUES) == {sum(values)}\n"
        f"assert abs(average(VALUES) - {sum(values) / len(values)!r}) < 1e-9\n"
        "assert average([]) == 0.0\n"
        "print('3 checks passed')\n"
    )
    run = f"python3 {test}"
    steps = (
        one(wr(module, code), f"wrote `{module}`"),
        one(wr(test, test_code), f"wrote `{test}`"),
        one(ex(run), f"ran the tests with `{run}`"),
    )
    wrong = ex(f"python3 {PurePosixPath(test).name}")
    slip = (
        steps[0],
        steps[1],
        Step(((wrong,),), f"ran the tests with `{run}`", wrong_path_recovery("tests", ex(run))),
    )
    return Unit(steps, slip, (module, test), (run,))


def _files(task: TaskInfo, rng: random.Random) -> Unit:
    csv = f"data/{task.slug}.csv"
    tool = f"tools/{task.slug.replace('-', '_')}_to_json.py"
    out = f"out/{task.slug}/records.json"
    rows = "\n".join(f"{task.slug}-{i},{rng.randint(1, 500)}" for i in range(1, 6))
    converter = (
        "import csv\nimport json\nimport sys\n\n"
        f"with open({csv!r}, newline='', encoding='utf-8') as handle:\n"
        "    records = list(csv.DictReader(handle))\n"
        f"with open({out!r}, 'w', encoding='utf-8') as handle:\n"
        "    json.dump(records, handle, indent=2)\n"
        "print(f'converted {len(records)} records', file=sys.stdout)\n"
    )
    run = f"python3 {tool}"
    validate = f"python3 -m json.tool {out} | head -n 6"
    steps = (
        one(wr(csv, f"name,amount\n{rows}\n"), f"wrote `{csv}`"),
        one(wr(tool, converter), f"wrote `{tool}`"),
        one(ex(f"mkdir -p out/{task.slug} && {run}"), f"ran `{run}`"),
        one(ex(validate), f"validated `{out}`"),
    )
    slip = (
        steps[0],
        steps[1],
        Step(((ex(run),),), f"ran `{run}`", missing_dir_recovery(f"out/{task.slug}", ex(run))),
        steps[3],
    )
    return Unit(steps, slip, (csv, tool, out), (run,))


def _source(task: TaskInfo, rng: random.Random) -> Unit:
    folder = f"repos/{task.slug}"
    base = git_unit(folder, task.persona, [])
    changelog = f"{folder}/CHANGELOG.md"
    branch = f"feature/{task.slug}"[:48]
    identity = f"-c user.name={shlex.quote(task.persona)} -c user.email=assistant@example.com"
    commit = (
        f"git -C {folder} switch -q -c {branch} && git -C {folder} add -A && {GIT_ENV} "
        f"git -C {folder} {identity} commit -q -m 'Add changelog' "
        f"&& git -C {folder} log --format=%s"
    )
    extra = (
        one(
            wr(changelog, f"# Changelog\n\n## Unreleased\n- {task.title}\n"), f"wrote `{changelog}`"
        ),
        one(ex(commit), f"committed the changelog on branch `{branch}`"),
    )
    slip = (*base.slip, *extra) if base.slip else None
    return Unit((*base.steps, *extra), slip, (folder, changelog), base.runs)


def _automation(task: TaskInfo, rng: random.Random) -> Unit:
    job = f"jobs/{task.slug}.sh"
    log = f"logs/{task.slug}.log"
    script = (
        "#!/bin/sh\nset -eu\n"
        f'echo "job {task.slug}: start" > {log}\n'
        f"find . -maxdepth 1 -type d | sort >> {log}\n"
        f'echo "job {task.slug}: done" >> {log}\n'
        f'echo "{task.slug} finished; log in {log}"\n'
    )
    loop = f"jobs/{task.slug}-scheduler.sh"
    loop_body = (
        f'#!/bin/sh\necho "scheduler for {task.slug} ready" > logs/{task.slug}-scheduler.log\n'
        "exec sleep 600\n"
    )
    run = f"sh {job}"
    wait = (
        f"for i in $(seq 1 50); do [ -s logs/{task.slug}-scheduler.log ] && break; "
        f"sleep 0.1; done; cat logs/{task.slug}-scheduler.log"
    )
    steps = (
        one(wr(job, script), f"wrote `{job}`"),
        one(ex(f"mkdir -p logs && {run}"), f"ran `{run}`"),
        one(wr(loop, loop_body), f"wrote `{loop}`"),
        one(
            Call("process", {"action": "start", "command": f"sh {loop}"}),
            "started the scheduler in the background",
        ),
        one(ex(wait), "confirmed the scheduler is up"),
        one(Call("process", {"action": "kill", "id": "{proc}"}), "stopped the scheduler again"),
    )
    slip = (
        steps[0],
        Step(((ex(run),),), f"ran `{run}`", missing_dir_recovery("logs", ex(run))),
        *steps[2:],
    )
    return Unit(steps, slip, (job, log), (run,))


def _web(task: TaskInfo, rng: random.Random) -> Unit:
    page = f"pages/{task.slug}.html"
    scraper = f"scrape/{task.slug.replace('-', '_')}.py"
    out = f"out/{task.slug}.csv"
    items = [(f"{slug_words(task.slug).title()} {i}", rng.randint(10, 900)) for i in range(1, 5)]
    html = (
        "<html><body><ul>\n"
        + "".join(
            f'  <li class="item"><span class="name">{name}</span> '
            f'<span class="price">{price}</span></li>\n'
            for name, price in items
        )
        + "</ul></body></html>\n"
    )
    code = (
        "import csv\nfrom html.parser import HTMLParser\n\n\n"
        "class Items(HTMLParser):\n"
        "    def __init__(self):\n        super().__init__()\n        self.field = None\n"
        "        self.rows = []\n\n"
        "    def handle_starttag(self, tag, attrs):\n"
        "        cls = dict(attrs).get('class')\n"
        "        if cls == 'name':\n            self.rows.append({})\n"
        "        self.field = cls if cls in ('name', 'price') else None\n\n"
        "    def handle_data(self, data):\n"
        "        if self.field and self.rows:\n"
        "            self.rows[-1][self.field] = data.strip()\n"
        "            self.field = None\n\n\n"
        f"parser = Items()\nwith open({page!r}, encoding='utf-8') as handle:\n"
        "    parser.feed(handle.read())\n"
        f"with open({out!r}, 'w', newline='', encoding='utf-8') as handle:\n"
        "    writer = csv.DictWriter(handle, fieldnames=['name', 'price'])\n"
        "    writer.writeheader()\n    writer.writerows(parser.rows)\n"
        "print(f'extracted {len(parser.rows)} items')\n"
    )
    run = f"mkdir -p out && python3 {scraper}"
    steps = (
        one(wr(page, html), f"saved the page as `{page}`"),
        one(wr(scraper, code), f"wrote `{scraper}`"),
        one(ex(run), f"ran `python3 {scraper}`"),
        one(ex(f"head -n 5 {out}"), f"checked `{out}`"),
    )
    slip = (
        *steps[:3],
        Step(
            ((ex(f"head --linez 5 {out}"),),),
            f"checked `{out}`",
            bad_flag_recovery(ex(f"head -n 5 {out}")),
        ),
    )
    return Unit(steps, slip, (page, scraper, out), (f"python3 {scraper}",))


def _comms(task: TaskInfo, rng: random.Random) -> Unit:
    draft = f"drafts/{task.slug}.md"
    text = (
        f"Subject: {task.title.capitalize()}\n\nHi all,\n\n"
        f"A short update on {slug_words(task.slug)}: the first pass is done and the details are "
        "below. Please reply by Friday with any corrections.\n\n"
        f"- status: in progress\n- owner: {task.persona}\n\nThanks,\n{task.persona}\n"
    )
    steps = (
        one(wr(draft, text), f"drafted `{draft}`"),
        one(ex(f"wc -w {draft}"), "checked the length of the draft"),
        one(
            ed(draft, "- status: in progress", "- status: ready for review"),
            "marked it ready for review",
        ),
    )
    slip = (
        steps[0],
        Step(
            ((ex(f"wc -W {draft}"),),),
            "checked the length of the draft",
            bad_flag_recovery(ex(f"wc -w {draft}")),
        ),
        steps[2],
    )
    return Unit(steps, slip, (draft,), ())


def _media(task: TaskInfo, rng: random.Random) -> Unit:
    script = f"media/make_{task.slug.replace('-', '_')}.py"
    svg = f"media/{task.slug}.svg"
    bars = [rng.randint(10, 90) for _ in range(5)]
    code = (
        "import json\n\n"
        f"BARS = {bars!r}\n"
        "rects = ''.join(\n"
        '    f\'<rect x="{10 + i * 30}" y="{100 - h}" width="20" height="{h}"/>\'\n'
        "    for i, h in enumerate(BARS)\n)\n"
        'svg = (\'<svg xmlns="http://www.w3.org/2000/svg" width="170" height="110">\'\n'
        "       + rects + '</svg>')\n"
        f"with open({svg!r}, 'w', encoding='utf-8') as handle:\n    handle.write(svg + '\\n')\n"
        f"manifest = {{'file': {svg!r}, 'bars': len(BARS), 'width': 170, 'height': 110}}\n"
        f"with open({svg[:-4] + '.json'!r}, 'w', encoding='utf-8') as handle:\n"
        "    json.dump(manifest, handle, indent=2)\n"
        "print(json.dumps(manifest))\n"
    )
    run = f"python3 {script}"
    steps = (
        one(wr(script, code), f"wrote `{script}`"),
        one(ex(run), f"rendered `{svg}`"),
        one(ex(f"python3 -m json.tool {svg[:-4]}.json"), "validated the manifest"),
    )
    bad = code.replace("for i, h in enumerate(BARS)\n)", "for i, h in enumerate(BARS)\n")
    slip = (
        one(wr(script, bad), f"wrote `{script}`"),
        one(
            ex(run),
            f"rendered `{svg}`",
            syntax_recovery(
                script,
                "    for i, h in enumerate(BARS)\nsvg",
                "    for i, h in enumerate(BARS)\n)\nsvg",
                run,
            ),
        ),
        steps[2],
    )
    return Unit(steps, slip, (script, svg), (run,))


def _memory(task: TaskInfo, rng: random.Random) -> Unit:
    notes = f"memory/{task.slug}.md"
    query = slug_words(task.slug).split()[0] if slug_words(task.slug) else "notes"
    text = (
        f"# {task.title.capitalize()}\n\n"
        f"- {query}: keep decisions for {task.persona} here\n"
        f"- preferred format: short bullet points\n"
    )
    steps = (
        one(wr(notes, text), f"saved notes to `{notes}`"),
        one(Call("memory_search", {"query": query}), "searched the notes"),
        one(Call("memory_get", {"path": notes}), f"read back `{notes}`"),
    )
    wrong = f"memory/{task.slug}-notes.md"
    slip = (
        steps[0],
        Step(
            ((Call("memory_get", {"path": wrong}),),),
            f"read back `{notes}`",
            Recovery(
                "wrong_path",
                lambda error: (
                    (Call("memory_search", {"query": query}),),
                    (Call("memory_get", {"path": notes}),),
                ),
                "searched the notes for the right file and read it",
            ),
        ),
    )
    return Unit(steps, slip, (notes,), ())


def _infra(task: TaskInfo, rng: random.Random) -> Unit:
    script = f"ops/{task.slug}_check.sh"
    body = (
        "#!/bin/sh\nset -u\nstatus=0\n"
        "for dir in . ops; do\n"
        '  if [ -d "$dir" ]; then echo "ok: $dir"; else echo "missing: $dir"; status=1; fi\n'
        "done\n"
        'echo "files: $(find . -type f -not -path "./.git/*" | wc -l)"\n'
        'echo "shell: $(command -v sh)"\n'
        "exit $status\n"
    )
    run = f"sh {script}"
    steps = (
        one(wr(script, body), f"wrote `{script}`"),
        one(ex(run), f"ran `{run}`"),
        one(ex(f"wc -c {script}"), "checked the script size"),
    )
    slip = (
        *steps[:2],
        Step(
            ((ex(f"wc --bytez {script}"),),),
            "checked the script size",
            bad_flag_recovery(ex(f"wc -c {script}")),
        ),
    )
    return Unit(steps, slip, (script,), (run,))


RECIPES: dict[str, Callable[[TaskInfo, random.Random], Unit]] = {
    "intelligence-core": _analysis,
    "code-runtime": _code,
    "file-io": _files,
    "source-chain": _source,
    "automation-flow": _automation,
    "web-extraction": _web,
    "comms-social": _comms,
    "multimedia": _media,
    "agent-memory": _memory,
    "system-infrastructure": _infra,
}


def recipe_unit(task: TaskInfo, rng: random.Random) -> Unit:
    """The unit of work for ``task`` from its domain's family (analysis for unknown domains)."""
    return RECIPES.get(task.domain, _analysis)(task, rng)


__all__ = [
    "GIT_ENV",
    "RECIPES",
    "Call",
    "Phase",
    "Recovery",
    "Step",
    "TargetFile",
    "TaskInfo",
    "Unit",
    "directory_unit",
    "ed",
    "error_line",
    "ex",
    "git_unit",
    "one",
    "rd",
    "recipe_unit",
    "script_unit",
    "wr",
]
