"""The shipped taxonomy meets the published sizes, and a broken one fails with a clear error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ise_core.errors import InputError, TaxonomyError
from ise_core.intents import persona_generator
from ise_core.intents.taxonomy import KNOWN_TOOLS, load_taxonomy
from ise_core.records import write_jsonl

TAXONOMY = Path(__file__).resolve().parents[2] / "ise_core" / "taxonomy"
PUBLISHED_DOMAINS = [
    "intelligence-core",
    "code-runtime",
    "file-io",
    "source-chain",
    "automation-flow",
    "web-extraction",
    "comms-social",
    "multimedia",
    "agent-memory",
    "system-infrastructure",
]


@pytest.fixture
def taxonomy_copy(tmp_path: Path) -> Path:
    """A private copy of the shipped taxonomy that a test may break."""
    target = tmp_path / "taxonomy"
    shutil.copytree(TAXONOMY, target)
    return target


def _append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


def test_shipped_taxonomy_meets_published_sizes() -> None:
    taxonomy = load_taxonomy(TAXONOMY)
    sizes = taxonomy.summary()
    assert sizes["personas"] == 965
    assert sizes["industries"] >= 47
    assert sizes["roles"] >= 300
    assert sizes["experience_levels"] == 6
    assert sizes["communication_styles"] >= 60
    assert taxonomy.domain_ids == PUBLISHED_DOMAINS
    assert sizes["tasks"] >= 131
    for task in taxonomy.tasks:
        assert task.id.startswith(task.domain + ".")
        assert set(task.tools) <= KNOWN_TOOLS
        assert task.title and task.description
    # Two domains of the smallest size must hold the largest draw of six tasks.
    assert min(len(tasks) for tasks in taxonomy.tasks_by_domain.values()) >= 3
    for persona in taxonomy.personas:
        assert persona.name and persona.role and persona.work_context
        assert 2 <= len(persona.expertise) <= 3


def test_personas_file_is_the_generators_output(tmp_path: Path) -> None:
    out = tmp_path / "personas.jsonl"
    assert persona_generator.main(["--out", str(out)]) == 0
    assert out.read_bytes() == (TAXONOMY / "personas.jsonl").read_bytes()


def test_persona_generator_covers_every_role_and_style() -> None:
    data = persona_generator.load_attributes(persona_generator.DEFAULT_ATTRIBUTES)
    personas = persona_generator.generate_personas(data, seed=1, count=965)
    roles = {role for industry in data["industries"] for role in industry["roles"]}
    assert {p.role for p in personas} == roles
    assert {p.communication_style for p in personas} == set(data["communication_styles"])
    assert len({p.name for p in personas}) == 965
    # Roles that name a position of responsibility are never given to interns.
    assert not [p for p in personas if "manager" in p.role and p.experience_level == "intern"]


def test_persona_generator_bad_attributes_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "attributes.yaml"
    bad.write_text("experience_levels: [a, b]\n", encoding="utf-8")
    out = tmp_path / "p.jsonl"
    assert persona_generator.main(["--attributes", str(bad), "--out", str(out)]) == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert "attributes.yaml" in err and "experience_levels" in err


def test_task_in_unknown_domain_names_file_task_and_domain(taxonomy_copy: Path) -> None:
    _append(
        taxonomy_copy / "tasks.yaml",
        "  - id: quantum.knit-a-scarf\n    domain: quantum-knitting\n    title: knit a scarf\n"
        "    description: Knit it.\n    tools: [write]\n",
    )
    with pytest.raises(TaxonomyError) as caught:
        load_taxonomy(taxonomy_copy)
    message = str(caught.value)
    assert "tasks.yaml" in message
    assert "quantum.knit-a-scarf" in message
    assert "quantum-knitting" in message
    lines = (taxonomy_copy / "tasks.yaml").read_text(encoding="utf-8").splitlines()
    assert f":{len(lines) - 4}:" in message  # the line the bad task starts on


def test_duplicate_task_id_names_both_lines(taxonomy_copy: Path) -> None:
    _append(
        taxonomy_copy / "tasks.yaml",
        "  - id: code-runtime.debug-failing-unit-tests\n    domain: code-runtime\n"
        "    title: again\n    description: Again.\n    tools: [exec]\n",
    )
    with pytest.raises(TaxonomyError, match=r"duplicate task id 'code-runtime\.debug-failing"):
        load_taxonomy(taxonomy_copy)


def test_duplicate_domain_id(taxonomy_copy: Path) -> None:
    _append(
        taxonomy_copy / "domains.yaml",
        "  - id: multimedia\n    name: Again\n    description: Twice.\n",
    )
    with pytest.raises(TaxonomyError, match=r"domains\.yaml:\d+: duplicate domain id 'multimedia'"):
        load_taxonomy(taxonomy_copy)


def test_duplicate_persona_id(taxonomy_copy: Path) -> None:
    path = taxonomy_copy / "personas.jsonl"
    first = path.read_text(encoding="utf-8").splitlines()[0]
    _append(path, first + "\n")
    with pytest.raises(TaxonomyError, match=r"personas\.jsonl: duplicate persona id 'p-0001'"):
        load_taxonomy(taxonomy_copy)


def test_malformed_yaml_reports_file_and_line(taxonomy_copy: Path) -> None:
    (taxonomy_copy / "domains.yaml").write_text(
        "domains:\n  - id: a\n    name: [unclosed\n", encoding="utf-8"
    )
    with pytest.raises(TaxonomyError, match=r"domains\.yaml:\d+: invalid YAML"):
        load_taxonomy(taxonomy_copy)


def test_malformed_persona_line_reports_file_and_line(taxonomy_copy: Path) -> None:
    path = taxonomy_copy / "personas.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2][:40]  # truncated JSON on line 3
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(TaxonomyError, match=r"personas\.jsonl:3: invalid JSON"):
        load_taxonomy(taxonomy_copy)


def test_persona_missing_field_names_it(taxonomy_copy: Path) -> None:
    path = taxonomy_copy / "personas.jsonl"
    write_jsonl(path, [{"id": "p-1", "name": "A B", "role": "r", "industry": "i"}])
    with pytest.raises(TaxonomyError, match=r"personas\.jsonl:1: .*expertise"):
        load_taxonomy(taxonomy_copy)


def test_task_missing_tools_names_field_and_line(taxonomy_copy: Path) -> None:
    _append(
        taxonomy_copy / "tasks.yaml",
        "  - id: file-io.no-tools\n    domain: file-io\n    title: t\n    description: d\n",
    )
    with pytest.raises(TaxonomyError, match=r"tasks\.yaml:\d+: task 'file-io\.no-tools': .*tools"):
        load_taxonomy(taxonomy_copy)


def test_unknown_tool_is_named(taxonomy_copy: Path) -> None:
    _append(
        taxonomy_copy / "tasks.yaml",
        "  - id: file-io.teleport\n    domain: file-io\n    title: t\n    description: d\n"
        "    tools: [teleport]\n",
    )
    with pytest.raises(TaxonomyError, match=r"file-io\.teleport.*unknown tools \['teleport'\]"):
        load_taxonomy(taxonomy_copy)


def test_domain_with_too_few_tasks(tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    folder.mkdir()
    shutil.copy(TAXONOMY / "personas.jsonl", folder / "personas.jsonl")
    (folder / "domains.yaml").write_text(
        "domains:\n  - {id: a, name: A, description: x}\n  - {id: b, name: B, description: y}\n",
        encoding="utf-8",
    )
    row = "  - {{id: {id}, domain: {domain}, title: t, description: d, tools: [exec]}}"
    tasks = [row.format(id=f"a.t{i}", domain="a") for i in range(3)]
    tasks.append(row.format(id="b.t0", domain="b"))
    (folder / "tasks.yaml").write_text("tasks:\n" + "\n".join(tasks) + "\n", encoding="utf-8")
    expected = r"domain 'b' has 1 task\(s\); sampling needs at least 3"
    with pytest.raises(TaxonomyError, match=expected):
        load_taxonomy(folder)
    assert len(load_taxonomy(folder, min_tasks_per_domain=1).tasks) == 4


def test_missing_folder_and_file(tmp_path: Path, taxonomy_copy: Path) -> None:
    with pytest.raises(TaxonomyError, match="taxonomy folder not found"):
        load_taxonomy(tmp_path / "nowhere")
    (taxonomy_copy / "tasks.yaml").unlink()
    with pytest.raises(TaxonomyError, match=r"tasks\.yaml: file not found"):
        load_taxonomy(taxonomy_copy)


def test_taxonomy_error_is_an_input_error_with_exit_code_2() -> None:
    assert issubclass(TaxonomyError, InputError)
    assert TaxonomyError("x").exit_code == 2
