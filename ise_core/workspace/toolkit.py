"""The ``@tool`` decorator: one Python function per tool, its OpenAI schema derived from it.

A tool is a function ``(ctx, **arguments) -> ToolResult | str``. Its name is the function's
name (or ``name=``), its description the docstring's first paragraph, and each parameter's
JSON-schema type comes from the annotation, its description from the docstring's ``Args:``
section. Parameters with a default are optional. Arguments from a model are validated against
the same signature, here and nowhere else: a missing, unknown or mistyped argument (a boolean
is not a number) becomes an ``Error: ...`` observation, and so does any ``ToolError`` the
function raises; a tool never ends an episode.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BeforeValidator, ConfigDict, ValidationError, create_model
from pydantic_core import ErrorDetails

from ise_core.errors import ToolError, validation_problems
from ise_core.workspace.base import ToolResult


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]
    func: Callable[..., ToolResult | str]
    validator: Any  # a pydantic model class built from the signature
    # Whether the workspace offers the tool under its settings (None: always).
    offered_when: Callable[[Any], bool] | None = None

    def offered(self, settings: Any) -> bool:
        return self.offered_when is None or self.offered_when(settings)

    def schema(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry for this tool."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            },
        }


_ARG_LINE = re.compile(r"^\s{2,}(\w+)\s*(?:\([^)]*\))?:\s*(.*)$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The description (text before ``Args:``) and the per-argument descriptions."""
    text = inspect.cleandoc(doc or "")
    head, _, args_block = text.partition("\nArgs:\n")
    description = " ".join(line.strip() for line in head.strip().splitlines() if line.strip())
    params: dict[str, str] = {}
    current: str | None = None
    for line in args_block.splitlines():
        if line.strip() and not line.startswith(" "):
            break  # the next section (Returns:, ...)
        match = _ARG_LINE.match(line)
        if match and len(line) - len(line.lstrip()) <= 4:
            current = match.group(1)
            params[current] = match.group(2).strip()
        elif current and line.strip():
            params[current] = f"{params[current]} {line.strip()}"
    return description, params


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) != len(get_args(annotation)) and len(members) == 1:
            return members[0], True
    return annotation, False


def json_type(annotation: Any) -> dict[str, Any]:
    """JSON schema for the annotation types tools use."""
    annotation, _ = _strip_optional(annotation)
    origin = get_origin(annotation)
    if origin is Literal:
        values = list(get_args(annotation))
        kind = {str: "string", int: "integer", bool: "boolean"}[type(values[0])]
        return {"type": kind, "enum": values}
    if origin in (list, tuple) or annotation in (list, tuple):
        args = get_args(annotation)
        return {"type": "array", "items": json_type(args[0]) if args else {}}
    if origin is dict or annotation is dict:
        return {"type": "object"}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if annotation in simple:
        return {"type": simple[annotation]}
    raise TypeError(f"unsupported tool parameter annotation: {annotation!r}")


def _reject_bool(value: Any) -> Any:
    # JSON true/false is not a number, though Python's bool is an int: refuse it rather than
    # run a tool with 1 or 0 the model never meant.
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    return value


def _field_type(annotation: Any) -> Any:
    """The annotation a parameter is validated with: numbers refuse booleans."""
    plain, _ = _strip_optional(annotation)
    if plain in (int, float):
        return Annotated[annotation, BeforeValidator(_reject_bool)]
    return annotation


def build_spec(func: Callable[..., Any], name: str | None = None) -> ToolSpec:
    """The ``ToolSpec`` of ``func`` without registering it."""
    name = name or func.__name__
    hints = typing.get_type_hints(func)
    signature = inspect.signature(func)
    params = list(signature.parameters.values())[1:]  # the first is the context
    description, arg_docs = parse_docstring(func.__doc__ or "")
    if not description:
        raise TypeError(f"tool {name!r} needs a docstring (it becomes the tool description)")
    properties: dict[str, Any] = {}
    required: list[str] = []
    fields: dict[str, Any] = {}
    for param in params:
        annotation = hints[param.name]
        prop = json_type(annotation)
        if param.name not in arg_docs:
            raise TypeError(f"tool {name!r}: parameter {param.name!r} is not described in Args:")
        prop["description"] = arg_docs[param.name]
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
            fields[param.name] = (_field_type(annotation), ...)
        else:
            if param.default is not None:
                prop["default"] = param.default
            fields[param.name] = (_field_type(annotation), param.default)
        properties[param.name] = prop
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    validator = create_model(
        f"{name}_arguments", __config__=ConfigDict(extra="forbid", strict=False), **fields
    )
    return ToolSpec(name, description, schema, func, validator)


TOOLS: dict[str, ToolSpec] = {}


def tool(
    func: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    offered_when: Callable[[Any], bool] | None = None,
) -> Any:
    """Register ``func`` as a tool (usable bare or as ``@tool(name="...")``); a tool with
    ``offered_when`` is listed for the agent only when it holds for the workspace settings."""

    def register(target: Callable[..., Any]) -> Callable[..., Any]:
        tool_name = name or target.__name__
        if tool_name in TOOLS:
            raise ValueError(f"tool {tool_name!r} is registered twice")
        spec = build_spec(target, tool_name)
        TOOLS[tool_name] = dataclasses.replace(spec, offered_when=offered_when)
        return target

    return register(func) if func is not None else register


def describe_arguments_error(tool_name: str, exc: ValidationError) -> str:
    def explain(error: ErrorDetails) -> str:
        if error["type"] == "missing":
            return " is required"
        if error["type"] == "extra_forbidden":
            return f" is not a parameter of {tool_name}"
        return f": {error['msg']} (got {error.get('input')!r:.80})"

    problems = validation_problems(exc, root="arguments", form="'{where}'{what}", explain=explain)
    return f"Error: invalid arguments for {tool_name}: " + "; ".join(problems)


def invoke(spec: ToolSpec, ctx: Any, arguments: Any) -> ToolResult:
    """Validate ``arguments`` and run the tool; every failure comes back as ``ok=False``."""
    started = time.perf_counter()
    if not isinstance(arguments, dict):
        return ToolResult(
            ok=False,
            content=f"Error: arguments for {spec.name} must be a JSON object, "
            f"got {type(arguments).__name__}",
        )
    try:
        validated = spec.validator.model_validate(arguments)
    except ValidationError as exc:
        return ToolResult(ok=False, content=describe_arguments_error(spec.name, exc))
    try:
        outcome = spec.func(ctx, **dict(validated))
    except ToolError as exc:
        outcome = ToolResult(ok=False, content=f"Error: {exc}")
    if isinstance(outcome, str):
        outcome = ToolResult(ok=True, content=outcome)
    if not outcome.duration_s:
        outcome = outcome.model_copy(update={"duration_s": time.perf_counter() - started})
    return outcome
