"""Replace a file whole: readers see the old content or the new, never half of one.

Written once for the agent's logon bookmarks and the collector's snapshot: a
temporary file beside the target (a rename does not cross filesystems),
flushed to disk when asked, then renamed over the target; on any failure the
temporary file is removed, so a full disk is not kept full by our own
half-written file. The temporary file has one fixed name, `<name>.tmp`: each
file has one writer, a crash leaves at most that one file behind for the
next write to replace, and it is created with the permissions any other file
of the process gets (the umask's), as the target always was.
"""

from __future__ import annotations

import os


def replace_file(path: str, data: bytes, *, sync: bool = True) -> None:
    """Write `data` to `path` atomically; with `sync`, the data and the rename reach the disk first."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if sync:
        _sync_folder(folder)


def _sync_folder(folder: str) -> None:
    """Make the rename itself durable where the platform allows it (not on Windows, nor every filesystem)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
