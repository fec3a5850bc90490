"""The on-disk response cache: re-runs cost nothing and replay byte-identically.

Content-addressed on the *whole* request: the base URL plus the request body exactly as it
would be sent (model, messages, tools, sampling options and any extra request fields) and the
caller's ``attempt`` index, in canonical JSON, hashed with sha256. The entry lives at
``<cache_dir>/<k[:2]>/<k[2:4]>/<k>.json`` (two shard levels keep directories small at millions
of entries). The API key is never part of a request body, so it never reaches the cache.

Modes (``llm.cache``): ``read_write`` (default), ``read_only`` (use entries, add none: for a
shared, frozen cache) and ``off``. A hit sends nothing and returns the stored usage.

Several processes (parallel Airflow tasks) may share one cache directory: entries are written
to a temp file and renamed into place, so a reader sees a whole entry or none, without locks;
two writers of the same key write the same request's reply and the last rename wins. An entry
that cannot be read (hand-edited, truncated by a full disk, emptied by a power loss: entries
are not fsynced) counts as a miss and is rewritten.

What is cached: every reply the endpoint answered with 200 and a JSON body that holds a
message, including messages that turn out to be malformed (the model did answer, and a replay
must reproduce the run). A caller that wants a fresh answer after a malformed reply passes
``attempt=n`` (part of the key, never sent). Not cached: failed requests (429, 5xx, timeouts,
dropped connections) and 200 replies without any choice (they hold no model output).

The scripted backend is not cached: it is a deterministic program that recomputes a reply
faster than the disk could return one, and the same inputs already give the same outputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ise_core.atomic import atomic_write_text
from ise_core.records import canonical_json

log = logging.getLogger(__name__)

CacheMode = Literal["read_write", "read_only", "off"]
# Bumped when the key derivation or the entry layout changes, so old entries are not misread.
CACHE_FORMAT = 1


def request_key(base_url: str, body: dict[str, Any], attempt: int = 0) -> str:
    """sha256 of the canonical request (never includes credentials)."""
    payload = {
        "format": CACHE_FORMAT,
        "base_url": base_url.rstrip("/"),
        "request": body,
        "attempt": attempt,
    }
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


class ResponseCache:
    """One cache directory in one mode; cheap to construct, safe to share."""

    def __init__(self, directory: str | os.PathLike[str], mode: CacheMode = "read_write") -> None:
        if mode not in ("read_write", "read_only", "off"):
            raise ValueError(f"cache mode must be read_write, read_only or off (got {mode!r})")
        self.directory = Path(directory)
        self.mode: CacheMode = mode
        self.hits = 0
        self.misses = 0
        self.writes = 0
        self.errors = 0

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.directory)!r}, mode={self.mode!r})"

    @property
    def readable(self) -> bool:
        return self.mode != "off"

    @property
    def writable(self) -> bool:
        return self.mode == "read_write"

    def path_for(self, key: str) -> Path:
        return self.directory / key[:2] / key[2:4] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored reply for ``key``, or None (a miss, an unreadable entry, or mode off)."""
        if not self.readable:
            return None
        path = self.path_for(key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.misses += 1
            return None
        except OSError as exc:
            self.errors += 1
            self.misses += 1
            log.warning("llm cache: cannot read %s (%s); treating it as a miss", path, exc)
            return None
        try:
            entry = json.loads(text)
            if entry.get("format") != CACHE_FORMAT or entry.get("key") != key:
                raise ValueError("entry does not belong to this key or format")
            reply = entry["reply"]
            if not isinstance(reply, dict):
                raise ValueError("reply is not an object")
        except (ValueError, KeyError, AttributeError) as exc:
            self.errors += 1
            self.misses += 1
            log.warning("llm cache: ignoring unreadable entry %s (%s)", path, exc)
            return None
        self.hits += 1
        return reply

    def put(self, key: str, reply: dict[str, Any], *, model: str = "") -> None:
        """Store ``reply`` under ``key`` (atomic). A failed write is logged, never raised:
        the request has been paid for and its result is still returned to the caller."""
        if not self.writable:
            return
        entry = {
            "format": CACHE_FORMAT,
            "key": key,
            "model": model,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "reply": reply,
        }
        path = self.path_for(key)
        try:
            # No fsync: a reader still sees a whole entry or none, and the one a power loss
            # could empty reads as a miss and is fetched again. Syncing every entry cost
            # ~6 ms of disk wait and half the write's CPU per request on a busy disk.
            atomic_write_text(
                path, json.dumps(entry, ensure_ascii=False, sort_keys=True), durable=False
            )
        except OSError as exc:
            self.errors += 1
            log.warning("llm cache: cannot write %s (%s); continuing without it", path, exc)
            return
        self.writes += 1

    def stats(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "hits": self.hits,
            "misses": self.misses,
            "writes": self.writes,
            "errors": self.errors,
        }
