"""Sessions on Linux from systemd-logind's state files, without a D-Bus dependency.

logind writes one file per session to /run/systemd/sessions/<id> (written to a
temporary file and renamed, so a read never sees half a file), as key=value
lines: UID, USER, ACTIVE, IS_DISPLAY, STATE (opening/online/active/closing),
REMOTE, TYPE (tty/x11/wayland/mir/web/unspecified), CLASS (user, greeter,
lock-screen, background, manager, ...), SCOPE, SEAT, TTY, DISPLAY,
REMOTE_HOST, REMOTE_USER, SERVICE (the PAM service), DESKTOP, VTNR, LEADER,
AUDIT, REALTIME/MONOTONIC (the logon time in microseconds). The files say
"This is private data. Do not parse."; the format has been stable since
systemd 2xx and the D-Bus alternative would need a new dependency, so this
module parses it defensively (unknown values map to `other`) and the utmp
source remains the fallback.

logind's state files carry no idle hint, so idle time is the tty's access
time, as `w` does it: known for tty and ssh sessions, unknown (None) for
graphical ones (xrdp, Citrix HDX), which therefore never count as idle.
"""

from __future__ import annotations

import codecs
import logging
import os
import re
import time
from typing import Callable, Dict, List, Optional

from agent.sessions.model import Session
from agent.sessions.states import LOGIND_USER_CLASSES, OTHER, logind_state

log = logging.getLogger(__name__)

DEFAULT_ROOT = "/run/systemd/sessions"
DEFAULT_DEV = "/dev"

SSH_SERVICES = frozenset({"sshd", "ssh"})
RDP_SERVICES = frozenset({"xrdp", "xrdp-sesman"})
# Citrix Linux VDA registers its sessions under PAM services named ctx* (ctxhdx, ctxlogin, ...).
ICA_SERVICE_PREFIXES = ("ctx", "citrix")
_LOCAL_TTY_RE = re.compile(r"^tty\d+$")
_SCOPE_SESSION_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


# The fields logind writes with C escapes (cescape); USER is written as is ("CORP\\nina" stays).
ESCAPED_FIELDS = frozenset({"REMOTE_HOST", "REMOTE_USER", "SERVICE", "DESKTOP"})


def parse_state_file(text: str) -> Dict[str, str]:
    """KEY=value lines to a dict; comments and malformed lines are ignored, C escapes undone."""
    fields: Dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if sep:
            key = key.strip()
            fields[key] = _unescape(value.strip()) if key in ESCAPED_FIELDS else value.strip()
    return fields


def _unescape(value: str) -> str:
    """Undo systemd's cescape (REMOTE_HOST, SERVICE, DESKTOP are escaped: \\n, \\ooo, \\xhh)."""
    if "\\" not in value:
        return value
    try:
        return codecs.escape_decode(value.encode("utf-8"))[0].decode("utf-8", "replace")
    except ValueError:
        return value


def protocol_of(fields: Dict[str, str]) -> str:
    """ssh, rdp, ica from the PAM service; console for a local seat or VT; else other."""
    service = fields.get("SERVICE", "").lower()
    if service in SSH_SERVICES:
        return "ssh"
    if service in RDP_SERVICES:
        return "rdp"
    if service.startswith(ICA_SERVICE_PREFIXES):
        return "ica"
    remote = fields.get("REMOTE", "0") == "1"
    if not remote and (fields.get("SEAT") or _LOCAL_TTY_RE.match(fields.get("TTY", ""))):
        return "console"
    return OTHER


def is_user_session(fields: Dict[str, str]) -> bool:
    """Only user classes are sessions; greeters, lock screens, cron/background and the
    per-user manager (systemd --user) are not. A file without CLASS (old systemd) counts."""
    cls = fields.get("CLASS")
    return cls is None or cls in LOGIND_USER_CLASSES


def _int(value: Optional[str]) -> Optional[int]:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def session_from_logind(session_id: str, fields: Dict[str, str], now: float,
                        tty_atime: Optional[float] = None) -> Optional[Session]:
    """The Session for one state file, or None when it is not a user session."""
    if not is_user_session(fields):
        return None
    raw = fields.get("STATE") or ("active" if fields.get("ACTIVE") == "1" else "online")
    realtime = _int(fields.get("REALTIME"))
    audit = _int(fields.get("AUDIT"))
    return Session(
        id=session_id,
        state=logind_state(raw),
        protocol=protocol_of(fields),
        user=fields.get("USER", ""),
        logon_time=realtime / 1e6 if realtime else None,
        idle_seconds=max(0.0, now - tty_atime) if tty_atime is not None else None,
        raw_state=raw,
        leader_pid=_int(fields.get("LEADER")),
        audit_id=audit if audit is not None and 0 < audit < 4294967295 else None,
    )


def tty_atime(tty: str, dev_root: str = DEFAULT_DEV) -> Optional[float]:
    """The last access of a tty device ("pts/3", "tty1", "/dev/pts/3"): when its user last typed."""
    if not tty:
        return None
    name = tty[len("/dev/"):] if tty.startswith("/dev/") else tty
    if ".." in name.split("/") or name.startswith("/"):
        return None
    try:
        return os.stat(os.path.join(dev_root, name)).st_atime
    except OSError:
        return None


DEFAULT_BOOTED = "/run/systemd/system"


def usable(root: str = DEFAULT_ROOT, booted: str = DEFAULT_BOOTED) -> bool:
    """Whether logind keeps sessions here (the `auto` choice).

    The session directory alone is not enough: a container image can carry an
    empty /run/systemd/sessions with no logind behind it, and then every real
    session (sshd, console) would go uncounted. Like sd_booted(), require
    /run/systemd/system (`booted`), which exists only while systemd runs the machine.
    """
    return os.path.isdir(root) and os.access(root, os.R_OK | os.X_OK) and os.path.isdir(booted)


class LogindSource:
    """Sessions from logind's state files under `root` (a fixture tree in tests)."""

    name = "logind"

    def __init__(self, root: str = DEFAULT_ROOT, dev_root: str = DEFAULT_DEV,
                 clock: Callable[[], float] = time.time):
        self.root = root
        self.dev_root = dev_root
        self.clock = clock

    def snapshot(self) -> List[Session]:
        now = self.clock()
        sessions = []
        for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
            # Skip the <id>.ref FIFOs and temporary files next to the state files.
            if "." in entry.name or not _SCOPE_SESSION_RE.match(entry.name):
                continue
            try:
                if not entry.is_file():
                    continue
                with open(entry.path, encoding="utf-8", errors="replace") as f:
                    fields = parse_state_file(f.read())
            except OSError as e:  # the session ended while being read
                log.debug("logind session %s vanished while being read: %s", entry.name, e)
                continue
            session = session_from_logind(entry.name, fields, now, tty_atime(fields.get("TTY", ""), self.dev_root))
            if session is not None:
                sessions.append(session)
        return sessions
