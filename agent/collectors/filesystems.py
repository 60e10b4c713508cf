"""Size and free space of the host's real filesystems.

Pseudo filesystems (tmpfs, overlay, cgroup, ...), read-only mounts (snaps, ISO
images) and empty CD-ROM drives say nothing about the host running out of space
and would only add series, so they are left out. When two mounts share a mount
point the last one is kept: it is the one visible there, so the one that
statvfs/GetDiskFreeSpaceEx measures. A mount that cannot be measured (no
permission, a drive that is not ready) is skipped: it is not a collector failure.
At most `Limits.max_filesystems` entries are reported, the first by mount point.

A hung network mount (NFS, CIFS) blocks statvfs forever. Each measurement
runs in a worker thread and is given `STAT_TIMEOUT` seconds; a mount that does
not answer is left out and marked stuck, and is not asked again until that
first call returns, so one dead file server costs one thread, not the agent's
schedule (node_exporter does the same for its filesystem collector).

Sample reading (Windows)::

    [{"mountpoint": "C:\\\\", "fstype": "NTFS", "device": "C:\\\\",
      "size_bytes": 136365211648, "avail_bytes": 41943040000}]
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Dict, List, Optional, Tuple

from agent.collectors import Collector, register
from contract.report import DEFAULT_LIMITS, Filesystem, fits_label

log = logging.getLogger(__name__)

STAT_TIMEOUT = 2.0  # seconds a mount may take to report its size

PSEUDO_FSTYPES = frozenset({
    "autofs", "binfmt_misc", "bpf", "cgroup", "cgroup2", "configfs", "debugfs", "devfs", "devpts",
    "devtmpfs", "efivarfs", "fusectl", "fuse.gvfsd-fuse", "fuse.lxcfs", "fuse.portal", "hugetlbfs",
    "mqueue", "nsfs", "overlay", "proc", "pstore", "ramfs", "rpc_pipefs", "securityfs", "selinuxfs",
    "squashfs", "sysfs", "tmpfs", "tracefs",
})


def wanted(fstype: str, opts: str) -> bool:
    """Whether a mount with this type and these options is a real, writable filesystem."""
    flags = set(opts.split(","))
    if not fstype or "cdrom" in flags or "ro" in flags:
        return False
    return fstype not in PSEUDO_FSTYPES and not fstype.startswith("cgroup")


@register("filesystems")
class FilesystemsCollector(Collector):
    max_entries = DEFAULT_LIMITS.max_filesystems

    def __init__(self, psutil: Any, timeout: float = STAT_TIMEOUT):
        super().__init__(psutil)
        self._warned_cap = False
        self.timeout = timeout
        self._stuck: Dict[str, threading.Thread] = {}

    def _usage(self, mountpoint: str) -> Optional[Any]:
        """disk_usage with a deadline; None for a mount that is (still) stuck. OSError passes through."""
        stuck = self._stuck.get(mountpoint)
        if stuck is not None:
            if stuck.is_alive():
                return None
            del self._stuck[mountpoint]
            log.warning("mount %r answers again", mountpoint)
        result: Dict[str, Any] = {}

        def measure() -> None:
            try:
                result["usage"] = self.psutil.disk_usage(mountpoint)
            except OSError as e:
                result["error"] = e

        worker = threading.Thread(target=measure, name=f"statfs {mountpoint}", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            self._stuck[mountpoint] = worker
            log.warning("mount %r did not answer within %g s (a hung network share?); "
                        "left out until it answers", mountpoint, self.timeout)
            return None
        if "error" in result:
            raise result["error"]
        return result["usage"]

    def collect(self) -> Tuple[Filesystem, ...]:
        by_mountpoint = {p.mountpoint: p for p in self.psutil.disk_partitions(all=False)}  # the last one wins
        out: List[Filesystem] = []
        for mountpoint in sorted(by_mountpoint):
            part = by_mountpoint[mountpoint]
            if not wanted(part.fstype, part.opts):
                continue
            names = (mountpoint, part.fstype) + ((part.device,) if part.device else ())
            if not all(map(fits_label, names)):
                log.debug("skipping mount %r: its name cannot be a label value", mountpoint)
                continue
            if len(out) == self.max_entries:
                if not self._warned_cap:
                    self._warned_cap = True
                    log.warning("more than %d filesystems: reporting the first %d by mount point",
                                self.max_entries, self.max_entries)
                break
            try:
                usage = self._usage(mountpoint)
            except OSError as e:  # PermissionError included
                log.debug("skipping mount %r: %s", mountpoint, e)
                continue
            if usage is None:
                continue
            out.append(Filesystem(mountpoint=mountpoint, fstype=part.fstype, device=part.device,
                                  size_bytes=int(usage.total), avail_bytes=int(usage.free)))
        return tuple(out)
