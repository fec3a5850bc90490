"""Every error class of ise_core has its place in the tree ise_core/errors.py draws."""

from __future__ import annotations

import importlib
import inspect
import re

import ise_core.errors
from tests.test_imports import MODULES


def test_every_error_class_is_in_the_tree() -> None:
    doc = ise_core.errors.__doc__ or ""
    # The branches of the tree, and its roots (a class name alone at the start of a line).
    drawn = set(re.findall(r"[─└├]── (\w+)", doc))
    drawn |= set(re.findall(r"^([A-Z]\w+)(?: {2,}|$)", doc, re.MULTILINE))
    missing = []
    for name in sorted(MODULES):
        module = importlib.import_module(name)
        for attribute, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
                and attribute not in drawn
            ):
                missing.append(f"{name}.{attribute}")
    assert missing == [], "draw these in ise_core/errors.py (and define them there)"


def test_errors_live_in_errors_py_unless_the_tree_names_their_home() -> None:
    doc = ise_core.errors.__doc__ or ""
    for name in sorted(MODULES):
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__ == name
                and name != "ise_core.errors"
            ):
                assert name in doc, f"{name}.{value.__name__}: the tree does not name {name}"
