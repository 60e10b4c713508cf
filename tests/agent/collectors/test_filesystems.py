from __future__ import annotations

import logging

import pytest

from agent.collectors.filesystems import FilesystemsCollector, wanted
from contract.report import DEFAULT_LIMITS
from tests.agent import fakepsutil
from tests.agent.helpers import collected, parse_reading


def collector(fixture: str, **changes) -> FilesystemsCollector:
    return FilesystemsCollector.from_context(fakepsutil.context(fakepsutil.load(fixture, **changes)))


def test_linux_keeps_real_writable_filesystems_sorted_by_mountpoint() -> None:
    reading = collected(collector("linux"))
    # Left out: /run (tmpfs), the snap (ro squashfs), /srv/images (ro), docker's overlay, cgroup2,
    # /mnt/backup (PermissionError), /data (a tmpfs mounted over the ext4 one).
    assert [f["mountpoint"] for f in reading] == ["/", "/boot/efi", "/home", "/scratch", "/var"]
    assert reading[0] == {"mountpoint": "/", "fstype": "ext4", "device": "/dev/vda",
                          "size_bytes": 270553174016, "avail_bytes": 84472193024}
    assert len(parse_reading("filesystems", reading).filesystems) == 5


def test_duplicate_mountpoint_keeps_the_last_mount_the_one_measured() -> None:
    scratch = [f for f in collected(collector("linux")) if f["mountpoint"] == "/scratch"]
    assert scratch == [{"mountpoint": "/scratch", "fstype": "ext4", "device": "/dev/sdf1",
                        "size_bytes": 214748364800, "avail_bytes": 96636764160}]


def test_windows_skips_cdrom_drives_and_a_drive_that_is_not_ready() -> None:
    fake = fakepsutil.load("windows")
    reading = collected(FilesystemsCollector.from_context(fakepsutil.context(fake)))
    assert [(f["mountpoint"], f["fstype"]) for f in reading] == [("C:\\", "NTFS"), ("D:\\", "NTFS")]
    assert "disk_usage(F:\\)" in fake.calls  # tried, failed with OSError, skipped without failing
    assert "disk_usage(E:\\)" not in fake.calls  # an empty CD-ROM drive is never touched
    assert "disk_partitions(all=False)" in fake.calls


@pytest.mark.parametrize("fstype, opts, expected", [
    ("ext4", "rw,relatime", True),
    ("NTFS", "rw,fixed", True),
    ("nfs4", "rw,vers=4.2", True),
    ("ext4", "ro,relatime", False),
    ("tmpfs", "rw", False),
    ("cgroup", "rw", False),
    ("cgroup3", "rw", False),
    ("squashfs", "ro", False),
    ("", "cdrom", False),
    ("CDFS", "ro,cdrom", False),
    ("xfs", "rw,errors=remount-ro", True),  # "ro" must be a whole option
])
def test_wanted(fstype: str, opts: str, expected: bool) -> None:
    assert wanted(fstype, opts) is expected


def test_capped_at_the_contract_limit_first_by_mountpoint_with_one_warning(caplog) -> None:
    n = DEFAULT_LIMITS.max_filesystems + 6
    parts = [{"device": f"/dev/sd{i}", "mountpoint": f"/m/{i:03d}", "fstype": "ext4", "opts": "rw"}
             for i in reversed(range(n))]
    usage = {p["mountpoint"]: {"total": 100, "used": 40, "free": 60, "percent": 40.0} for p in parts}
    c = collector("linux", disk_partitions=parts, disk_usage=usage)
    with caplog.at_level(logging.WARNING):
        first = collected(c)
        second = collected(c)
    assert first == second
    assert [f["mountpoint"] for f in first] == [f"/m/{i:03d}" for i in range(DEFAULT_LIMITS.max_filesystems)]
    assert len(parse_reading("filesystems", first).filesystems) == DEFAULT_LIMITS.max_filesystems
    assert len([r for r in caplog.records if "filesystems" in r.getMessage()]) == 1


def test_a_mountpoint_the_contract_refuses_costs_only_its_own_entry() -> None:
    odd = ["/mnt/" + "x" * 200, "/mnt/bell\x07", "/media/usb\n"]
    parts = [{"device": "/dev/sdz1", "mountpoint": m, "fstype": "ext4", "opts": "rw"} for m in odd]
    parts.append({"device": "/dev/vda", "mountpoint": "/", "fstype": "ext4", "opts": "rw"})
    usage = {p["mountpoint"]: {"total": 100, "used": 40, "free": 60, "percent": 40.0} for p in parts}
    reading = collected(collector("linux", disk_partitions=parts, disk_usage=usage))
    assert [f["mountpoint"] for f in reading] == ["/"]
    parse_reading("filesystems", reading)


def test_a_hung_mount_is_left_out_until_it_answers(caplog) -> None:
    import threading

    fake = fakepsutil.load("linux")
    released = threading.Event()
    real = fake.disk_usage
    calls = []

    def disk_usage(path):
        calls.append(path)
        if path == "/home":
            released.wait(10)  # a dead NFS server
        return real(path)

    fake.disk_usage = disk_usage
    c = FilesystemsCollector.from_context(fakepsutil.context(fake))
    c.timeout = 0.2
    with caplog.at_level(logging.WARNING):
        first = [f["mountpoint"] for f in collected(c)]
        second = [f["mountpoint"] for f in collected(c)]
    assert first == second == ["/", "/boot/efi", "/scratch", "/var"]
    assert calls.count("/home") == 1  # not asked again while the first call hangs
    assert len([r for r in caplog.records if "did not answer" in r.getMessage()]) == 1
    released.set()
    c._stuck["/home"].join(5)
    assert [f["mountpoint"] for f in collected(c)] == ["/", "/boot/efi", "/home", "/scratch", "/var"]
