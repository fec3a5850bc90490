"""Tool schemas come from signatures and docstrings; bad arguments become observations."""

from __future__ import annotations

from typing import Literal

import pytest

from ise_core.config import WebSearchSettings, WorkspaceSettings
from ise_core.workspace import TOOLS, ToolError, ToolResult, tool_schemas
from ise_core.workspace.toolkit import build_spec, invoke, parse_docstring


def sample(
    ctx: object,
    path: str,
    count: int = 3,
    mode: Literal["fast", "slow"] = "fast",
    tags: list[str] | None = None,
    ratio: float | None = None,
    flag: bool = False,
) -> str:
    """Do a sample thing
    across two lines.

    Args:
        path: Where to do it.
        count: How many times; this description
            continues here.
        mode: How.
        tags: Labels.
        ratio: A fraction.
        flag: A switch.

    Returns:
        Nothing of interest.
    """
    if path == "boom":
        raise ToolError("it went boom")
    return f"{path}:{count}:{mode}:{tags}:{ratio}:{flag}"


def test_parse_docstring_description_and_args() -> None:
    description, args = parse_docstring(sample.__doc__ or "")
    assert description == "Do a sample thing across two lines."
    assert args["count"] == "How many times; this description continues here."
    assert set(args) == {"path", "count", "mode", "tags", "ratio", "flag"}


def test_schema_is_derived_from_the_signature() -> None:
    schema = build_spec(sample).schema()
    assert schema["type"] == "function"
    function = schema["function"]
    assert function["name"] == "sample"
    params = function["parameters"]
    assert params["required"] == ["path"]
    assert params["additionalProperties"] is False
    props = params["properties"]
    assert props["path"] == {"type": "string", "description": "Where to do it."}
    assert props["count"]["type"] == "integer" and props["count"]["default"] == 3
    assert props["mode"]["enum"] == ["fast", "slow"]
    assert props["tags"]["type"] == "array" and props["tags"]["items"] == {"type": "string"}
    assert props["ratio"]["type"] == "number" and "default" not in props["ratio"]
    assert props["flag"]["type"] == "boolean"


def test_undocumented_parameter_is_refused_at_definition() -> None:
    def bad(ctx: object, x: str) -> str:
        """No args section."""
        return x

    with pytest.raises(TypeError, match="not described"):
        build_spec(bad)


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({}, "'path' is required"),
        ({"path": 5}, "'path'"),
        ({"path": "a", "count": "many"}, "'count'"),
        ({"path": "a", "mode": "medium"}, "'mode'"),
        ({"path": "a", "colour": "red"}, "'colour' is not a parameter of sample"),
    ],
)
def test_bad_arguments_are_observations(arguments: dict[str, object], expected: str) -> None:
    result = invoke(build_spec(sample), None, arguments)
    assert result.ok is False
    assert result.content.startswith("Error: invalid arguments for sample")
    assert expected in result.content


def test_non_object_arguments_and_tool_errors_are_observations() -> None:
    spec = build_spec(sample)
    assert invoke(spec, None, ["a"]).content.startswith("Error: arguments for sample must be")
    boom = invoke(spec, None, {"path": "boom"})
    assert boom == ToolResult(ok=False, content="Error: it went boom", duration_s=boom.duration_s)


def test_good_arguments_run_with_defaults_and_coercion() -> None:
    result = invoke(build_spec(sample), None, {"path": "p", "count": "7", "tags": ["x"]})
    assert result.ok and result.content == "p:7:fast:['x']:None:False"


def test_the_workspace_tool_set() -> None:
    names = [s["function"]["name"] for s in tool_schemas()]
    assert names == [name for name in TOOLS if name != "web_search"]  # off by default
    expected = {"exec", "process", "read", "write", "edit", "memory_get", "memory_search"}
    assert expected | {"web_fetch"} == set(names)
    searching = WorkspaceSettings(
        web_search=WebSearchSettings(provider="searxng", base_url="http://127.0.0.1:1")
    )
    assert [s["function"]["name"] for s in tool_schemas(searching)] == list(TOOLS)
    search_params = TOOLS["web_search"].schema()["function"]["parameters"]
    assert search_params["required"] == ["query"] and set(search_params["properties"]) == {
        "query",
        "count",
    }
    for schema in tool_schemas(searching):
        function = schema["function"]
        assert function["description"]
        for name, prop in function["parameters"]["properties"].items():
            assert prop.get("description"), f"{function['name']}.{name} lacks a description"
    exec_params = TOOLS["exec"].schema()["function"]["parameters"]
    assert exec_params["required"] == ["command"]
    assert TOOLS["process"].parameters["properties"]["action"]["enum"] == [
        "start",
        "poll",
        "read",
        "kill",
        "list",
    ]
