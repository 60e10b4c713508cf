"""Read tests/fixtures/logons/*.xml: an <Events> list (`wevtutil qe /f:xml /e:Events`), one event XML each."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import List

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "logons"


def event_xmls(name: str) -> List[str]:
    root = ET.parse(FIXTURES / name).getroot()
    return [ET.tostring(child, encoding="unicode") for child in root]
