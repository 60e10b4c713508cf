"""Time-compressed copies of Prometheus rule files, for rehearsals in real time.

The real rules wait 10 minutes to 2 hours (`for:`) and look back up to 6 hours
(`[6h]`): a test cannot wait that long. `compress_rules(text, factor, min_range)`
returns the same rule file with every duration divided by `factor`:

    for: 15m                      ->  for: 7500ms                      (factor 120)
    keep_firing_for: 1h           ->  keep_firing_for: 30s
    rate(x[5m])                   ->  rate(x[2500ms])
    max_over_time(x[1h:5m])       ->  max_over_time(x[30s:2500ms])
    x offset 1h                   ->  x offset 30s

Range windows (of range selectors and subqueries) never go below `min_range`
seconds, so that each still holds a few scrapes (the rehearsal asks for 4).
`for:`, `keep_firing_for:`, `offset`, subquery resolutions and a group's
`interval` are divided without a floor.

Only durations are touched, never numbers: `predict_linear(v[6h], 24 * 3600)`
keeps its 24 * 3600 seconds horizon, `time() - t > 4 * 3600` its 4 hours. Text
inside quotes (label matchers, regexes) and `#` comments is left as it is, so
are the templates of labels and annotations. A bracket that does not hold a
plain duration (a Prometheus 3 duration expression like `[5m * 2]`) raises
ValueError rather than slipping through uncompressed.

Pure functions on text; `write_compressed` is the one that touches files.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, List

import yaml

_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000,
            "y": 31_536_000_000}
_PART = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
DURATION = r"(?:\d+(?:ms|s|m|h|d|w|y))+"
_DURATION_FULL = re.compile(DURATION)
_BRACKET = re.compile(rf"\s*({DURATION})\s*(?::\s*({DURATION})?\s*)?")
_OFFSET = re.compile(rf"offset(\s+)(-?)({DURATION})(?![\w:])", re.I)
_IDENT = re.compile(r"[\w:]")

# Rule keys whose value is a duration; `expr` is handled as PromQL.
RULE_DURATION_KEYS = ("for", "keep_firing_for")


def parse_duration(text: str) -> float:
    """Seconds of a Prometheus duration ("1h30m", "500ms"); ValueError on anything else."""
    text = text.strip()
    if text == "0":  # the one unit-less duration Prometheus accepts
        return 0.0
    if not _DURATION_FULL.fullmatch(text):
        raise ValueError(f"not a Prometheus duration: {text!r}")
    return sum(int(n) * _UNIT_MS[unit] for n, unit in _PART.findall(text)) / 1000.0


def format_duration(seconds: float) -> str:
    """A duration Prometheus reads back exactly: whole seconds as "30s", else milliseconds ("7500ms")."""
    ms = round(seconds * 1000)
    if ms < 0:
        raise ValueError(f"negative duration: {seconds}")
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def compress_duration(text: str, factor: float, floor: float = 0.0) -> str:
    """`text` divided by `factor`, at least `floor` seconds (and 1 ms unless it was 0)."""
    seconds = parse_duration(text)
    if seconds == 0:
        return format_duration(max(0.0, floor))
    return format_duration(max(seconds / factor, floor, 0.001))


def compress_expr(expr: str, factor: float, min_range: float) -> str:
    """The PromQL `expr` with its range windows, subquery resolutions and offsets divided by `factor`."""
    out: List[str] = []
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c in "\"'`":  # a string: copied as is, escapes included
            j = i + 1
            while j < n and expr[j] != c:
                j += 2 if c != "`" and expr[j] == "\\" else 1
            out.append(expr[i:j + 1])
            i = j + 1
        elif c == "#":  # a comment, to the end of the line
            j = expr.find("\n", i)
            j = n if j < 0 else j
            out.append(expr[i:j])
            i = j
        elif c == "[":
            j = expr.find("]", i)
            if j < 0:
                raise ValueError(f"unclosed [ at {i} in {expr!r}")
            inner = expr[i + 1:j]
            m = _BRACKET.fullmatch(inner)
            if not m:
                raise ValueError(f"cannot compress [{inner}] in {expr!r}: not a duration")
            window = compress_duration(m.group(1), factor, min_range)
            if ":" in inner:  # subquery [range:resolution]; an empty resolution stays empty
                step = compress_duration(m.group(2), factor) if m.group(2) else ""
                out.append(f"[{window}:{step}]")
            else:
                out.append(f"[{window}]")
            i = j + 1
        else:
            m = _OFFSET.match(expr, i)
            if m and (i == 0 or not _IDENT.match(expr[i - 1])):
                out.append(f"{expr[i:i + 6]}{m.group(1)}{m.group(2)}{compress_duration(m.group(3), factor)}")
                i = m.end()
            else:
                out.append(c)
                i += 1
    return "".join(out)


def _compress_rule(rule: dict, factor: float, min_range: float) -> dict:
    out = dict(rule)
    if "expr" in out:
        out["expr"] = compress_expr(str(out["expr"]), factor, min_range)
    for key in RULE_DURATION_KEYS:
        if key in out:
            out[key] = compress_duration(str(out[key]), factor)
    return out


def compress_rules(text: str, factor: float, min_range: float = 0.0) -> str:
    """A rule file (YAML text) with every duration divided by `factor`; range windows >= `min_range` s.

    The answer is YAML again (comments are not kept); labels and annotations are unchanged.
    """
    if factor <= 0:
        raise ValueError(f"factor must be > 0, not {factor}")
    data: Any = yaml.safe_load(text)
    groups = []
    for group in data.get("groups") or []:
        g = dict(group)
        if "interval" in g:
            g["interval"] = compress_duration(str(g["interval"]), factor)
        g["rules"] = [_compress_rule(r, factor, min_range) for r in g.get("rules") or []]
        groups.append(g)
    return yaml.safe_dump({**data, "groups": groups}, sort_keys=False, allow_unicode=True, width=200)


def write_compressed(paths: Iterable[Path], dest: Path, factor: float, min_range: float = 0.0) -> List[Path]:
    """Compressed copies of the rule files `paths`, written under `dest` with the same names."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        target = dest / Path(path).name
        target.write_text(compress_rules(Path(path).read_text(), factor, min_range))
        written.append(target)
    return written
