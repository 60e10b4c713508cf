"""The examples in the logon modules' docstrings are true."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["events", "totals", "matching"])
def test_docstring_examples(module: str) -> None:
    result = doctest.testmod(importlib.import_module(f"agent.logons.{module}"))
    assert result.attempted > 0 and result.failed == 0
