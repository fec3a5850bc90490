"""Two corpora for the export's redactor: secrets that must go, ordinary output that must stay.

``secret_samples()`` makes every secret kind the export removes (fresh, from a seeded
generator: real PEM keys from ``cryptography``, JWTs whose parts decode, provider keys of the
documented shapes) and puts each into the places agent output carries them: prose, a ``.env``
line, source code, a log line, an HTTP request, the start of a JSON-escaped line and a
tool call's JSON arguments.

``ordinary_samples()`` is text an agent reads and writes all day that holds no secret: this
project's own source, docs, prompts, taxonomy and synthetic persona data; a fixed set of
standard-library modules (real code full of words like "password" and "token"); logs, CSVs,
hashes, UUIDs, base64 PNG images and git output made here. Nothing in it may change.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import random
import string
import sysconfig
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ALNUM = string.ascii_letters + string.digits


# The kinds the earlier redactor let through, and those it already caught.
NEWLY_CAUGHT_KINDS = (
    "private_key",
    "json_web_token",
    "google_api_key",
    "stripe_access_key",
    "gitlab_token",
    "basic_auth_credentials",
    "authorization_header",
)
EARLIER_KINDS = ("openai_token", "aws_access_key", "github_token", "bearer_token")


@dataclass(frozen=True)
class Secret:
    """One secret: the kind it must be counted as, its text, and the parts that must go."""

    kind: str
    text: str  # the secret as it appears (a URL, a header, a whole PEM block)
    must_go: tuple[str, ...]  # substrings that may not survive redaction


@dataclass(frozen=True)
class Sample:
    name: str
    text: str
    secret: Secret | None = None


def _token(rng: random.Random, n: int, alphabet: str = ALNUM) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _jwt(rng: random.Random, alg: str = "HS256") -> str:
    header = _b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    claims = {"sub": str(rng.randrange(10**9)), "name": "Dana", "iat": 1767225600}
    payload = _b64url(json.dumps(claims).encode())
    signature = _b64url(rng.randbytes(32 if alg == "HS256" else 256))
    return f"{header}.{payload}.{signature}"


def _pem_keys() -> list[tuple[str, str]]:
    """(name, PEM text) of real private keys in every common container."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ed_key = ed25519.Ed25519PrivateKey.generate()
    none = ser.NoEncryption()
    pem, openssh = ser.Encoding.PEM, ser.PrivateFormat.OpenSSH
    return [
        ("rsa-pkcs1", rsa_key.private_bytes(pem, ser.PrivateFormat.TraditionalOpenSSL, none)),
        ("rsa-pkcs8", rsa_key.private_bytes(pem, ser.PrivateFormat.PKCS8, none)),
        ("ec", ec_key.private_bytes(pem, ser.PrivateFormat.TraditionalOpenSSL, none)),
        ("openssh-ed25519", ed_key.private_bytes(pem, openssh, none)),
        (
            "pkcs8-encrypted",
            ec_key.private_bytes(
                pem, ser.PrivateFormat.PKCS8, ser.BestAvailableEncryption(b"correct horse")
            ),
        ),
    ]  # type: ignore[return-value]


def _pem_secret(name: str, pem: bytes | str) -> Secret:
    text = pem.decode() if isinstance(pem, bytes) else pem
    body = [line for line in text.splitlines() if line and not line.startswith("-----")]
    return Secret("private_key", text.strip(), tuple(line for line in body if len(line) >= 16))


def _armored(rng: random.Random, label: str, lines: int = 8) -> str:
    body = "\n".join(_token(rng, 64, ALNUM + "+/") for _ in range(lines))
    return f"-----BEGIN {label}-----\nVersion: GnuPG v2\n\n{body}\n=abcd\n-----END {label}-----"


def _secrets(rng: random.Random) -> list[Secret]:
    """Every kind the redactor must catch, with fresh values."""
    out = [_pem_secret(name, pem) for name, pem in _pem_keys()]
    out.append(_pem_secret("pgp", _armored(rng, "PGP PRIVATE KEY BLOCK")))
    putty = (
        "PuTTY-User-Key-File-2: ssh-rsa\nEncryption: none\nComment: deploy\nPublic-Lines: 1\n"
        f"{_token(rng, 60)}\nPrivate-Lines: 2\n{_token(rng, 64)}\n{_token(rng, 40)}\n"
        f"Private-MAC: {_token(rng, 40, '0123456789abcdef')}"
    )
    out.append(Secret("private_key", putty, tuple(putty.splitlines()[-4:-1])))
    for alg in ("HS256", "RS256"):
        token = _jwt(rng, alg)
        out.append(Secret("json_web_token", token, (token, token.rsplit(".", 1)[1][:24])))
    google = "AIza" + _token(rng, 35, ALNUM + "_-")
    out.append(Secret("google_api_key", google, (google, google[4:])))
    for prefix, n in (("sk_live_", 24), ("sk_live_", 99), ("rk_live_", 32), ("sk_test_", 24)):
        key = prefix + _token(rng, n)
        out.append(Secret("stripe_access_key", key, (key, key[-16:])))
    gitlab = "glpat-" + _token(rng, 20, ALNUM + "_-")
    out.append(Secret("gitlab_token", gitlab, (gitlab, gitlab[6:])))
    for url, password in (
        ("postgres://app:{p}@db.internal:5432/sales", "pass"),
        ("postgresql://report_user:{p}@10.0.3.7/warehouse", _token(rng, 14)),
        ("mysql://root:{p}@localhost:3306/shop", "S3cr3t!x$"),
        ("redis://:{p}@cache:6379/0", _token(rng, 20)),
        ("amqp://guest:{p}@rabbit:5672/", "guest-pw-9"),
        ("mongodb+srv://admin:{p}@cluster0.ab1cd.mongodb.net/app", "p%40ss-w0rd"),
        ("https://deploy:{p}@git.example.com/team/repo.git", _token(rng, 16)),
    ):
        out.append(Secret("basic_auth_credentials", url.format(p=password), (f":{password}@",)))
    basic = base64.b64encode(f"admin:{_token(rng, 12)}".encode()).decode()
    out.append(Secret("authorization_header", f"Authorization: Basic {basic}", (basic,)))
    digest_less = base64.b64encode(b"svc:" + rng.randbytes(9)).decode()
    out.append(
        Secret("authorization_header", f'"Authorization": "Basic {digest_less}"', (digest_less,))
    )
    token = _token(rng, 40, ALNUM + "-._")
    out.append(Secret("authorization_header", f"Authorization: Bearer {token}", (token,)))
    opaque = _token(rng, 10) + "7" + _token(rng, 10)
    out.append(Secret("bearer_token", f"bearer {opaque}", (opaque,)))
    user_pw = f"ci-bot:{_token(rng, 18)}"
    out.append(
        Secret("curl_user_credentials", f"curl -u {user_pw} https://api.example.com/v1", (user_pw,))
    )
    project = "sk-proj-" + _token(rng, 48, ALNUM + "_-")
    legacy = "sk-" + _token(rng, 20) + "T3BlbkFJ" + _token(rng, 20)
    out += [Secret("openai_token", k, (k, k[-20:])) for k in (project, legacy)]
    aws = "AKIA" + _token(rng, 16, string.ascii_uppercase + string.digits)
    out.append(Secret("aws_access_key", aws, (aws,)))
    for github in ("ghp_" + _token(rng, 36), "github_pat_" + _token(rng, 70, ALNUM + "_")):
        out.append(Secret("github_token", github, (github, github[-20:])))
    hf = "hf_" + _token(rng, 34)
    out.append(Secret("huggingface_token", hf, (hf,)))
    slack = f"xoxb-{rng.randrange(10**11)}-{rng.randrange(10**12)}-{_token(rng, 24)}"
    out.append(Secret("slack_token", slack, (slack, slack[-20:])))
    return out


def _detect_secrets_kinds(rng: random.Random) -> list[Secret]:
    """One sample for each other detect-secrets plugin in use (shapes from their regexes)."""
    lower, hexdigits = string.ascii_lowercase + string.digits, "0123456789abcdef"
    values = {
        "twilio_api_key": "AC" + _token(rng, 32, lower),
        "sendgrid_api_key": f"SG.{_token(rng, 22)}.{_token(rng, 43)}",
        "square_oauth_secret": "sq0csp-" + _token(rng, 43),
        "mailchimp_access_key": _token(rng, 32, lower) + "-us12",
        "pypi_token": "pypi-AgEIcHlwaS5vcmc" + _token(rng, 80),
        "azure_storage_account_access_key": "AccountKey=" + _token(rng, 86, ALNUM + "+/") + "==",
        "artifactory_credentials": "AKC" + _token(rng, 60),
        "discord_bot_token": f"M{_token(rng, 23)}.{_token(rng, 6)}.{_token(rng, 27)}",
        "telegram_bot_token": f"{rng.randrange(10**8, 10**9)}:{_token(rng, 35)}",
        "slack_token": f"https://hooks.slack.com/services/T{_token(rng, 8)}/B{_token(rng, 8)}/"
        + _token(rng, 24),
    }
    out = [Secret(kind, value, (value,)) for kind, value in values.items()]
    keyed = {
        "npm_tokens": ("//registry.npmjs.org/:_authToken=", "npm_" + _token(rng, 36)),
        "ibm_cos_hmac_credentials": ("secret_access_key: ", _token(rng, 48, hexdigits)),
        "cloudant_credentials": ("cloudant_password = ", _token(rng, 64, hexdigits)),
        "ibm_cloud_iam_key": ("ibm_cloud_iam_key = ", _token(rng, 44)),
        "softlayer_credentials": ("softlayer_api_key = ", _token(rng, 64, lower)),
        "aws_access_key": ("aws_secret_access_key = ", _token(rng, 40)),
    }
    for kind, (prefix, value) in keyed.items():
        quote = "'" if kind == "aws_access_key" else ""
        out.append(Secret(kind, f"{prefix}{quote}{value}{quote}", (value,)))
    return out


# The places a secret turns up in agent output; {s} is the secret.
CONTEXTS: dict[str, str] = {
    "prose": "Here is what I found: {s} (from the config)",
    "dotenv": "# service settings\nSERVICE_CREDENTIAL={s}\nDEBUG=false\n",
    "code": 'CONFIG = {{\n    "endpoint": "https://api.example.com",\n    "key": "{s}",\n}}\n',
    "log": "2026-12-07T10:14:03Z INFO  worker-3 connecting with {s} retry=0\n",
    "http": "GET /v1/items HTTP/1.1\nHost: api.example.com\n{s}\nAccept: */*\n",
}


def _placed(secret: Secret) -> Iterator[tuple[str, str]]:
    for name, template in CONTEXTS.items():
        yield name, template.format(s=secret.text)
    # JSON-escaped: as the file a tool wrote or the JSON a command printed, and as arguments.
    yield "json-line-start", json.dumps({"log": f"line one\n{secret.text}\nline three"})
    yield "arguments", json.dumps({"path": "notes.txt", "content": f"{secret.text}\n"})


def secret_samples(seed: int = 22) -> list[Sample]:
    """The kinds the export promises, each in every context."""
    rng = random.Random(seed)
    return [
        Sample(f"{secret.kind}/{index}/{where}", text, secret)
        for index, secret in enumerate(_secrets(rng))
        for where, text in _placed(secret)
    ]


def detect_secrets_samples(seed: int = 22) -> list[Sample]:
    """detect-secrets' other kinds, in the plain contexts its regexes are written for (some
    need a space or a quote around the value, so a JSON-escaped line hides them)."""
    rng = random.Random(seed + 1)
    return [
        Sample(f"{secret.kind}/{where}", template.format(s=secret.text), secret)
        for secret in _detect_secrets_kinds(rng)
        for where, template in CONTEXTS.items()
    ]


# --- ordinary output --------------------------------------------------------------------------

STDLIB_MODULES = (
    "argparse.py",
    "base64.py",
    "csv.py",
    "ftplib.py",
    "getpass.py",
    "hashlib.py",
    "hmac.py",
    "imaplib.py",
    "netrc.py",
    "poplib.py",
    "secrets.py",
    "smtplib.py",
    "ssl.py",
    "uuid.py",
    "http/client.py",
    "http/cookiejar.py",
    "urllib/request.py",
    "urllib/parse.py",
    "email/utils.py",
    "logging/handlers.py",
    "json/encoder.py",
)


def _project_files() -> Iterator[Sample]:
    patterns = ("ise_core/**/*.py", "ise_core/**/*.md", "ise_core/**/*.yaml", "docs/*.md")
    for pattern in patterns:
        for path in sorted(ROOT.glob(pattern)):
            yield Sample(f"project/{path.relative_to(ROOT)}", path.read_text(encoding="utf-8"))
    personas = ROOT / "ise_core/taxonomy/personas.jsonl"
    for number, line in enumerate(personas.read_text(encoding="utf-8").splitlines()):
        yield Sample(f"persona/{number}", line)


def _stdlib_files() -> Iterator[Sample]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for name in STDLIB_MODULES:
        yield Sample(f"stdlib/{name}", (stdlib / name).read_text(encoding="utf-8"))


def _png(rng: random.Random, size: int) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(2, 2), dpi=size)
    axes.plot([rng.random() for _ in range(20)])
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def _made_here(rng: random.Random) -> Iterator[Sample]:
    uuids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(400)]
    yield Sample("uuids", "\n".join(uuids))
    digests = []
    for number in range(300):
        data = f"row-{number}".encode()
        digests += [
            hashlib.md5(data).hexdigest(),
            hashlib.sha1(data).hexdigest(),
            hashlib.sha256(data).hexdigest(),
            "sha256-" + base64.b64encode(hashlib.sha256(data).digest()).decode(),
            "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode(),
        ]
    yield Sample("hashes", "\n".join(digests))
    git_log = "\n".join(
        f"commit {hashlib.sha1(str(i).encode()).hexdigest()}\nAuthor: Dana <dana@example.com>\n"
        f"Date:   Mon Dec 7 10:{i % 60:02d}:00 2026 +0000\n\n    Fix flaky test {i}\n"
        for i in range(60)
    )
    yield Sample("git-log", git_log)
    for number, dpi in enumerate((40, 80, 120)):
        encoded = base64.b64encode(_png(rng, dpi)).decode()
        yield Sample(f"png/{number}", f'<img src="data:image/png;base64,{encoded}" alt="plot">')
        yield Sample(f"png-raw/{number}", encoded)
    yield Sample("csv/sales", _sales_csv(rng))
    yield Sample("log/nginx", _access_log(rng))
    yield Sample("log/app", _app_log(rng))
    yield Sample("log/pytest", _pytest_output(rng))
    yield Sample("json/api", json.dumps(_api_reply(rng), indent=2))


def _sales_csv(rng: random.Random) -> str:
    rows = ["order_id,customer_email,sku,qty,unit_price,created_at,region"]
    for number in range(500):
        rows.append(
            f"{uuid.UUID(int=rng.getrandbits(128), version=4)},user{number}@example.com,"
            f"SKU-{rng.randrange(10**6):06d},{rng.randrange(1, 9)},{rng.uniform(1, 500):.2f},"
            f"2026-11-{rng.randrange(1, 29):02d}T{rng.randrange(24):02d}:00:00Z,"
            f"{rng.choice(['EMEA', 'APAC', 'AMER'])}"
        )
    return "\n".join(rows) + "\n"


def _access_log(rng: random.Random) -> str:
    paths = ["/api/v1/orders", "/login", "/static/app.js", "/healthz", "/api/v1/users?page=2"]
    lines = []
    for _ in range(400):
        ip = ".".join(str(rng.randrange(1, 255)) for _ in range(4))
        lines.append(
            f"{ip} - - [07/Dec/2026:10:{rng.randrange(60):02d}:{rng.randrange(60):02d} +0000] "
            f'"GET {rng.choice(paths)} HTTP/1.1" {rng.choice([200, 200, 304, 401, 404, 500])} '
            f'{rng.randrange(100, 90000)} "https://shop.example.com/" "Mozilla/5.0 (X11; Linux)"'
        )
    return "\n".join(lines)


def _app_log(rng: random.Random) -> str:
    events = [
        "token bucket refilled: 600 tokens available",
        "password reset email queued for user_id={n}",
        "session {u} expired; re-authentication required",
        "request_id={u} latency_ms={n} status=ok",
        "api key rotation scheduled (key id kid-{n})",
        "cache miss for key orders:{n}",
        "Authorization header missing; returning 401",
        "bearer of the certificate confirmed",
        "connecting to postgres at db.internal:5432 as app",
        "secret manager returned 3 entries",
    ]
    lines = []
    for number in range(300):
        event = rng.choice(events).format(n=rng.randrange(10**6), u=uuid.UUID(int=number))
        lines.append(f"2026-12-07 10:{number % 60:02d}:00,123 INFO app.worker {event}")
    return "\n".join(lines)


def _pytest_output(rng: random.Random) -> str:
    tests = [
        f"tests/test_api.py::test_case_{i} {rng.choice(['PASSED', 'FAILED'])}" for i in range(80)
    ]
    trace = (
        'E   AssertionError: assert {"status": "ok", "token_count": 12} == {"status": "ok"}\n'
        "E     Left contains 1 more item:\n"
        "E     {'token_count': 12}\n"
    )
    return "\n".join(tests) + "\n" + trace + "=== 72 passed, 8 failed in 3.21s ===\n"


def _api_reply(rng: random.Random) -> dict[str, object]:
    return {
        "data": [
            {
                "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "etag": hashlib.sha1(str(i).encode()).hexdigest(),
                "url": f"https://api.example.com/v1/items/{i}?expand=owner",
                "owner": {"login": f"user{i}", "avatar_url": f"https://cdn.example.com/u/{i}.png"},
                "password_policy": "min 12 characters",
                "token_type": "refresh",
            }
            for i in range(50)
        ],
        "next": "https://api.example.com/v1/items?cursor=" + _b64url(rng.randbytes(24)),
    }


def ordinary_samples(seed: int = 22) -> list[Sample]:
    rng = random.Random(seed)
    return [*_project_files(), *_stdlib_files(), *_made_here(rng)]
