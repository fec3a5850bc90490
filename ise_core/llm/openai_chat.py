"""The ``openai`` backend: any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp, Ollama).

``OpenAIChat.complete`` runs, in order: build the request body (role sampling settings, then
per-call overrides) → look it up in the response cache (a hit sends nothing) → check the
budget (``BudgetExceeded`` before anything is sent) → send through the endpoint's shared
limiter, retrying 429/5xx/timeouts/dropped connections per ise_core.llm.limits → cache the
reply → account the usage → parse it (``MalformedResponse`` for an unusable reply, see
ise_core.llm.replies).

The SDK's own retries are off (``max_retries=0``): ours honour ``Retry-After``, pause the whole
endpoint, and are counted. The API key is read from the environment variable *named* by
``llm.api_key_env`` when the chat is built (only to check it is there) and again when the
first request of the process on the endpoint makes the SDK client (one client, and one
connection pool, per endpoint and event loop); it is never stored on this object and never
written into request bodies, cache entries, logs, statistics or error messages (error texts
from the server are scrubbed of it as well). For an endpoint other than OpenAI's an unset
variable is allowed (local servers rarely check keys); a placeholder is sent instead.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import time
import weakref
from collections.abc import Callable, Sequence
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ise_core.errors import ConfigError, ContextOverflow, LLMError
from ise_core.llm.adaptive import is_overload
from ise_core.llm.base import ChatResult, Limiter
from ise_core.llm.cache import ResponseCache, request_key
from ise_core.llm.context import (
    compact,
    endpoint_counter,
    endpoint_window,
    is_context_overflow,
    reply_budget,
    request_tokens,
)
from ise_core.llm.dialect import refine_reply
from ise_core.llm.limits import (
    LimitSettings,
    backoff_delay,
    is_retryable_status,
    retry_after_from_headers,
    shared_limiter,
)
from ise_core.llm.replies import (
    MalformedResponse,
    parse_reply,
    reply_usage,
    stored_reply,
    to_wire,
    tool_names,
    worth_caching,
)
from ise_core.llm.toolcalls import step_schema, to_prompted
from ise_core.records import Message, canonical_json, text_hash

if TYPE_CHECKING:
    from ise_core.config import LLMSettings, RoleName
    from ise_core.llm.accounting import Accountant

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_BASE_URL = "https://api.openai.com/v1"
SAMPLING_KEYS = ("temperature", "top_p", "max_tokens", "seed")
# Options that steer this client and are never sent (nor part of the cache key).
LOCAL_OPTIONS = ("episode", "attempt", "timeout")
PLACEHOLDER_KEY = "no-key-set"
# Tokens-per-minute reservation for a reply when max_tokens is not set.
DEFAULT_COMPLETION_ESTIMATE = 512


def _request_seed(body: dict[str, Any]) -> str:
    """Tells an episode's requests apart (their message count only grows) for the ids of
    calls read from text; cheap, and the same on a replay."""
    messages = body.get("messages") or []
    last = messages[-1].get("content") if messages else ""
    return f"{len(messages)}:{text_hash(str(last or ''))[:12]}"


def _reply_schema(role: str) -> dict[str, Any] | None:
    """The JSON schema a role's plain replies must follow, for constrained output."""
    if role == "user":
        from ise_core.simulate.user_sim import UserTurn

        return UserTurn.model_json_schema()
    return None


def _http_response_class() -> Any:
    """The HTTP library's response class the SDK returns raw (its HTTP library varies)."""
    import openai

    library = openai.DefaultAsyncHttpxClient.__mro__[1].__module__.split(".")[0]
    return importlib.import_module(library).Response


def _status_text(status: int | str) -> str:
    if isinstance(status, int):
        try:
            return f"{status} {HTTPStatus(status).phrase}"
        except ValueError:
            return str(status)
    return status


def _server_message(body: Any, fallback: str) -> str:
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
    return fallback


# SDK clients (each owning a connection pool) per event loop, shared by every chat of the
# process on the same endpoint: chats are cheap to build per episode, connections are reused.
_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str, float], Any]]
_CLIENTS = weakref.WeakKeyDictionary()


def _clients_of_running_loop() -> dict[tuple[str, str, float], Any]:
    loop = asyncio.get_running_loop()
    clients = _CLIENTS.get(loop)
    if clients is None:
        clients = _CLIENTS[loop] = {}
    return clients


def endpoint_limiter(
    llm: LLMSettings, base_url: str | None, model: str, limits: LimitSettings
) -> Limiter | None:
    """The limiter ``llm.limiter`` asks for: None for the process-wide one (the default),
    else the Redis-backed one shared by every process of the run."""
    if llm.limiter == "process":
        return None
    from ise_core.llm.redis_limits import redis_limiter

    return redis_limiter(llm.limiter, (base_url or DEFAULT_BASE_URL).rstrip("/"), model, limits)


class OpenAIEndpoint:
    """One OpenAI-compatible endpoint and model: the SDK client, the limiter, the retry policy.

    The chat client and the embeddings client (ise_core.llm.embeddings) are both built on it,
    so they share one connection pool per endpoint, the process-wide limiter of (endpoint,
    model) and the same retries, backoff and error messages.
    """

    # The params.yaml block an error message points to, and what a failed request is called.
    settings_block = "llm"
    what = "LLM"

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None,
        api_key_env: str,
        timeout_s: float,
        limits: LimitSettings | None,
        limiter: Limiter | None,
    ) -> None:
        self.model = model
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.limiter: Limiter = limiter or shared_limiter(
            self.base_url, model, limits or LimitSettings()
        )
        self._api_key()  # fail at build time when a key is required and missing (not kept)

    # --- the SDK client ----------------------------------------------------------------------

    def _api_key(self) -> str:
        key = os.environ.get(self.api_key_env, "").strip()
        if key:
            return key
        if self.base_url == DEFAULT_BASE_URL:
            raise ConfigError(
                f"{self.settings_block}.api_key_env: environment variable {self.api_key_env} "
                f"is not set; it must hold the API key for {self.base_url}"
            )
        return PLACEHOLDER_KEY

    def _redact(self, text: str) -> str:
        key = os.environ.get(self.api_key_env, "").strip()
        return text.replace(key, "***") if len(key) >= 4 else text

    def _client_key(self) -> tuple[str, str, float]:
        return (self.base_url, self.api_key_env, self.timeout_s)

    def _sdk_client(self) -> Any:
        """The SDK client for this endpoint on the running loop, shared by every client on it."""
        clients = _clients_of_running_loop()
        key = self._client_key()
        client = clients.get(key)
        if client is None:
            import openai

            client = openai.AsyncOpenAI(
                api_key=self._api_key(),
                base_url=self.base_url,
                timeout=self.timeout_s,
                max_retries=0,
                # A plain pool (no close-on-garbage-collection hook bound to a finished loop).
                http_client=openai.DefaultAsyncHttpxClient(),
            )
            clients[key] = client
        return client

    async def aclose(self) -> None:
        """Close this endpoint's pooled connections on the running loop (optional: they are
        dropped when the process ends). Chats sharing the pool open a new one when needed."""
        client = _clients_of_running_loop().pop(self._client_key(), None)
        if client is not None:
            await client.close()

    # --- sending ------------------------------------------------------------------------------

    async def _post(
        self,
        path: str,
        body: dict[str, Any],
        timeout: float | None,
        estimate: int,
        decode: Callable[[bytes], T],
    ) -> tuple[T, int]:
        """POST ``body`` to ``path`` with the retry policy; (decoded reply, retries used).

        ``decode`` turns a 200 body into the result, raising ``ValueError`` when it is unusable
        (counted as a failed attempt and retried). Failures raise ``LLMError``.
        """
        import openai

        client = self._sdk_client()
        limits = self.limiter.limits
        # The SDK's generic POST with our body as is: the typed ``chat.completions.create``
        # re-walks every message against its type hints, which costs more CPU per request than
        # everything else here together, and would drop fields it does not know.
        options: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        response_class = _http_response_class()
        attempts = limits.max_retries + 1
        status: int | str = "unknown"
        detail = ""
        retry_after: float | None = None
        for attempt in range(attempts):
            if attempt:
                delay = backoff_delay(attempt - 1, limits, retry_after)
                log.info(
                    "llm %s model %s: %s; retry %d/%d in %.2f s",
                    self.base_url,
                    self.model,
                    _status_text(status),
                    attempt,
                    limits.max_retries,
                    delay,
                )
                await asyncio.sleep(delay)
            retry_after = None
            retryable = True
            async with self.limiter.slot(estimate) as sent:
                try:
                    raw = await client.post(
                        path, cast_to=response_class, body=body, options=options
                    )
                    content = raw.content
                    sent.answered()
                except openai.APIStatusError as exc:
                    status = exc.status_code
                    detail = _server_message(exc.body, exc.message)
                    retryable = is_retryable_status(status)
                    retry_after = retry_after_from_headers(exc.response.headers)
                    if status == 429 and retry_after:
                        self.limiter.pause(retry_after)
                    content = None
                except openai.APITimeoutError:
                    status, detail, content = "timeout", f"no reply within {self.timeout_s} s", None
                except openai.APIConnectionError as exc:
                    cause = exc.__cause__
                    status, content = "connection", None
                    detail = f"{type(cause).__name__}: {cause}" if cause else exc.message
                if content is None and is_overload(status):
                    sent.overloaded(_status_text(status))
            if content is not None:
                try:
                    return decode(content), attempt
                except ValueError as exc:
                    status = "invalid body"
                    detail = f"200 with a body that is not usable ({exc}): {content[:80]!r}"
            if not retryable:
                raise self._failure(status, detail, attempt + 1)
        raise self._failure(status, detail, attempts)

    def _failure(self, status: int | str, detail: str, attempts: int) -> LLMError:
        hint = ""
        if status in (401, 403):
            hint = f" (check that ${self.api_key_env} holds a valid key for this endpoint)"
        elif status == 404:
            hint = f" (check {self.settings_block}.base_url and {self.settings_block}.model)"
        message = (
            f"{self.what} request failed after {attempts} attempt{'s' if attempts != 1 else ''}: "
            f"endpoint {self.base_url}, model {self.model}, status {_status_text(status)}{hint}"
            f": {self._redact(detail)[:300]}"
        )
        # Info, not warning: the exception carries the message and its handler reports it.
        log.info("%s", message)
        if is_context_overflow(status, detail):
            return ContextOverflow(
                message, endpoint=self.base_url, model=self.model, status=status, attempts=attempts
            )
        return LLMError(
            message, endpoint=self.base_url, model=self.model, status=status, attempts=attempts
        )


class OpenAIChat(OpenAIEndpoint):
    """A ``Chat`` on an OpenAI-compatible endpoint for one role."""

    def __init__(
        self,
        role: str,
        *,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        sampling: dict[str, Any] | None = None,
        limits: LimitSettings | None = None,
        timeout_s: float = 120.0,
        cache: ResponseCache | None = None,
        accountant: Accountant | None = None,
        limiter: Limiter | None = None,
        episode: str | None = None,
        tool_calling: str = "native",
        context_window: int | None = None,
        constrained: bool = False,
        reply_schema: dict[str, Any] | None = None,
    ) -> None:
        if not model:
            raise ConfigError(f"llm: role {role!r} uses provider openai but no model is set")
        self.role = role
        self.sampling = {k: v for k, v in (sampling or {}).items() if v is not None}
        self.cache = cache
        self.accountant = accountant
        self.episode = episode
        # native | prompted | auto (ise_core.llm.probe decides auto on the first request with tools)
        self.tool_calling = tool_calling
        self.context_window = context_window
        # Constrained output (llm.constrained_output): requests carry response_format with
        # ``reply_schema`` (e.g. the user turn object) or, in the prompted mode with tools,
        # the schema of one tool call or a final answer.
        self.constrained = constrained
        self.reply_schema = reply_schema
        self.name = f"openai:{role}:{model}"
        super().__init__(
            model=model,
            base_url=base_url,
            api_key_env=api_key_env,
            timeout_s=timeout_s,
            limits=limits,
            limiter=limiter,
        )

    @classmethod
    def from_settings(
        cls,
        role: RoleName,
        llm: LLMSettings,
        *,
        base_dir: Path,
        seed: int,
        accountant: Accountant | None = None,
        episode: str | None = None,
    ) -> OpenAIChat:
        """The chat for ``role`` as ``llm`` configures it (role overrides applied)."""
        resolved = llm.role(role)
        sampling = {key: resolved.get(key) for key in SAMPLING_KEYS}
        if sampling["seed"] is None:
            sampling["seed"] = seed
        sampling["max_tokens"] = llm.max_tokens_for(role)
        cache_dir = Path(llm.cache_dir)
        if not cache_dir.is_absolute():
            cache_dir = base_dir / cache_dir
        model = resolved["model"]
        if not model:
            raise ConfigError(
                f"llm.model (or llm.roles.{role}.model): must be set when provider is openai"
            )
        if llm.budget.cost is not None and model not in llm.prices:
            raise ConfigError(
                f"llm.prices: llm.budget.cost is set but model {model!r} has no price "
                f"(add llm.prices.{model}: {{prompt: ..., completion: ...}} per million tokens)"
            )
        limits = LimitSettings.from_llm(llm)
        limiter = endpoint_limiter(llm, resolved["base_url"], model, limits)
        return cls(
            role,
            model=model,
            base_url=resolved["base_url"],
            api_key_env=resolved["api_key_env"],
            sampling=sampling,
            limits=limits,
            timeout_s=llm.timeout_s,
            cache=ResponseCache(cache_dir, llm.cache),
            accountant=accountant,
            limiter=limiter,
            episode=episode,
            tool_calling=llm.tool_calling_for(role),
            context_window=llm.context_window,
            constrained=llm.constrained_for(role),
            reply_schema=_reply_schema(role) if llm.constrained_for(role) else None,
        )

    def __repr__(self) -> str:
        return f"OpenAIChat(role={self.role!r}, endpoint={self.base_url!r}, model={self.model!r})"

    # --- requests ------------------------------------------------------------------------------

    def request_body(
        self,
        messages: Sequence[Message | dict[str, Any]],
        tools: Sequence[dict[str, Any]] | None,
        options: dict[str, Any],
    ) -> dict[str, Any]:
        """The JSON body sent (and hashed for the cache): everything but credentials."""
        for reserved in ("model", "messages", "tools", "stream"):
            if reserved in options:
                raise ValueError(f"option {reserved!r} cannot be passed to complete()")
        typed = [m if isinstance(m, Message) else Message.model_validate(m) for m in messages]
        prompted = bool(tools) and self.tool_calling == "prompted"
        if prompted:
            # No ``tools`` field: the schemas go into the system prompt, calls come back as text.
            typed = to_prompted(typed, list(tools or ()))
        wire = [to_wire(m) for m in typed]
        body: dict[str, Any] = {"model": self.model, "messages": wire}
        if tools and not prompted:
            body["tools"] = list(tools)
        sampling = dict(self.sampling)
        for key, value in options.items():
            if key in LOCAL_OPTIONS or (prompted and key in ("tool_choice", "parallel_tool_calls")):
                continue
            if value is None:
                sampling.pop(key, None)
            else:
                sampling[key] = value
        body.update(sampling)
        if prompted:
            schema: dict[str, Any] | None = step_schema(list(tools or ()))
        else:
            schema = None if tools else self.reply_schema
        if self.constrained and schema is not None and "response_format" not in body:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": schema},
            }
        return body

    async def complete(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]] | None = None,
        **options: Any,
    ) -> ChatResult:
        started = time.perf_counter()
        episode = options.get("episode", self.episode)
        attempt = int(options.get("attempt") or 0)
        if tools and self.tool_calling == "auto":
            from ise_core.llm.probe import resolve_auto

            self.tool_calling = await resolve_auto(self)
        messages, cut = await self._fit(messages, tools, options)
        try:
            return await self._complete(messages, tools, options, started, episode, attempt,
                                        cut)  # fmt: skip
        except ContextOverflow:
            # The server counted more than the estimate: cut harder, once, then give up.
            messages, more = await self._fit(messages, tools, options, tighten=0.6)
            if not more:
                raise
            return await self._complete(messages, tools, options, started, episode, attempt,
                                        sorted({*cut, *more}))  # fmt: skip

    async def _fit(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]] | None,
        options: dict[str, Any],
        tighten: float | None = None,
    ) -> tuple[Sequence[Message], list[int]]:
        """``messages`` with older tool outputs compacted when the request would not fit the
        context window (known from llm.context_window or the server), and the positions cut;
        else as they are. ``tighten`` (after the server refused the request as too long): cut
        until the request is at most that share of its current estimate."""
        if not any(m.role == "tool" for m in messages):
            return messages, []
        key = self._api_key()
        window = self.context_window or await asyncio.to_thread(
            endpoint_window, self.base_url, self.model, None if key == PLACEHOLDER_KEY else key
        )
        if not window:
            return messages, []
        max_tokens = options.get("max_tokens", self.sampling.get("max_tokens"))
        budget = reply_budget(window, max_tokens)
        counter = await asyncio.to_thread(endpoint_counter, self.base_url)

        def count(candidate: Sequence[Message]) -> int:
            return request_tokens(candidate, tools, counter)

        if tighten is not None:
            budget = min(budget, int(await asyncio.to_thread(count, messages) * tighten))

        result = await asyncio.to_thread(compact, messages, budget, count)
        return result.messages, result.cut

    async def _complete(
        self,
        messages: Sequence[Message],
        tools: Sequence[dict[str, Any]] | None,
        options: dict[str, Any],
        started: float,
        episode: str | None,
        attempt: int,
        cut: list[int],
    ) -> ChatResult:
        body = self.request_body(messages, tools, options)
        cache = self.cache if self.cache is not None and self.cache.readable else None
        key = request_key(self.base_url, body, attempt) if cache is not None else None
        stored = cache.get(key) if cache is not None and key is not None else None
        cached = stored is not None
        retries = 0
        if stored is None:
            if self.accountant is not None:
                self.accountant.check_budget()
            try:
                stored, retries = await self._send(body, options.get("timeout"))
            except LLMError as exc:
                if self.accountant is not None:
                    self.accountant.record_failure(
                        role=self.role,
                        model=self.model,
                        retries=max(0, exc.attempts - 1),
                        episode=episode,
                    )
                raise
            if cache is not None and key is not None and worth_caching(stored):
                # In a worker thread: an entry is written with fsync, which stalls for
                # milliseconds on a busy disk, and on the event loop that stall would hold
                # back every other request in flight (measured: a third of the loop's time).
                await asyncio.to_thread(cache.put, key, stored, model=self.model)
        try:
            result = self._result(
                stored, tools, cached, retries, started, episode, seed=_request_seed(body)
            )
        except MalformedResponse as bad:
            if cut and bad.result is not None:
                bad.result = bad.result.model_copy(update={"compacted": cut})
            raise
        return result.model_copy(update={"compacted": cut}) if cut else result

    def _result(
        self,
        stored: dict[str, Any],
        tools: Sequence[dict[str, Any]] | None,
        cached: bool,
        retries: int,
        started: float,
        episode: str | None,
        seed: str = "",
    ) -> ChatResult:
        usage = reply_usage(stored)
        offered = tool_names(tools)
        message, problem = parse_reply(stored, offered)
        refined = refine_reply(
            message, problem, finish_reason=stored.get("finish_reason"), offered=offered, seed=seed
        )
        message, problem = refined.message, refined.problem
        result = ChatResult(
            message=message,
            usage=usage,
            cached=cached,
            latency_s=time.perf_counter() - started,
            model=stored.get("model") or self.model,
            retries=retries,
            finish_reason=stored.get("finish_reason"),
            text_tool_calls=refined.text_tool_calls,
        )
        if self.accountant is not None:
            self.accountant.record(
                role=self.role,
                model=self.model,
                usage=usage,
                cached=cached,
                retries=retries,
                malformed=problem is not None,
                episode=episode,
            )
        if problem is not None:
            kind, detail = problem
            raise MalformedResponse(
                kind, self._redact(detail), result=result, endpoint=self.base_url, model=self.model
            )
        return result

    def _estimate_tokens(self, body: dict[str, Any]) -> int:
        if self.limiter.limits.tokens_per_minute is None:
            return 0
        prompt = len(canonical_json(body.get("messages", []))) // 4
        return prompt + int(body.get("max_tokens") or DEFAULT_COMPLETION_ESTIMATE)

    async def _send(
        self, body: dict[str, Any], timeout: float | None
    ) -> tuple[dict[str, Any], int]:
        """POST the body with our retry policy; (stored reply, retries used) or LLMError."""
        estimate = self._estimate_tokens(body)

        def decode(content: bytes) -> dict[str, Any]:
            stored = stored_reply(json.loads(content))
            usage = stored["usage"]
            actual = usage["prompt_tokens"] + usage["completion_tokens"]
            self.limiter.settle_tokens(estimate, actual)
            return stored

        return await self._post("/chat/completions", body, timeout, estimate, decode)
