"""docs/report-format.md stays in step with contract/report.py and the collector's reasons."""

from __future__ import annotations

import dataclasses
import json
import re

from contract.rejections import REJECTION_REASONS
from contract.report import Limits, parse_report
from tests.conftest import FIXTURES, ROOT

DOC = (ROOT / "docs" / "report-format.md").read_text(encoding="utf-8")


def test_every_rejection_reason_is_documented() -> None:
    section = DOC.split("## Rejections", 1)[1]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))
    assert documented == set(REJECTION_REASONS)


def test_every_limit_is_documented_with_its_default() -> None:
    for f in dataclasses.fields(Limits):
        assert f"| `{f.name}` | {f.default} |" in DOC, f.name


def test_the_full_example_is_the_fixture_and_passes_the_contract() -> None:
    block = DOC.split("## A full example", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    example = json.loads(block)
    assert example == json.loads((FIXTURES / "reports" / "vda-win-01.json").read_text())
    assert parse_report(example).sessions.total == 16
