"""An Airflow hook that points the ISE LLM roles at the endpoint in the ``ise_llm`` connection.

The connection keeps the key in Airflow's secret store instead of params.yaml or the worker's
environment:

    host      the endpoint's base URL, e.g. ``https://api.example.com/v1`` (or a host name, with
              ``schema`` as the path and ``port``)
    password  the API key
    extra     JSON: ``model`` and any other llm-block setting — ``max_concurrency``,
              ``requests_per_minute``, ``tokens_per_minute``, ``timeout_s``, ``max_retries``,
              ``temperature``, ``budget``, ``prices``, ``roles`` (per-role model, sampling) ...

Without the connection every task falls back to params.yaml and the environment (the key in
the variable named by ``llm.api_key_env``). The key never enters settings, XCom, logs or
files: tasks run inside ``exported_key()``, which puts it in a private variable of the task's
own process (``ISE_LLM_CONNECTION_API_KEY``) for the duration of the task, and the settings
only carry that variable's *name*.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from airflow.sdk import BaseHook, Connection
from airflow.sdk.exceptions import AirflowNotFoundException

from ise_core.config import Settings, deep_merge
from ise_core.errors import ConfigError

# llm-block keys a connection's extra may set; the key itself and local paths may not.
_FORBIDDEN_EXTRA = {"api_key", "api_key_env", "cache_dir", "base_url"}


class ISELLMHook(BaseHook):
    """Builds the llm settings (and ``Chat`` clients) from the ``ise_llm`` connection."""

    conn_name_attr = "ise_llm_conn_id"
    default_conn_name = "ise_llm"
    conn_type = "generic"
    hook_name = "ISE LLM endpoint"
    KEY_ENV = "ISE_LLM_CONNECTION_API_KEY"

    def __init__(
        self,
        ise_llm_conn_id: str = default_conn_name,
        environ: MutableMapping[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.conn_id = ise_llm_conn_id
        self._environ: MutableMapping[str, str] = os.environ if environ is None else environ
        self._conn: Connection | None = None
        self._looked_up = False

    def get_conn(self) -> Connection | None:
        """The connection, or None when it is not defined (then params.yaml applies)."""
        if not self._looked_up:
            try:
                self._conn = self.get_connection(self.conn_id)
            except AirflowNotFoundException:
                self._conn = None
            self._looked_up = True
        return self._conn

    @property
    def configured(self) -> bool:
        return self.get_conn() is not None

    def base_url(self) -> str | None:
        conn = self.get_conn()
        if conn is None or not conn.host:
            return None
        host = conn.host.strip()
        if "://" in host:
            return host.rstrip("/")
        url = f"{conn.conn_type if conn.conn_type in ('http', 'https') else 'https'}://{host}"
        if conn.port:
            url += f":{conn.port}"
        if conn.schema:
            url += "/" + conn.schema.strip("/")
        return url

    def settings_overrides(self) -> dict[str, Any]:
        """Params overrides for the llm block; ``{}`` without the connection. No secrets."""
        conn = self.get_conn()
        if conn is None:
            return {}
        extra = conn.extra_dejson
        if not isinstance(extra, dict):
            raise ConfigError(f"connection {self.conn_id!r}: extra must be a JSON object")
        bad = sorted(_FORBIDDEN_EXTRA & set(extra))
        if bad:
            raise ConfigError(
                f"connection {self.conn_id!r}: extra may not set {', '.join(bad)} "
                "(the key goes in the password field, the base URL in host)"
            )
        llm: dict[str, Any] = {"provider": "openai", **extra}
        url = self.base_url()
        if url:
            llm["base_url"] = url
        if conn.password:
            llm["api_key_env"] = self.KEY_ENV
        return {"llm": llm}

    @contextmanager
    def exported_key(self) -> Iterator[None]:
        """Make the connection's key visible to the LLM client of this process, then remove it."""
        conn = self.get_conn()
        if conn is None or not conn.password:
            yield
            return
        previous = self._environ.get(self.KEY_ENV)
        self._environ[self.KEY_ENV] = conn.password
        try:
            yield
        finally:
            if previous is None:
                self._environ.pop(self.KEY_ENV, None)
            else:
                self._environ[self.KEY_ENV] = previous

    def apply(self, settings: Settings) -> Settings:
        """``settings`` with the connection's llm overrides merged in (validated again)."""
        overrides = self.settings_overrides()
        if not overrides:
            return settings
        from ise_core.config import settings_from_dict

        merged = deep_merge(settings.model_dump(mode="json"), overrides)
        return settings_from_dict(
            merged, f"connection {self.conn_id!r} over params", base_dir=settings.base_dir
        )

    def build_chat(
        self, role: Literal["writer", "user", "agent"], settings: Settings, **kwargs: Any
    ) -> Any:
        """A ``Chat`` for ``role`` on the connection's endpoint (or params without one).

        The client reads the key when it is built, so use it inside ``exported_key()``.
        """
        from ise_core.llm.factory import build_chat

        applied = self.apply(settings)
        base_dir: Path = kwargs.pop("base_dir", applied.base_dir)
        seed: int = kwargs.pop("seed", applied.seed)
        return build_chat(role, applied.llm, base_dir=base_dir, seed=seed, **kwargs)
