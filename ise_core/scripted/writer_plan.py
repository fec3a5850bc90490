"""Deliverables, checks and seed files for the scripted intent writer (a template program).

Part of the scripted writer (ise_core/scripted/writer.py), which is a deterministic
template program, not a model. This module invents the concrete facts of one write-out
(project, colleagues, numbers), picks a deliverable per task (a script, a report, a repo,
...) with checks from the fixed vocabulary the scripted agent understands, and sometimes a seed
file the task starts from. All choices come from the caller's seeded random stream.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from ise_core.simulate.prompting import PROMPTS_DIR

PHRASES_PATH = PROMPTS_DIR / "scripted_writer.yaml"
_STEM_STOPWORDS = frozenset(
    {"a", "an", "the", "and", "my", "of", "up", "to", "for", "from", "with", "into", "by", "in"}
)
# At most this many deliverables; further tasks are folded into an earlier deliverable.
ARTIFACT_CAP = {"simple": 3, "medium": 5, "complex": 7}
FIXTURE_CHANCE = {"simple": 0.35, "medium": 0.5, "complex": 0.65}
ROW_COUNTS = (120, 300, 850, 1200, 4000, 12000, 48000, 250000)
DATE_COLUMNS = frozenset({"date", "opened", "timestamp", "updated", "month"})
NUMBER_COLUMNS = frozenset(
    {"units", "revenue", "total", "sales", "returns", "count", "value", "price", "salary", "score"}
)
CONFIG_PATHS = {
    "dockerfile": "{proj}/Dockerfile",
    "service": "ops/{stem}.service",
    "proxy": "config/nginx/{proj}.conf",
    "envfile": "config/{proj}.env.example",
    "logrotate": "config/logrotate_{proj}.conf",
    "config": "config/{stem}.ini",
}


@functools.cache
def phrases() -> dict[str, Any]:
    """The phrase bank, read once per process (the writer runs tens of thousands of times)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    data: dict[str, Any] = yaml.load(PHRASES_PATH.read_text(encoding="utf-8"), Loader=loader)
    return data


class Slots(dict[str, str]):
    """Template slots. Most invented facts are drawn only when a frame first uses them (most
    write-outs use a few), then kept, so each fact is the same everywhere in one write-out. An
    unknown slot is a bug in the phrase bank and the error says which one."""

    def __init__(self, *args: Any, **kwargs: str) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, Callable[[], str]] = {}

    def __missing__(self, key: str) -> str:
        make = self.lazy.get(key)
        if make is None:
            raise KeyError(f"scripted writer phrase bank uses unknown slot {{{key}}}")
        value = self[key] = make()
        return value


@dataclass
class Artifact:
    tasks: list[dict[str, Any]]
    kind: str
    path: str
    checks: list[dict[str, str]]
    detail: str
    fixture: dict[str, str] | None = None


@dataclass
class Draft:
    """One write-out in progress: the sample, its voice and the invented facts."""

    sample: dict[str, Any]
    rng: random.Random
    bank: dict[str, Any]
    slots: Slots = field(default_factory=Slots)
    traits: frozenset[str] = frozenset()
    tier: str = "mid"
    project_named: bool = False  # the project is named once per sentence, not per task

    def pick(self, key: str) -> Any:
        return self.rng.choice(self.bank[key])

    def fill(self, frame: str) -> str:
        return frame.format_map(self.slots)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p


def _article(noun: str) -> str:
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


def invent_slots(draft: Draft) -> None:
    """Fill the persona's own slots now and register the invented ones to draw on first use."""
    persona, rng, slots = draft.sample["persona"], draft.rng, draft.slots
    expertise = list(persona.get("expertise") or ["our work"])
    topic = rng.choice(expertise)
    context = str(persona.get("work_context", ""))
    org = context.split(" at ", 1)[1].split(";", 1)[0] if " at " in context else "work"
    codename = draft.pick("project_codenames")
    role = str(persona["role"])
    slots.update(
        name=persona["name"],
        first=persona["name"].split()[0],
        role=role,
        a_role=_article(role),
        Role=role[:1].upper() + role[1:],
        level=persona.get("experience_level", ""),
        industry=str(persona.get("industry", "")).lower(),
        org=org,
        topic=topic,
        codename=codename,
        proj=codename.lower(),
    )
    for key, bank_key in (
        ("month", "months"), ("weekday", "weekdays"), ("period", "periods"),
        ("colleague", "colleagues"), ("manager", "managers"), ("audience", "audiences"),
        ("server", "servers"), ("lang", "langs"), ("currency", "currencies"),
    ):
        slots.lazy[key] = functools.partial(draft.pick, bank_key)
    slots.lazy.update(
        topic2=lambda: rng.choice([e for e in expertise if e != topic] or [topic]),
        quarter=lambda: f"Q{rng.randint(1, 4)}",
        year=lambda: str(rng.choice((2024, 2025, 2026))),
        n_rows=lambda: f"{rng.choice(ROW_COUNTS) + rng.randint(0, 99):,}",
        n_small=lambda: str(rng.randint(3, 40)),
        n_money=lambda: f"{rng.randint(2, 90) * 500:,}",
        percent=lambda: str(rng.randint(5, 60)),
        audience_cap=lambda: slots["audience"][:1].upper() + slots["audience"][1:],
        deadline=lambda: draft.fill(draft.pick("deadlines")),
    )
    standalone, attributive = draft.pick("project_forms")
    slots["project"] = draft.fill(standalone)
    slots["proj_name"] = draft.fill(attributive)


@functools.lru_cache(maxsize=4096)
def _split_verb(title: str) -> tuple[str, str]:
    """(leading verb phrase with synonyms, rest of the title); ('', title) when none is known."""
    for verb in _verbs_longest_first():
        if title.startswith(verb + " "):
            return verb, title[len(verb) :]
    return "", title


@functools.cache
def _verbs_longest_first() -> tuple[str, ...]:
    return tuple(sorted(phrases()["verb_synonyms"], key=len, reverse=True))


def task_phrase(draft: Draft, task: dict[str, Any], qualify: bool) -> str:
    verb, rest = _split_verb(str(task["title"]))
    title = f"{draft.rng.choice(draft.bank['verb_synonyms'][verb])}{rest}" if verb else rest
    if not qualify or not draft.chance(0.45):
        return title
    qualifiers = [
        q
        for q in draft.bank["task_qualifiers"].get(task.get("domain"), [])
        if not (draft.project_named and "{proj" in q)
    ]
    if not qualifiers:
        return title
    qualifier = draft.rng.choice(qualifiers)
    draft.project_named = draft.project_named or "{proj" in qualifier
    return f"{title} {draft.fill(qualifier)}"


def join_phrases(draft: Draft, phrases_: list[str]) -> str:
    if len(phrases_) == 1:
        return phrases_[0]
    if len(phrases_) == 2:
        return draft.rng.choice(draft.bank["joiners"]["two"]).format(a=phrases_[0], b=phrases_[1])
    frame = draft.rng.choice(draft.bank["joiners"]["many"])
    return frame.format(head=", ".join(phrases_[:-1]), last=phrases_[-1])


# --- deliverables and checks --------------------------------------------------------------


def _first_rule(table: str, task: dict[str, Any]) -> dict[str, Any] | None:
    """The first rule of ``table`` whose keywords occur in the task's id or title."""
    return _first_rule_cached(table, str(task["id"]), str(task["title"]))


@functools.lru_cache(maxsize=8192)
def _first_rule_cached(table: str, task_id: str, title: str) -> dict[str, Any] | None:
    key = f"{task_id} {title}".lower()
    for rule in phrases()[table]:
        if any(word in key for word in rule["keywords"]):
            return dict(rule)
    return None


def _stem(draft: Draft, task: dict[str, Any]) -> str:
    words = str(task["id"]).split(".", 1)[-1].split("-")
    words = [w for w in words[1:] if w not in _STEM_STOPWORDS] or words
    start = draft.rng.randint(0, max(0, len(words) - 3)) if len(words) > 3 else 0
    stem = "_".join(words[start : start + 3])
    roll = draft.rng.random()
    if roll < 0.25:
        return f"{draft.slots['proj']}_{stem}"
    if roll < 0.4:
        return f"{stem}_{draft.slots['quarter'].lower()}"
    if roll < 0.5:
        return f"{stem}_{draft.slots['year']}"
    return stem


def _contains(path: str, text: str) -> dict[str, str]:
    return {"kind": "file_contains", "path": path, "text": text}


def _command(command: str) -> dict[str, str]:
    return {"kind": "command_succeeds", "command": command}


def _detail(draft: Draft, frame_key: str, **values: str) -> str:
    frame = draft.rng.choice(draft.bank["detail_frames"][frame_key])
    draft.slots.update(values)  # path/command/text of this deliverable; the next one overwrites
    return draft.fill(frame)


def _file_with_command(draft: Draft, kind: str, stem: str, ext: str, cmd: str) -> Artifact:
    path = f"{draft.rng.choice(draft.bank['kind_dirs'][kind])}/{stem}.{ext}"
    command = cmd.format(path=path)
    checks = [_command(command)]
    detail = _detail(draft, "file_cmd", path=path, command=command)
    if draft.chance(0.35):
        text = draft.fill(draft.rng.choice(draft.bank["kind_texts"][kind]))
        checks.append(_contains(path, text))
        detail += f' It should contain "{text}".'
    return Artifact([], kind, path, checks, detail)


def _text_file(draft: Draft, kind: str, texts_key: str, stem: str, ext: str) -> Artifact:
    path = f"{draft.rng.choice(draft.bank['kind_dirs'][kind])}/{stem}.{ext}"
    text = draft.fill(draft.rng.choice(draft.bank["kind_texts"][texts_key]))
    detail = _detail(draft, "file_contains", path=path, text=text)
    return Artifact([], kind, path, [_contains(path, text)], detail)


def _repo(draft: Draft, stem: str) -> str:
    base = draft.rng.choice(draft.bank["kind_dirs"]["git"])
    proj = draft.slots["proj"]
    words = [w for w in stem.split("_") if w != proj and not w[:1].isdigit()] or ["repo"]
    return f"{base}/{proj}" if draft.chance(0.6) else f"{base}/{proj}_{words[0]}"


def _git_artifact(draft: Draft, stem: str, extra: str | None) -> Artifact:
    repo = _repo(draft, stem)
    command = f"git -C {repo} log --oneline -1"
    checks = [_command(command)]
    detail = _detail(draft, "git", path=repo, command=command)
    if extra is None and draft.chance(0.5):
        extra = draft.rng.choice(("CHANGELOG.md", "README.md", "NOTES.md"))
    if extra is not None:
        checks.append({"kind": "file_exists", "path": f"{repo}/{extra}"})
        detail += f" There should be a {extra} in it too."
    return Artifact([], "git", repo, checks, detail)


def _make_artifact(draft: Draft, task: dict[str, Any]) -> Artifact:
    bank, rng = draft.bank, draft.rng
    rule = _first_rule("artifact_rules", task)
    kinds = rule["kinds"] if rule else bank["domain_kinds"].get(task.get("domain"), ["report"])
    kind = rng.choice(kinds)
    stem = _stem(draft, task)
    if kind == "py":
        return _file_with_command(draft, "py", stem, "py", "python3 {path}")
    if kind == "node":
        return _file_with_command(draft, "node", stem, "js", "node {path}")
    if kind == "sh":
        return _file_with_command(draft, "sh", stem, "sh", "sh {path}")
    if kind == "json":
        return _file_with_command(draft, "json", stem, "json", "python3 -m json.tool {path}")
    if kind == "git":
        return _git_artifact(draft, stem, None)
    if kind == "hook":
        return _git_artifact(draft, stem, "hooks/pre-commit.sh")
    if kind == "ci_workflow":
        art = _git_artifact(draft, stem, None)
        ci_path = f"{art.path}/ci/workflow.yml"
        text = rng.choice(bank["config_texts"]["ci_workflow"])
        art.checks.append(_contains(ci_path, text))
        art.detail += f' The CI config goes in {ci_path} and must mention "{text}".'
        return art
    if kind == "csv":
        path = f"{rng.choice(bank['kind_dirs']['csv'])}/{stem}.csv"
        family = rng.choice(list(bank["csv_headers"]))
        header = rng.choice(bank["csv_headers"][family])
        detail = _detail(draft, "file_contains", path=path, text=header)
        return Artifact([], "csv", path, [_contains(path, header)], detail)
    if kind == "dir":
        folder = f"{rng.choice(bank['kind_dirs']['dir'])}/{stem}"
        checks = [_command(f"test -d {folder}")]
        detail = _detail(draft, "dir", path=folder)
        if draft.chance(0.5):
            checks.append({"kind": "file_exists", "path": f"{folder}/INDEX.md"})
            detail += f" Add an INDEX.md in {folder} listing what is there."
        return Artifact([], "dir", folder, checks, detail)
    if kind == "py_server":
        return _text_file(draft, "py_server", "py_server", stem, "py")
    if kind == "svg":
        return _text_file(draft, "svg", "svg", stem, "svg")
    if kind == "memory":
        return _text_file(draft, "memory", "memory", stem, "md")
    if kind in bank["config_texts"] and kind in CONFIG_PATHS:
        path = CONFIG_PATHS[kind].format(proj=draft.slots["proj"], stem=stem)
        text = rng.choice(bank["config_texts"][kind])
        detail = _detail(draft, "file_contains", path=path, text=text)
        return Artifact([], kind, path, [_contains(path, text)], detail)
    texts = "comms" if task.get("domain") == "comms-social" else "report"
    dir_kind = "comms" if texts == "comms" else "report"
    path = f"{rng.choice(bank['kind_dirs'][dir_kind])}/{stem}.md"
    text = draft.fill(rng.choice(bank["kind_texts"][texts]))
    detail = _detail(draft, "file_contains", path=path, text=text)
    return Artifact([], "report", path, [_contains(path, text)], detail)


# --- fixtures -----------------------------------------------------------------------------


def _csv_rows(draft: Draft, header: str, n: int) -> list[str]:
    rng, rows = draft.rng, []
    for i in range(n):
        cells = []
        for column in header.split(","):
            if column in DATE_COLUMNS:
                day = int(rng.random() * 336)  # 12 months of 28 days: one draw per date
                cells.append(f"{draft.slots['year']}-{day // 28 + 1:02d}-{day % 28 + 1:02d}")
            elif column in ("email", "contact"):
                cells.append(f"{draft.pick('colleagues').lower()}{i}@example.org")
            elif column in NUMBER_COLUMNS:
                cells.append(str(int(rng.random() * 5000) + 1))
            else:
                cells.append(f"{column}_{int(rng.random() * 60) + 1}")
        rows.append(",".join(cells))
    return rows


def _fixture(draft: Draft, kind: str, task: dict[str, Any], art: Artifact) -> dict[str, str]:
    rng, bank = draft.rng, draft.bank
    base = f"{rng.choice(bank['fixture_dirs'])}/{_stem(draft, task)}"
    if kind == "buggy_py" and art.path.endswith(".py"):
        return {"path": art.path, "content": rng.choice(bank["buggy_scripts"])}
    if kind == "broken_json" and art.path.endswith(".json"):
        content = f'{{"name": "{draft.slots["proj"]}", "retries": 3, "timeout": 30,}}\n'
        return {"path": art.path, "content": content}
    if kind == "log":
        lines = [
            f"{draft.slots['year']}-0{rng.randint(1, 9)}-1{rng.randint(0, 9)} "
            f"{rng.randint(10, 23)}:{rng.randint(10, 59)}:{rng.randint(10, 59)} "
            + rng.choice(bank["log_messages"])
            for _ in range(rng.randint(8, 20))
        ]
        return {"path": f"{base}.log", "content": "\n".join(lines) + "\n"}
    if kind == "notes":
        picks = rng.sample(bank["note_lines"], k=rng.randint(3, 6))
        body = "\n".join(f"- {draft.fill(line)}" for line in picks)
        return {"path": f"{base}.md", "content": f"# Notes, {draft.slots['month']}\n\n{body}\n"}
    family = rng.choice(list(bank["csv_headers"]))
    header = rng.choice(bank["csv_headers"][family])
    rows = _csv_rows(draft, header, rng.randint(6, 16))
    if "deduplicate" in task["id"]:
        rows += rng.sample(rows, k=2)
    return {"path": f"{base}.csv", "content": header + "\n" + "\n".join(rows) + "\n"}


def _attach_fixture(draft: Draft, art: Artifact, complexity: str) -> None:
    rule = _first_rule("fixture_rules", art.tasks[0])
    if rule is None or not draft.chance(FIXTURE_CHANCE[complexity]):
        return
    fixture = _fixture(draft, rule["fixture"], art.tasks[0], art)
    if fixture["path"] == art.path:
        art.detail = f"{_detail(draft, 'fixture_fix', path=art.path)} {art.detail}"
    elif rule["fixture"] in ("buggy_py", "broken_json"):
        return  # those only make sense as the deliverable's broken starting point
    else:
        art.detail = f"{_detail(draft, 'fixture', fixture=fixture['path'])} {art.detail}"
    art.fixture = fixture


def _host_for(draft: Draft, artifacts: list[Artifact], task: dict[str, Any]) -> Artifact:
    """The deliverable a task without its own is folded into: one of its domain if any."""
    same_domain = [a for a in artifacts if a.tasks[0].get("domain") == task.get("domain")]
    return draft.rng.choice(same_domain or artifacts)


def plan_artifacts(draft: Draft, tasks: list[dict[str, Any]], complexity: str) -> list[Artifact]:
    """One deliverable per task, up to the complexity's cap; the rest fold into earlier ones."""
    cap = ARTIFACT_CAP[complexity]
    artifacts: list[Artifact] = []
    used: set[str] = set()
    for task in tasks:
        if len(artifacts) >= cap:
            _host_for(draft, artifacts, task).tasks.append(task)
            continue
        art = _make_artifact(draft, task)
        repo = next((a for a in artifacts if a.kind == "git"), None)
        if art.kind == "git" and repo is not None:
            repo.tasks.append(task)  # the source-control tasks of one intent share one repo
            continue
        for _ in range(4):  # two tasks landed on one file name: draw the second again
            if art.path not in used:
                break
            art = _make_artifact(draft, task)
        if art.path in used or (art.kind == "git" and repo is not None):
            _host_for(draft, artifacts, task).tasks.append(task)
            continue
        used.add(art.path)
        art.tasks.append(task)
        _attach_fixture(draft, art, complexity)
        artifacts.append(art)
    return artifacts
