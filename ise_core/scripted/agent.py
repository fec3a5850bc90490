"""Scripted ``agent`` role: a deterministic program that does an intent's work with real tools.

It is a program, not a model: it cannot read the user's request for meaning, so it is handed
the intent in its ``EpisodeBrief`` and treats the intent's checks as its target. Per
user turn it plans steps of real tool calls (ise_core.scripted.recipes):

- turn 1: look around (file listing, notes search, a fixture or USER.md), note the request in
  ``memory/requests.md``, and start with one unit of a domain recipe;
- a turn that names a file the checks need: build it (write it, run or read it back);
- a turn with a detail but no file: note it, or add it to a script already written and
  re-run that script, or do one more recipe unit;
- "show me …" / "a usage note …": read the file / write ``USAGE.md``;
- "double-check": finish what is left, then run every check's command at once (one message
  of parallel calls) and report each real result; "… still fails, fix it": rebuild the
  targets whose checks failed and verify again.

With probability ``brief.shape.mistake_rate`` per turn (seeded, stable) one unit is
done with a realistic mistake; the tool result is a real failure from the workspace, and the
recovery is planned from that error text. The reply reports what was done, quotes the real
error and the fix, and shows the last output. With ``brief.recover`` false (the careless
profile ``ise eval`` measures as a baseline) it never recovers: no fix after an error, and no
rebuild when the user says a check still fails. Each turn stays within
``brief.max_steps_per_turn`` model calls.

The program is stateless: where it is in its plan it finds by following its own tool-call
messages of the current turn through the plan, in order, with the results that answer them
(``replay``); the calls' ids only have to be unique, nothing is read back from them.
"""

from __future__ import annotations

import hashlib
import random
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ise_core.records import FunctionCall, Intent, Message, ToolCall, canonical_json
from ise_core.scripted import EpisodeBrief, ScriptedCall, register
from ise_core.scripted.recipes import (
    Call,
    Phase,
    Recovery,
    Step,
    TargetFile,
    TaskInfo,
    Unit,
    directory_unit,
    ed,
    ex,
    git_unit,
    one,
    rd,
    recipe_unit,
    script_unit,
    wr,
)

NOTES = "memory/requests.md"
NOTES_MARKER = "## Details\n"
NOTE_SHARE = 0.3  # share of detail turns on which the detail is also written to the notes
RECIPE_SHARE = 0.2  # share of later turns without a check target that get a recipe unit
SLIP_SLACK = 3  # model calls a recovery may add to a turn
_ID = re.compile(r"^call_(\d+)_(\d+)_(\d+)_(\d+)$")
_PROC = re.compile(r"^Started (\S+):")
_SCRIPT_RUN = re.compile(r"^(?:python3|node|sh) ([\w./-]+\.(?:py|js|sh))$")
_JSON_TOOL = re.compile(r"^python3 -m json\.tool ([\w./-]+\.json)$")
_GIT_LOG = re.compile(r"^git -C ([\w./-]+) log\b")
_TEST_DIR = re.compile(r"^test -d ([\w./-]+)$")
_BACKTICKED = re.compile(r"`[^`]*`")
_MARKERS = {".py": "# requirements:\n", ".sh": "# requirements:\n", ".js": "// requirements:\n"}


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def classify(message: str, turn: int) -> str:
    """What a user message asks for: build, fix, verify, show, usage or detail."""
    if turn == 1:
        return "build"
    text = _BACKTICKED.sub("", message).lower()
    if re.search(r"\bstill\b", text) and re.search(r"\bfix|\bcorrect", text):
        return "fix"
    if re.search(r"double[- ]?check|verif|re-?run|recheck|check again|check everything", text):
        return "verify"
    if re.search(r"\bshow me\b|looks like now|contents of", text):
        return "show"
    if re.search(r"\busage\b|how-to|how to use", text):
        return "usage"
    return "detail"


_CHATTER = re.compile(
    r"\b(?:thanks|thank you|ty|thx|got it|looks right|make sure|sorted|fixed|saw|noted|"
    r"glad|that works|in order|good|nice|cool|fine|ok|okay|awesome|perfect)\b",
    re.IGNORECASE,
)


def gist(message: str) -> str:
    """The message without its acknowledgements and reactions: what to write down."""
    text = _BACKTICKED.sub("", message)
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]
    kept = [s for s in sentences if not (_CHATTER.search(s) and len(s.split()) < 14)]
    return " ".join(kept) or " ".join(sentences)


def _one_line(text: str, limit: int = 140) -> str:
    flat = " ".join(text.split()).replace("`", "'")
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def error_summary(content: str) -> str:
    """The most telling line of a real tool error (the exit-code header skipped)."""
    lines = [line.strip() for line in content.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("Error: command exited")]
    lines = [line.removeprefix("Error: ") for line in lines]
    for line in reversed(lines):
        if re.search(
            r"error|no such|not found|unrecognized|invalid|unknown|cannot|can't", line, re.I
        ):
            return _one_line(line)
    return _one_line(lines[0] if lines else content)


@dataclass(frozen=True)
class CheckPlan:
    call: Call
    label: str
    key: str  # the file or folder the check is about


@dataclass
class Work:
    """Everything the agent derives from the intent: the same on every call."""

    intent: Intent
    seed: int
    mistake_rate: float
    max_steps: int
    recover: bool
    targets: list[Unit]
    recipes: list[Unit]
    checks: list[CheckPlan]
    fixtures: list[str]

    @property
    def intent_id(self) -> str:
        return self.intent.id

    @property
    def budget(self) -> int:
        """Planned model calls a turn may use, leaving room for a recovery and the reply."""
        return max(2, self.max_steps - 1 - SLIP_SLACK)


def _targets(intent: Intent, seed: int) -> tuple[list[Unit], list[CheckPlan]]:
    files: dict[str, TargetFile] = {}
    dirs: list[str] = []
    repos: list[str] = []
    checks: list[CheckPlan] = []
    fixtures = {f.path: f.content for f in intent.fixtures}
    for check in intent.checks:
        kind, path = check.kind, check.path or ""
        if kind == "command_succeeds":
            command = (check.command or "").strip()
            key = command
            if match := _SCRIPT_RUN.match(command) or _JSON_TOOL.match(command):
                key = match.group(1)
                files.setdefault(key, TargetFile(key)).runs.append(command)
            elif match := _GIT_LOG.match(command):
                key = match.group(1)
                repos.append(key)
            elif match := _TEST_DIR.match(command):
                key = match.group(1)
                dirs.append(key)
            checks.append(CheckPlan(ex(command), f"`{command}`", key))
        elif kind == "file_exists" and path:
            checks.append(CheckPlan(ex(f"ls -d {shlex.quote(path)}"), f"`{path}` exists", path))
            files.setdefault(path, TargetFile(path))
        elif kind == "file_contains" and path:
            text = check.text or ""
            grep = ex(f"grep -c -F -- {shlex.quote(text)} {shlex.quote(path)}")
            checks.append(CheckPlan(grep, f"`{path}` contains {text!r}", path))
            files.setdefault(path, TargetFile(path)).texts.append(text)
    folders = set(dirs) | set(repos)
    for path in list(files):
        if path.rstrip("/") in folders or path.endswith("/"):
            dirs.append(files.pop(path).path.rstrip("/"))
    units = [directory_unit(d) for d in dict.fromkeys(dirs) if d not in repos]
    for path, target in files.items():
        rng = _rng(seed, intent.id, "target", path)
        topic = path.rsplit("/", 1)[-1].rsplit(".", 1)[0] or "notes"
        units.append(script_unit(target, topic, rng, fixtures.get(path)))
    units += [git_unit(repo, intent.persona.name, list(files)) for repo in dict.fromkeys(repos)]
    return units, checks


def build_work(brief: EpisodeBrief) -> Work:
    intent, seed = brief.intent, brief.seed
    targets, checks = _targets(intent, seed)
    recipes, domains = [], set()
    for task in intent.tasks:
        # One unit per domain (its first task): each area shows, without padding.
        if task.domain in domains:
            continue
        domains.add(task.domain)
        info = TaskInfo(
            domain=task.domain,
            slug=task.id.split(".", 1)[-1][:40] or "task",
            title=task.title,
            persona=intent.persona.name,
        )
        recipes.append(recipe_unit(info, _rng(seed, intent.id, "recipe", task.id)))
    return Work(
        intent=intent,
        seed=seed,
        mistake_rate=brief.shape.mistake_rate,
        recover=brief.recover,
        max_steps=brief.max_steps_per_turn,
        targets=targets,
        recipes=recipes,
        checks=checks,
        fixtures=sorted(f.path for f in intent.fixtures),
    )


def _cost(unit: Unit) -> int:
    return sum(len(step.phases) for step in unit.steps)


def _mentions(message: str, unit: Unit) -> bool:
    for artifact in unit.artifacts:
        folder, _, name = artifact.rpartition("/")
        if artifact in message or (folder and folder in message and name in message):
            return True
    return False


def _take(queue: list[Unit], room: int) -> list[Unit]:
    taken: list[Unit] = []
    while queue and _cost(queue[0]) <= room:
        room -= _cost(queue[0])
        taken.append(queue.pop(0))
    return taken


def allocate(work: Work, users: Sequence[str], kinds: Sequence[str]) -> list[list[Unit]]:
    """Which units each user turn builds (depends only on the user messages).

    A check target is built on the turn whose message first names its file (the user reveals
    where things go one detail at a time); a verification turn first builds what is left.
    Everything stays within the turn's budget; what does not fit waits for the next turn.
    """
    remaining, recipes = list(work.targets), list(work.recipes)
    pending: list[Unit] = []
    plan: list[list[Unit]] = []
    for index, (message, kind) in enumerate(zip(users, kinds, strict=True)):
        named = [unit for unit in remaining if _mentions(message, unit)]
        remaining = [unit for unit in remaining if all(unit is not n for n in named)]
        pending += named
        fixed = {"build": 3, "detail": 1, "verify": 1, "fix": 1}.get(kind, 2)
        room = work.budget - fixed
        if kind in ("verify", "fix"):
            pending += remaining
            remaining = []
        taken = _take(pending, room)
        if not taken and pending and kind not in ("verify", "fix"):
            taken = [pending.pop(0)]  # a unit larger than a turn's budget still gets built
        lucky = _rng(work.seed, work.intent_id, "recipe", index).random() < RECIPE_SHARE
        wants_recipe = kind == "build" or (kind == "detail" and lucky)
        if not taken and recipes and wants_recipe and _cost(recipes[0]) <= room:
            taken.append(recipes.pop(0))
        plan.append(taken)
    return plan


def _failed_keys(work: Work, messages: Sequence[Message]) -> list[str]:
    """Keys of the checks that failed in the latest verification in ``messages``."""
    labels = {canonical_json(c.call.args): c.key for c in work.checks}
    results = {m.tool_call_id: m for m in messages if m.role == "tool"}
    for message in reversed(messages):
        calls = message.tool_calls or [] if message.role == "assistant" else []
        is_check_run = len(calls) == len(work.checks) and all(
            tc.function.arguments in labels for tc in calls
        )
        if calls and is_check_run:
            failed = [
                tc for tc in calls if (results.get(tc.id) or Message(role="tool")).success is False
            ]
            return [labels[tc.function.arguments] for tc in failed]
    return []


def _note(work: Work, kind: str, message: str, turn: int, forced: bool) -> list[Step]:
    if kind == "build":
        person = work.intent.persona.name
        request = _one_line(work.intent.request, 400)
        text = f"# Requests from {person}\n\n## Request\n{request}\n\n{NOTES_MARKER}"
        return [one(wr(NOTES, text), f"noted the request in `{NOTES}`")]
    lucky = _rng(work.seed, work.intent_id, "note", turn).random() < NOTE_SHARE
    if kind != "detail" or not (forced or lucky):
        return []
    item = f"- {_one_line(gist(message), 200)}\n"
    return [one(ed(NOTES, NOTES_MARKER, NOTES_MARKER + item), f"noted the detail in `{NOTES}`")]


def _slipped_note(message: str, step: Step) -> Step:
    """The notes edit with a slip: the heading's case is wrong, as the real error will say."""
    item = f"- {_one_line(gist(message), 200)}\n"
    wrong = NOTES_MARKER.lower()
    recovery = Recovery(
        "bad_edit",
        lambda error: (
            (Call("memory_get", {"path": NOTES}),),
            (ed(NOTES, NOTES_MARKER, NOTES_MARKER + item),),
        ),
        f"re-read `{NOTES}` and applied the edit to the exact heading",
    )
    return Step(((ed(NOTES, wrong, wrong + item),),), step.done, recovery)


def _explore(work: Work) -> list[Step]:
    topic = work.intent.tasks[0].title if work.intent.tasks else "request"
    listing = ex("find . -maxdepth 2 -type f -not -path './.git/*' | sort")
    search = Call("memory_search", {"query": topic})
    first = (work.fixtures or ["USER.md"])[0]
    return [
        Step(((listing, search),), "looked at the workspace and my notes"),
        one(rd(first), f"read `{first}`"),
    ]


def _apply_detail(work: Work, done: Sequence[Unit], message: str) -> list[Step]:
    """Record a detail in a script of the checks already written, then run it again."""
    for unit in reversed(done):
        if all(unit is not target for target in work.targets) or not unit.runs:
            continue
        path = unit.artifacts[0]
        marker = _MARKERS.get(path[-3:])
        if marker and unit.runs[0].endswith(path):
            line = f"{marker.split(' ')[0]} - {_one_line(gist(message), 120)}\n"
            return [
                one(ed(path, marker, marker + line), f"added the detail to `{path}`"),
                one(ex(unit.runs[0]), f"re-ran `{unit.runs[0]}`"),
            ]
    return []


def _verification(work: Work) -> Step:
    calls = tuple(check.call for check in work.checks)
    labels = tuple(check.label for check in work.checks)
    return Step((calls,), "verified every check", check=True, labels=labels)


def plan_turn(work: Work, messages: Sequence[Message]) -> tuple[str, list[Step]]:
    """The kind of the current (last) user turn and the steps the agent takes for it."""
    users = [m.content or "" for m in messages if m.role == "user"]
    kinds = [classify(message, i) for i, message in enumerate(users, start=1)]
    turn, kind, message = len(users), kinds[-1], users[-1]
    allocation = allocate(work, users, kinds)
    units, earlier = allocation[-1], [u for taken in allocation[:-1] for u in taken]
    if kind == "fix" and work.recover:
        keys = _failed_keys(work, messages)
        broken = [u for u in work.targets if any(k in u.artifacts for k in keys)]
        units = _take([u for u in broken if all(u is not x for x in units)], work.budget - 1)
        units = [*allocation[-1], *units]
    rng = _rng(work.seed, work.intent_id, "turn", turn)
    slip_at = -1
    slippable = [i for i, unit in enumerate(units) if unit.slip]
    if kind in ("build", "detail") and slippable and rng.random() < work.mistake_rate:
        slip_at = rng.choice(slippable)
    steps: list[Step] = _explore(work) if kind == "build" else []
    applied = _apply_detail(work, earlier, message) if kind == "detail" and not units else []
    steps += _note(work, kind, message, turn, forced=kind == "detail" and not units and not applied)
    noted = bool(steps) and steps[-1].done.startswith("noted the detail")
    if noted and slip_at < 0 and rng.random() < work.mistake_rate:
        steps[-1] = _slipped_note(message, steps[-1])
    steps += applied
    for index, unit in enumerate(units):
        steps += list(unit.slip if index == slip_at and unit.slip else unit.steps)
    if kind == "show":
        artifacts = [a for unit in earlier + units for a in unit.artifacts if "." in a]
        named = [a for a in artifacts if a in message or a.rsplit("/", 1)[-1] in message]
        target = (named or artifacts or ["USER.md"])[0]
        steps.append(one(rd(target), f"opened `{target}`"))
    elif kind == "usage":
        runs = [run for unit in earlier + units for run in unit.runs]
        lines = "".join(f"- `{run}`\n" for run in runs) or "- open the files listed above\n"
        text = f"# How to use\n\nRun from the workspace root:\n\n{lines}"
        steps += [
            one(wr("USAGE.md", text), "wrote `USAGE.md`"),
            one(ex("cat USAGE.md"), "checked it"),
        ]
    elif kind in ("verify", "fix") and work.checks:
        steps.append(_verification(work))
    if not work.recover:
        steps = [replace(step, recovery=None) for step in steps]
    return kind, steps


# --- where the agent is in its turn -----------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    """One message of tool calls the agent sent this turn: its place in the plan (step,
    phase) and the results that answered each call, in call order."""

    step: int
    phase: int
    results: tuple[Message | None, ...]


def _phases(step: Step, issued: Sequence[Issued]) -> list[Phase]:
    """The step's phases: its plan, plus the recovery once its last planned call failed."""
    phases = list(step.phases)
    failed = _last_planned_result(step, issued)
    if step.recovery is not None and failed is not None and failed.success is False:
        phases += list(step.recovery.plan(failed.content or ""))
    return phases


def _last_planned_result(step: Step, issued: Sequence[Issued]) -> Message | None:
    """The result of the last call of the step's last planned phase, once it came back."""
    last = len(step.phases) - 1
    sent = next((i for i in issued if i.phase == last), None)
    return sent.results[-1] if sent is not None and sent.results else None


def replay(steps: Sequence[Step], tail: Sequence[Message]) -> tuple[list[Issued], int, int]:
    """Follow this turn's tool-call messages (``tail``: what came after the user's message)
    through the plan, in order; returns them and the (step, phase) to send next."""
    results = {m.tool_call_id: m for m in tail if m.role == "tool" and m.tool_call_id}
    issued: list[Issued] = []
    s = p = 0
    for message in tail:
        if message.role != "assistant" or not message.tool_calls or s >= len(steps):
            continue
        issued.append(Issued(s, p, tuple(results.get(c.id) for c in message.tool_calls)))
        if p + 1 < len(_phases(steps[s], [i for i in issued if i.step == s])):
            p += 1
        else:
            s, p = s + 1, 0
    return issued, s, p


def _resolve(call: Call, messages: Sequence[Message]) -> dict[str, Any]:
    args = dict(call.args)
    if args.get("id") == "{proc}":
        started = [
            match.group(1)
            for msg in messages
            if msg.role == "tool" and msg.name == "process"
            for match in [_PROC.match(msg.content or "")]
            if match
        ]
        args["id"] = started[-1] if started else "p1"
    return args


def _emit(
    turn: int, s: int, p: int, phase: Phase, messages: Sequence[Message], content: str | None
) -> Message:
    # Calls are named by turn, step, phase and position; the agent never reads the names
    # back (``replay`` follows its messages in order), they only have to be unique.
    calls = [
        ToolCall(
            id=f"call_{turn}_{s}_{p}_{j}",
            function=FunctionCall(
                name=call.name, arguments=canonical_json(_resolve(call, messages))
            ),
        )
        for j, call in enumerate(phase)
    ]
    return Message(role="assistant", content=content, tool_calls=calls)


def _check_lines(step: Step, issued: Sequence[Issued]) -> tuple[list[str], list[str]]:
    """One line per check of a verification step, and the labels of those that failed."""
    first = next((i for i in issued if i.phase == 0), None)
    lines: list[str] = []
    failures: list[str] = []
    for j, label in enumerate(step.labels):
        result = first.results[j] if first is not None and j < len(first.results) else None
        if result is None:
            continue
        ok = bool(result.success)
        lines.append(
            f"- {label}: "
            + ("passed" if ok else f"FAILED (`{error_summary(result.content or '')}`)")
        )
        if not ok:
            failures.append(label)
    return lines, failures


def _reply(steps: Sequence[Step], issued: Sequence[Issued]) -> str:
    """The turn's closing message, built only from what the tool results really said."""
    done: list[str] = []
    checks: list[str] = []
    notes: list[str] = []
    failures: list[str] = []
    last_output = ""
    for index, step in enumerate(steps):
        of_step = [i for i in issued if i.step == index]
        ran = [m for i in of_step for m in i.results if m is not None]
        if not ran:
            continue
        if step.check:
            lines, failed = _check_lines(step, of_step)
            checks += lines
            failures += failed
            continue
        first_bad = next((m for m in ran if m.success is False), None)
        final = ran[-1]
        if first_bad is not None and step.recovery is not None and final.success:
            error = error_summary(first_bad.content or "")
            notes.append(f"The first attempt failed with `{error}`; I {step.recovery.explain}.")
        elif final.success is False:
            failures.append(f"{step.done or final.name} (`{error_summary(final.content or '')}`)")
        if step.done:
            done.append(step.done)
        if final.name == "exec" and final.success and (final.content or "").strip():
            last_output = final.content or ""
    return _compose_reply(done, notes, checks, failures, last_output)


def _compose_reply(
    done: list[str], notes: list[str], checks: list[str], failures: list[str], last_output: str
) -> str:
    parts: list[str] = []
    if done:
        parts.append(
            "Here is what I did:\n" + "\n".join(f"- {item}" for item in dict.fromkeys(done))
        )
    parts.extend(notes)
    if checks:
        parts.append("I re-ran every check against the workspace:\n" + "\n".join(checks))
    if failures:
        parts.append("These still fail: " + "; ".join(failures))
    elif checks:
        parts.append(f"All {len(checks)} checks passed.")
    if last_output and not checks:
        shown = "\n".join(last_output.strip().splitlines()[:6])
        parts.append(f"Last output:\n```\n{shown}\n```")
    return "\n\n".join(parts) or "Understood, noted."


def _preface(step: Step, p: int, issued: Sequence[Issued]) -> str | None:
    """A short remark when a recovery starts, naming the real error it reacts to."""
    if step.recovery is None or p != len(step.phases):
        return None
    failed = _last_planned_result(step, issued)
    if failed is None:
        return None
    return f"That failed: `{error_summary(failed.content or '')}`. Fixing it."


@register("agent")
def scripted_agent(call: ScriptedCall) -> Message:
    work = build_work(call.need_brief("agent"))
    messages = list(call.messages)
    last_user = max((i for i, m in enumerate(messages) if m.role == "user"), default=-1)
    if last_user < 0:
        return Message(role="assistant", content="Ready when you are.")
    turn = sum(1 for m in messages if m.role == "user")
    _, steps = plan_turn(work, messages[: last_user + 1])
    issued, s, p = replay(steps, messages[last_user + 1 :])
    if s >= len(steps):
        return Message(role="assistant", content=_reply(steps, issued))
    of_step = [i for i in issued if i.step == s]
    phase = _phases(steps[s], of_step)[p]
    return _emit(turn, s, p, phase, messages, _preface(steps[s], p, of_step))


__all__ = [
    "CheckPlan",
    "Issued",
    "Work",
    "allocate",
    "build_work",
    "classify",
    "error_summary",
    "plan_turn",
    "replay",
    "scripted_agent",
]
