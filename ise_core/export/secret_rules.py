"""The secret shapes the export removes: detect-secrets' plugins plus a few rules of our own.

Most rules come from detect-secrets (Yelp, Apache-2.0; the version pinned in
``requirements.lock``): every regex plugin it ships, except

- the entropy detectors (``Base64HighEntropyString``, ``HexHighEntropyString``): hashes, UUIDs,
  base64 images and the synthetic persona data are high-entropy and must survive;
- ``KeywordDetector``: it guesses from words like "password" or "secret" next to a value,
  which in conversations is mostly prose ("secret: the launch date moved");
- ``IPPublicDetector``: a public address is not a secret.

A plugin is used through its ``denylist`` (the documented way to write one) and confirmed by
its own ``analyze_string`` (the JWT plugin, for one, checks that the parts decode).

detect-secrets reports a line, not a span, so it does not cover whole PEM blocks, Google API
keys, ``Authorization`` headers, keys longer than its fixed lengths, or keys at the start of a
JSON-escaped line (``\\nsk-...``); ``EXTRA_RULES`` below do, each naming where it comes from.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

API_KEY_MARK = "[REDACTED_API_KEY]"
TOKEN_MARK = "[REDACTED_TOKEN]"
SECRET_MARK = "[REDACTED_SECRET]"
PRIVATE_KEY_MARK = "[REDACTED_PRIVATE_KEY]"

# detect-secrets plugins left out (see the module docstring).
EXCLUDED_PLUGINS = frozenset(
    {"Base64HighEntropyString", "HexHighEntropyString", "KeywordDetector", "IPPublicDetector"}
)
# Plugins whose regex matches a keyword or URL around the secret and captures the secret
# itself in group 1; of every other plugin the whole match is the secret.
_SECRET_IN_GROUP_1 = frozenset(
    {
        "AWSKeyDetector",
        "BasicAuthDetector",
        "CloudantDetector",
        "IbmCloudIamDetector",
        "IbmCosHmacDetector",
        "NpmDetector",
        "SoftlayerDetector",
    }
)
# Necessary conditions, checked on the lower-cased text before a plugin's regexes run: each
# group names words of which one must occur (literals of the plugin's regexes). Scanning for a
# word is far cheaper than running a regex that starts with a look-behind or a class, and
# ``//.+/:_authToken=`` would rescan a long line from every ``//``. A plugin not named here
# always runs; ``tests/export/test_secret_corpus.py`` checks every named one still fires.
_KEY_WORDS = ("key", "pw", "pass", "token")
_PLUGIN_KEYWORDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "AWSKeyDetector": (("a3t", "abia", "acca", "akia", "asia", "aws"),),
    "ArtifactoryDetector": (("akc", "ap"),),
    "AzureStorageKeyDetector": (("accountkey=",),),
    "BasicAuthDetector": (("://",),),
    "CloudantDetector": (("cl",), (*_KEY_WORDS, "cloudant.com")),
    "GitHubTokenDetector": (("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),),
    "GitLabTokenDetector": (("gl", "gr1348941"),),
    "IbmCloudIamDetector": (_KEY_WORDS,),
    "IbmCosHmacDetector": (("secret",), ("key",)),
    "JwtTokenDetector": (("eyj",),),
    "MailchimpDetector": (("-us",),),
    "NpmDetector": (("_authtoken",),),
    "OpenAIDetector": (("t3blbkfj",),),
    "PrivateKeyDetector": (("private key", "putty-user-key-file"),),
    "PypiTokenDetector": (("pypi-age",),),
    "SendGridDetector": (("sg.",),),
    "SlackDetector": (("xox", "hooks.slack.com"),),
    "SoftlayerDetector": (("softlayer", "sl"),),
    "SquareOAuthDetector": (("sq0csp-",),),
    "StripeDetector": (("k_live_",),),
    "TwilioKeyDetector": (("ac", "sk"),),
}
_PLUGIN_MARKS = {"PrivateKeyDetector": PRIVATE_KEY_MARK, "BasicAuthDetector": SECRET_MARK}

# A key's tail: detect-secrets matches some keys at a fixed length (Stripe 24, GitHub 36) and
# a longer key must not leave its rest behind.
_KEY_TAIL = re.compile(r"[A-Za-z0-9_\-]*")
_JWT_TAIL = re.compile(r"[A-Za-z0-9_\-.+/=]*")
# A value that stands for a secret instead of being one, as docs and templates write it:
# <password>, ${DB_PASSWORD}, $TOKEN, {{ token }}, {password}, %(password)s, ****, ...
_PLACEHOLDER = re.compile(
    r"<[^<>]*>|\$\{?[A-Z_][A-Z0-9_]*\}?|\{\{[^{}]*\}\}|\{[A-Za-z_][A-Za-z0-9_]*\}"
    r"|%\([A-Za-z_][A-Za-z0-9_]*\)s|\*+|\.\.\.|…"
)
# Where a key may start: not inside a longer word, but right after a JSON escape (``\n``).
_START = r"(?:(?<=\\[nrt])|(?<![A-Za-z0-9_\-]))"


@dataclass(frozen=True)
class Rule:
    """One secret shape: what it matches, which part is the secret, and what replaces it."""

    kind: str  # the name counted in stats.json
    pattern: re.Pattern[str]
    mark: str
    source: str
    group: int | str = 0  # the secret's group; 0: the whole match
    tail: re.Pattern[str] | None = None  # extend the secret over these characters
    keywords: tuple[tuple[str, ...], ...] = ()  # per group one word must occur (lower case)
    confirm: Callable[[str], bool] | None = None  # a plugin's own check of the match

    def may_match(self, lowered: str) -> bool:
        """False when a word the rule needs is missing from the lower-cased text."""
        return all(any(word in lowered for word in group) for group in self.keywords)

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        """(start, end) of every secret this rule finds in ``text``."""
        for match in self.pattern.finditer(text):
            start, end = match.span(self.group)
            if start < 0:  # the group did not take part in this match
                start, end = match.span()
            if self.confirm is not None and not self.confirm(match.group(0)):
                continue
            if self.group != 0 and _PLACEHOLDER.fullmatch(text, start, end):
                continue  # a password or header value written as a placeholder
            if self.tail is not None:
                tail = self.tail.match(text, end)
                end = tail.end() if tail else end
            if start < end:
                yield start, end


def _kind(secret_type: str) -> str:
    """detect-secrets' ``secret_type`` as a stats key: "JSON Web Token" → json_web_token."""
    return re.sub(r"[^a-z0-9]+", "_", secret_type.lower()).strip("_")


def _confirmer(plugin: object) -> Callable[[str], bool]:
    analyze = plugin.analyze_string  # type: ignore[attr-defined]
    return lambda text: any(True for _ in analyze(text))


def detect_secrets_rules() -> list[Rule]:
    """One rule per regex of every detect-secrets plugin but the excluded ones."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.plugins.base import RegexBasedDetector

    rules: list[Rule] = []
    plugins: dict[str, type[Any]] = dict(get_mapping_from_secret_type_to_class())
    for secret_type, plugin_class in sorted(plugins.items()):
        name = plugin_class.__name__
        if name in EXCLUDED_PLUGINS or not issubclass(plugin_class, RegexBasedDetector):
            continue
        plugin = plugin_class()
        for pattern in plugin.denylist:
            in_group = name in _SECRET_IN_GROUP_1 and pattern.groups >= 1
            rules.append(
                Rule(
                    kind=_kind(secret_type),
                    pattern=pattern,
                    mark=_PLUGIN_MARKS.get(name, API_KEY_MARK),
                    source=f"detect-secrets {name}",
                    group=1 if in_group else 0,
                    tail=None if in_group else (_JWT_TAIL if "Jwt" in name else _KEY_TAIL),
                    keywords=_PLUGIN_KEYWORDS.get(name, ()),
                    confirm=_confirmer(plugin),
                )
            )
    return rules


def _rule(kind: str, pattern: str, mark: str, source: str, **options: object) -> Rule:
    return Rule(kind, re.compile(pattern), mark, source, **options)  # type: ignore[arg-type]


GITLEAKS = "gitleaks default config (MIT), rule"
EXTRA_RULES: tuple[Rule, ...] = (
    _rule(
        "private_key",
        r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----"
        r"[\s\S]*?-----END[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----",
        PRIVATE_KEY_MARK,
        f"{GITLEAKS} private-key (the whole block, header to footer)",
        keywords=(("private key",),),
    ),
    _rule(
        "private_key",
        # A block cut short (truncated output, no footer follows): the header and the key's
        # lines after it (base64, or "Name: value" headers), real or JSON-escaped line breaks.
        r"-----BEGIN[ A-Z0-9_-]{0,100}PRIVATE KEY(?: BLOCK)?-----"
        r"(?![\s\S]*?-----END[ A-Z0-9_-]{0,100}PRIVATE KEY)"
        r"(?:(?:\r?\n|\\r|\\n)+(?:[A-Za-z0-9+/=]+|[A-Za-z][A-Za-z\-]*: ?[^\r\n\\]*))*",
        PRIVATE_KEY_MARK,
        "ours: a private key block without its footer",
        keywords=(("private key",),),
    ),
    _rule(
        "private_key",
        r"PuTTY-User-Key-File-\d+:[\s\S]*?Private-MAC: ?[0-9a-fA-F]+",
        PRIVATE_KEY_MARK,
        "ours: PuTTY key file (detect-secrets flags only its first line)",
        keywords=(("putty-user-key-file",),),
    ),
    _rule(
        "google_api_key",
        _START + r"AIza[0-9A-Za-z_\-]{35}",
        API_KEY_MARK,
        f"{GITLEAKS} gcp-api-key",
        tail=_KEY_TAIL,
        keywords=(("aiza",),),
    ),
    _rule(
        "stripe_access_key",
        _START + r"(?:sk|rk)_(?:live|test|prod)_[0-9A-Za-z]{10,}",
        API_KEY_MARK,
        f"{GITLEAKS} stripe-access-token",
        keywords=(("k_live_", "k_test_", "k_prod_"),),
    ),
    _rule(
        "basic_auth_credentials",
        # RFC 3986 userinfo, scheme://<user>:<password>@host (the user may be empty, as in
        # redis://:<password>@host); only the password goes.
        r"(?i)\b[a-z][a-z0-9+.\-]*://[^\s/:@'\"]*:(?P<secret>[^\s/@'\"]+)@",
        SECRET_MARK,
        "ours: password in a URL (detect-secrets' BasicAuthDetector misses those with "
        "reserved characters such as ! or $)",
        group="secret",
        keywords=(("://",),),
    ),
    _rule(
        "authorization_header",
        r"(?i)(?:(?<=\\[nrt])|\b)authorization(?:\\?[\"'])?\s*[:=]\s*(?:\\?[\"'])?"
        r"(?:basic|digest|token|bearer)\s+"
        r"(?P<secret>[A-Za-z0-9+/=._~\-]{4,})",
        TOKEN_MARK,
        "ours: HTTP Authorization header credentials (RFC 9110 section 11.6.2)",
        group="secret",
        keywords=(("authorization",),),
    ),
    _rule(
        "bearer_token",
        # A digit or 20+ characters: "bearer certificates" is prose, not a token.
        r"(?i)(?:(?<=\\[nrt])|\b)bearer\s+(?P<secret>(?=[A-Za-z._~+/=\-]*[0-9])[A-Za-z0-9._~+/=\-]{8,}"
        r"|[A-Za-z0-9._~+/=\-]{20,})",
        TOKEN_MARK,
        "ours: bearer token anywhere (logs, curl commands)",
        group="secret",
        keywords=(("bearer",),),
    ),
    _rule(
        "curl_user_credentials",
        r"(?:(?<=\\[nrt])|\b)curl\b[^\n]*?\s(?:-u|--user)(?:\s+|=)(?P<q>['\"]?)(?P<secret>[^\s'\":]+:[^\s'\"]+)(?P=q)",
        SECRET_MARK,
        f"{GITLEAKS} curl-auth-user (simplified)",
        group="secret",
        keywords=(("curl",), ("-u",)),
    ),
    _rule(
        "openai_token",
        _START + r"sk-[A-Za-z0-9][A-Za-z0-9_\-]{15,}",
        API_KEY_MARK,
        "ours: sk- keys (OpenAI project and service keys, and providers copying the shape)",
        keywords=(("sk-",),),
    ),
    _rule(
        "github_token",
        _START + r"(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})",
        API_KEY_MARK,
        f"{GITLEAKS} github-pat, github-fine-grained-pat, github-oauth, github-app-token",
        keywords=(("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),),
    ),
    _rule(
        "huggingface_token",
        _START + r"hf_[A-Za-z0-9]{20,}",
        API_KEY_MARK,
        f"{GITLEAKS} huggingface-access-token",
        keywords=(("hf_",),),
    ),
    _rule(
        "aws_access_key",
        _START + r"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}(?![0-9A-Z])",
        API_KEY_MARK,
        f"{GITLEAKS} aws-access-token",
        keywords=(("a3t", "akia", "asia", "abia", "acca"),),
    ),
    _rule(
        "slack_token",
        _START + r"xox[abeoprs]-[A-Za-z0-9\-]{10,}",
        API_KEY_MARK,
        f"{GITLEAKS} slack-bot-token, slack-user-token, slack-legacy-token",
        keywords=(("xox",),),
    ),
)


@functools.cache
def default_rules() -> tuple[Rule, ...]:
    """Our rules, then detect-secrets': built once per process (the import costs ~0.3 s)."""
    return (*EXTRA_RULES, *detect_secrets_rules())
