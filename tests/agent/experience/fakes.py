"""A PDH reader answering from tests/fixtures/experience/*.json, and the collector built on it."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Sequence, Tuple

from agent.collectors.experience import ExperienceCollector, wts_winstations
from tests.agent.sessions.fakes import FakeWtsApi
from tests.conftest import FIXTURES


def fixture(name: str) -> Dict[str, Any]:
    return json.loads((FIXTURES / "experience" / name).read_text(encoding="utf-8"))


class FakeReader:
    """The CounterReader methods: refuses the fixture's `missing` paths, answers its collections in turn."""

    def __init__(self, doc: Dict[str, Any]) -> None:
        self.missing = set(doc["missing"])
        self.collections: List[Dict[str, Any]] = list(doc["collections"])
        self.added: List[str] = []
        self.closed = False
        self.collects = 0

    def add(self, paths: Sequence[str]) -> Dict[str, str]:
        self.added.extend(p for p in paths if p not in self.missing)
        return {p: "error: (-1073738824, 'AddEnglishCounter', 'The specified object was not found on the computer.')"
                for p in paths if p in self.missing}

    def collect(self) -> Dict[str, Dict[str, float]]:
        values = self.collections[self.collects]["values"]
        self.collects += 1
        return {p: dict(values.get(p, {})) for p in self.added}

    def close(self) -> None:
        self.closed = True


class StepClock:
    def __init__(self, doc: Dict[str, Any], reader: FakeReader) -> None:
        self.doc, self.reader = doc, reader

    def __call__(self) -> float:
        return 1000.0 + self.doc["collections"][self.reader.collects - 1]["seconds"]


def collector(name: str) -> Tuple[ExperienceCollector, FakeReader]:
    """The collector on the fixture `name`, with the WTS sessions it names."""
    doc = fixture(name)
    reader = FakeReader(doc)
    return ExperienceCollector(reader, wts_winstations(FakeWtsApi(doc["wts"])), StepClock(doc, reader)), reader
