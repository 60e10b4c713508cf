"""The open-file limit against the connection cap.

Every connection is a file descriptor. When the process runs out of them,
accept() fails, new connections wait in the kernel's backlog until an old one
closes, and the collector cannot even open its snapshot file. So at start the
soft RLIMIT_NOFILE is raised toward the hard one, and when it still cannot
cover the connection cap plus the collector's own files, the cap is lowered to
fit and that is said once, with what to change (LimitNOFILE= in the unit).
"""

from __future__ import annotations

import logging
from typing import Optional, Tuple

try:
    import resource
except ImportError:  # Windows: no rlimits; the cap stands as configured
    resource = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# Descriptors kept for everything that is not a connection: the listening socket,
# the event loop's own, logs, the snapshot file, connections being refused or
# evicted, and connections accepted in one burst before they are counted.
HEADROOM = 256
INFINITY = getattr(resource, "RLIM_INFINITY", -1)


def wanted_soft_limit(soft: int, hard: int, wanted: int) -> int:
    """The soft limit to ask for: `wanted` as far as the hard limit allows, never less than now."""
    if soft == INFINITY or soft >= wanted:
        return soft
    if hard == INFINITY:
        return wanted
    return max(soft, min(hard, wanted))


def connection_cap(max_connections: int, soft: int, headroom: int = HEADROOM) -> int:
    """How many connections `soft` descriptors can carry beside the collector's own (at least 1)."""
    if soft == INFINITY:
        return max_connections
    return max(1, min(max_connections, soft - headroom))


def fit_connections(max_connections: int, limits: Optional[object] = resource) -> Tuple[int, str]:
    """Raise the soft open-file limit as far as needed and allowed; the connection cap it carries and,
    when that is below `max_connections`, the warning to log."""
    if limits is None:
        return max_connections, ""
    soft, hard = limits.getrlimit(limits.RLIMIT_NOFILE)
    target = wanted_soft_limit(soft, hard, max_connections + HEADROOM)
    if target != soft:
        try:
            limits.setrlimit(limits.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.debug("cannot raise the open-file limit to %d: %s", target, e)
    cap = connection_cap(max_connections, soft)
    if cap >= max_connections:
        return cap, ""
    return cap, (f"the open-file limit is {soft} (hard limit {'unlimited' if hard == INFINITY else hard}), "
                 f"below max_connections ({max_connections}) plus {HEADROOM} for the collector's own files: "
                 f"serving at most {cap} connections at once; raise LimitNOFILE= in the service unit "
                 f"(or `ulimit -n`) to at least {max_connections + HEADROOM}")
