"""The host store on disk, so that a collector restart does not blind the ops room.

The file holds each host's last report as the contract knows it (only the
fields the collector validated, never what an agent added), with the time it
arrived; on start every report is checked against the contract again and put
back, so a host that died while the collector was down shows as down afterwards
instead of vanishing. An entry that no longer passes is left out, one log line
for all of them. It is written to a temporary file, fsynced and renamed over
the old one: a crash leaves the old snapshot or the new one, never half of one.
A corrupt, truncated or foreign file is moved aside with one log line.

Format (version 1), binary-safe framing so reports need no re-encoding:

    VDIWATCH-SNAPSHOT 1 <hosts> <written_at>\\n
    <received_at> <length>\\n<length bytes of report JSON>\\n     (once per host)
    END <sha256 hex of everything above>\\n
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import List, Tuple

from collector.store import HostStore
from contract.atomicfile import replace_file
from contract.report import Limits, Report, ReportError, parse_report, report_to_json

log = logging.getLogger(__name__)

MAGIC = b"VDIWATCH-SNAPSHOT"
VERSION = 1


class SnapshotError(Exception):
    pass


def encode(entries: List[Tuple[float, Report]], written_at: float) -> bytes:
    parts = [b"%s %d %d %r\n" % (MAGIC, VERSION, len(entries), written_at)]
    for received_at, report in entries:
        raw = report_to_json(report)
        parts.append(b"%r %d\n" % (received_at, len(raw)))
        parts.append(raw)
        parts.append(b"\n")
    body = b"".join(parts)
    return body + b"END " + hashlib.sha256(body).hexdigest().encode() + b"\n"


def decode(data: bytes) -> List[Tuple[float, bytes]]:
    """(received_at, raw report) pairs; SnapshotError when the file is not a whole snapshot."""
    end = data.rfind(b"END ")
    if end < 0 or not data.endswith(b"\n"):
        raise SnapshotError("truncated: no END line")
    body, checksum = data[:end], data[end + 4:].strip()
    if hashlib.sha256(body).hexdigest().encode() != checksum:
        raise SnapshotError("checksum mismatch")
    header, sep, rest = body.partition(b"\n")
    fields = header.split()
    if not sep or len(fields) != 4 or fields[0] != MAGIC:
        raise SnapshotError("not a vdiwatch snapshot")
    if fields[1] != str(VERSION).encode():
        raise SnapshotError(f"unsupported snapshot version {fields[1].decode(errors='replace')}")
    count = int(fields[2])
    out = []
    pos = 0
    for _ in range(count):
        line_end = rest.index(b"\n", pos)
        received, length = rest[pos:line_end].split()
        start = line_end + 1
        stop = start + int(length)
        when = float(received)
        if not math.isfinite(when) or when < 0:
            raise SnapshotError(f"host {len(out) + 1}: arrival time {received[:32]!r} is not a time")
        out.append((when, rest[start:stop]))
        pos = stop + 1
    if pos != len(rest):
        raise SnapshotError("trailing data after the last host")
    return out


def write(path: Path, store: HostStore, clock=time.time) -> int:
    """Write the store to `path` atomically; returns the number of hosts written."""
    entries = store.entries()
    data = encode([(e.received_at, e.report) for e in entries], clock())
    replace_file(str(path), data)
    return len(entries)


def restore(path: Path, store: HostStore, limits: Limits, clock=time.time) -> int:
    """Put the snapshot's hosts back into `store`; a bad file is moved aside. Returns hosts restored."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    except OSError as e:
        log.error("cannot read snapshot %s: %s; starting empty", path, e.strerror or e)
        return 0
    try:
        pairs = decode(data)
    except (SnapshotError, ValueError) as e:
        aside = path.with_name(f"{path.name}.corrupt-{int(clock())}")
        try:
            os.replace(path, aside)
        except OSError:
            aside = path
        log.error("snapshot %s is unusable (%s); moved it to %s and started empty", path, e, aside)
        return 0
    reports = []
    skipped = 0
    for received_at, raw in pairs:
        try:
            reports.append((received_at, parse_report(json.loads(raw), limits)))
        except (ValueError, ReportError, RecursionError):
            skipped += 1
    if skipped:
        log.warning("snapshot %s: %d host(s) no longer pass the report checks and were left out", path, skipped)
    return store.restore(reports)
