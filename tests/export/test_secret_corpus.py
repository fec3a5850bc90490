"""The redactor on two corpora: every secret kind goes, ordinary agent output stays.

Sizes and the false-positive count are printed (``pytest -s``) so a rule change shows its
effect; the ordinary corpus must come out byte for byte unchanged (``FALSE_POSITIVE_BOUND``).
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

from ise_core.export.redact import Redactor, build_redactor
from ise_core.export.secret_rules import EXCLUDED_PLUGINS, Rule, default_rules
from tests.export.secret_corpus import (
    CONTEXTS,
    EARLIER_KINDS,
    NEWLY_CAUGHT_KINDS,
    Sample,
    detect_secrets_samples,
    ordinary_samples,
    secret_samples,
)

# Replacements allowed in the ordinary corpus. It is 0 today; a rule that needs more must
# say why here.
FALSE_POSITIVE_BOUND = 0

DETECT_SECRETS_PLUGINS_IN_USE = {
    "AWSKeyDetector",
    "ArtifactoryDetector",
    "AzureStorageKeyDetector",
    "BasicAuthDetector",
    "CloudantDetector",
    "DiscordBotTokenDetector",
    "GitHubTokenDetector",
    "GitLabTokenDetector",
    "IbmCloudIamDetector",
    "IbmCosHmacDetector",
    "JwtTokenDetector",
    "MailchimpDetector",
    "NpmDetector",
    "OpenAIDetector",
    "PrivateKeyDetector",
    "PypiTokenDetector",
    "SendGridDetector",
    "SlackDetector",
    "SoftlayerDetector",
    "SquareOAuthDetector",
    "StripeDetector",
    "TelegramBotTokenDetector",
    "TwilioKeyDetector",
}


@pytest.fixture(scope="module")
def secrets() -> list[Sample]:
    return secret_samples()


@pytest.fixture(scope="module")
def ordinary() -> list[Sample]:
    return ordinary_samples()


def _redactor() -> Redactor:
    # Paths that occur nowhere in the corpora: host-path redaction is tested elsewhere.
    return build_redactor(project_dir="/srv/ise-7f3a", environ={"HOME": "/home/runner-7f3a"})


def _leaks(sample: Sample, out: str) -> list[str]:
    """What of the sample's secret survived, in the text or in the JSON it encodes."""
    assert sample.secret is not None
    views = [out]
    if sample.text.startswith("{"):
        try:
            views.append(json.dumps(json.loads(out), ensure_ascii=False))
            views += [str(v) for v in json.loads(out).values()]
        except ValueError:
            return ["the redacted JSON no longer parses"]
    return [part for part in sample.secret.must_go for view in views if part in view]


def _check(samples: list[Sample]) -> list[str]:
    problems = []
    for sample in samples:
        assert sample.secret is not None
        redactor = _redactor()
        out = redactor.text(sample.text)
        leaks = _leaks(sample, out)
        if leaks:
            problems.append(f"{sample.name}: {leaks[0][:40]!r} survived in {out[:160]!r}")
        if sample.secret.kind not in redactor.counts:
            problems.append(f"{sample.name}: counted as {dict(redactor.counts)}")
        if _redactor().text(out) != out:
            problems.append(f"{sample.name}: a second pass changed the output")
    return problems


def test_every_secret_kind_is_redacted_in_every_context(secrets: list[Sample]) -> None:
    kinds = Counter(s.secret.kind for s in secrets if s.secret)
    print(f"\nsecret corpus: {len(secrets)} samples, {len(kinds)} kinds: {dict(kinds)}")
    assert {*NEWLY_CAUGHT_KINDS, *EARLIER_KINDS} <= set(kinds)
    problems = _check(secrets)
    assert problems == [], "\n".join(problems)


def test_detect_secrets_other_kinds_are_redacted() -> None:
    samples = detect_secrets_samples()
    print(f"\ndetect-secrets kinds: {len(samples)} samples")
    problems = _check(samples)
    assert problems == [], "\n".join(problems)


def test_ordinary_output_is_unchanged(ordinary: list[Sample]) -> None:
    redactor = _redactor()
    changed = []
    for sample in ordinary:
        before = Counter(redactor.counts)
        if redactor.text(sample.text) != sample.text:
            changed.append(f"{sample.name}: {dict(redactor.counts - before)}")
    false_positives = sum(redactor.counts.values())
    size = sum(len(s.text) for s in ordinary)
    print(
        f"\nordinary corpus: {len(ordinary)} samples, {size:,} characters; "
        f"false positives: {false_positives}"
    )
    assert false_positives <= FALSE_POSITIVE_BOUND, "\n".join(changed)
    assert {s.name.split("/")[0] for s in ordinary} >= {
        "project",
        "persona",
        "stdlib",
        "uuids",
        "hashes",
        "png",
        "csv",
        "log",
    }


def _ds_plugin(rule: Rule) -> str | None:
    prefix = "detect-secrets "
    return rule.source[len(prefix) :] if rule.source.startswith(prefix) else None


def test_detect_secrets_plugins_in_use_and_their_keywords_hold(secrets: list[Sample]) -> None:
    rules = default_rules()
    in_use = {name for rule in rules if (name := _ds_plugin(rule))}
    # A new detect-secrets release that adds or drops a plugin shows up here.
    assert in_use == DETECT_SECRETS_PLUGINS_IN_USE
    assert not in_use & EXCLUDED_PLUGINS
    # Every plugin fires on the corpus, and its keyword filter never hides a match.
    fired: set[str] = set()
    for sample in [*secrets, *detect_secrets_samples()]:
        lowered = sample.text.lower()
        for rule in rules:
            if rule.pattern.search(sample.text) and (name := _ds_plugin(rule)):
                assert rule.may_match(lowered), (name, sample.name)
                fired.add(name)
    assert fired == in_use


def test_replacements_never_split_a_json_escape() -> None:
    redactor = _redactor()
    # A JWT regex range that takes backslashes, a URL password ending in an escaped quote.
    for text in (
        json.dumps({"a": "x\\" + "AIza" + "B" * 35}),
        json.dumps({"url": 'postgres://u:p"w@h/db'}),
        json.dumps({"h": "Authorization: Basic dXNlcjpwYXNz\\"}),
    ):
        json.loads(redactor.text(text))


def test_environment_values_and_host_paths_in_every_context() -> None:
    env_value = 'v4l!d"Secret-2026'  # a quote: JSON-escaped inside arguments
    redactor = build_redactor(
        project_dir="/srv/ise-7f3a",
        sandbox_root="/srv/ise-7f3a/.cache/sandboxes",
        environ={"HOME": "/home/runner-7f3a", "WAREHOUSE_PASSWORD": env_value},
    )
    for where, template in CONTEXTS.items():
        for planted, kind in (
            (env_value, "environment_secret"),
            ("/srv/ise-7f3a/.cache/sandboxes/ep-1/workspace/report.csv", "host_path"),
            ("/home/runner-7f3a/.ssh/config", "host_path"),
        ):
            for text in (template.format(s=planted), json.dumps({"content": planted})):
                before = redactor.counts[kind]
                out = redactor.text(text)
                assert planted not in out and json.dumps(planted)[1:-1] not in out, (where, out)
                assert redactor.counts[kind] > before
                if text.startswith("{"):
                    json.loads(out)
