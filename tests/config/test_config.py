from __future__ import annotations

from pathlib import Path

import pytest

from ise_core.config import Settings, fingerprint, load_settings, settings_from_dict
from ise_core.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_repository_params_load_with_documented_defaults() -> None:
    settings = load_settings(REPO / "params.yaml")
    assert settings.seed == 7
    assert settings.intents.complexity_priors.as_dict() == {
        "simple": 0.1,
        "medium": 0.4,
        "complex": 0.5,
    }
    assert settings.simulate.max_turns == 20
    assert settings.llm.provider == "scripted"
    assert settings.base_dir == REPO


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: params file not found"):
        load_settings(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("intents: {count: many}", r"key 'intents\.count':.*integer.*'many'"),
        ("intents: {count: 0}", r"key 'intents\.count':.*greater than or equal to 1"),
        ("dedup: {thresold: 0.9}", r"key 'dedup\.thresold': unknown key"),
        ("bogus_block: {}", r"key 'bogus_block': unknown key"),
        ("dedup: {threshold: 1.5}", r"key 'dedup\.threshold':.*less than or equal to 1"),
        (
            "intents: {complexity_priors: {simple: 0.5, medium: 0.5, complex: 0.5}}",
            r"key 'intents\.complexity_priors':.*sum to 1\.0",
        ),
        ("llm: {provider: magic}", r"key 'llm\.provider':.*'scripted' or 'openai'"),
        ("intents: {domains_per_intent: [3, 2]}", r"key 'intents':.*domains_per_intent must be"),
        ("- just\n- a list", r"expected a mapping"),
        ("seed: [unclosed", r"params\.yaml:1: invalid YAML"),
        (
            "workspace: {web_search: {provider: searxng}}",
            r"key 'workspace\.web_search':.*searxng needs base_url",
        ),
        (
            "workspace: {web_search: {provider: bing}}",
            r"key 'workspace\.web_search\.provider':.*'off', 'searxng' or 'brave'",
        ),
        ("workspace: {pool_size: -1}", r"key 'workspace\.pool_size':.*greater than or equal"),
    ],
)
def test_bad_params_give_file_key_and_expectation(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected) as info:
        load_settings(path)
    assert str(path) in str(info.value)


def test_overrides_are_validated_and_named(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 1\n")
    settings = load_settings(path, overrides={"intents": {"count": 5}})
    assert settings.intents.count == 5 and settings.seed == 1
    with pytest.raises(ConfigError, match=r"with overrides.*intents\.count"):
        load_settings(path, overrides={"intents": {"count": -1}})


def test_fingerprint_covers_exactly_the_named_keys() -> None:
    base = settings_from_dict({})
    changed_export = settings_from_dict({"export": {"valid_fraction": 0.2}})
    changed_seed = settings_from_dict({"seed": 8})
    keys = ("seed", "intents")
    assert fingerprint(base, *keys) == fingerprint(changed_export, *keys)
    assert fingerprint(base, *keys) != fingerprint(changed_seed, *keys)
    assert fingerprint(base, "export") != fingerprint(changed_export, "export")


def test_web_search_off_leaves_episode_fingerprints_as_they_were() -> None:
    keys = ("seed", "workspace.network_allowlist", "workspace.web_search")
    base = settings_from_dict({})
    assert fingerprint(base, *keys) == fingerprint(base, "seed", "workspace.network_allowlist")
    searching = settings_from_dict(
        {"workspace": {"web_search": {"provider": "searxng", "base_url": "http://h:8888"}}}
    )
    assert fingerprint(searching, *keys) != fingerprint(base, *keys)


def test_role_overrides_inherit_from_llm_block() -> None:
    settings = settings_from_dict(
        {"llm": {"model": "base-model", "roles": {"agent": {"provider": "openai", "model": "m2"}}}}
    )
    assert settings.llm.role("agent")["model"] == "m2"
    assert settings.llm.role("agent")["provider"] == "openai"
    assert settings.llm.role("user")["model"] == "base-model"
    assert settings.llm.role("user")["provider"] == "scripted"


def test_relative_paths_resolve_against_params_folder(tmp_path: Path) -> None:
    path = write(tmp_path, "intents: {out_dir: out/intents}\n")
    settings = load_settings(path)
    assert settings.path(settings.intents.out_dir) == tmp_path.resolve() / "out/intents"
    assert isinstance(Settings(), Settings)


def test_episodes_follow_how_tool_calls_and_context_are_handled() -> None:
    # A block-level switch changes what the model is sent and how its replies are read, so it
    # changes the episodes' fingerprint; at its default it leaves older episodes current.
    from ise_core.stages import stage

    simulate = stage("simulate")
    base = settings_from_dict({"llm": {"provider": "openai", "model": "m"}})
    at_defaults = settings_from_dict(
        {"llm": {"provider": "openai", "model": "m", "tool_calling": "native",
                 "constrained_output": False, "context_window": None}}
    )  # fmt: skip
    assert simulate.fingerprint(at_defaults) == simulate.fingerprint(base)
    for change in ({"tool_calling": "prompted"}, {"constrained_output": True},
                   {"context_window": 4096}):  # fmt: skip
        changed = settings_from_dict({"llm": {"provider": "openai", "model": "m", **change}})
        assert simulate.fingerprint(changed) != simulate.fingerprint(base), change
