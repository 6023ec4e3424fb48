"""The modes and the atomic write every file ltbench writes goes through, torch-free so that
the report uses them too.

Who can write a results dir can make ltbench read what they wrote, so folders are created
writable by their owner only (0755 less the umask) and files 0644 less the umask: readable
by collaborators as the umask allows, writable by no one else.
"""

import contextlib
import os
import tempfile
from pathlib import Path

DIR_MODE, FILE_MODE = 0o755, 0o644  # less the umask; group and others never write


def umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it
    os.umask(mask)
    return mask


@contextlib.contextmanager
def owner_writes_only():
    """Files and folders created inside (by ltbench or by a library, e.g. submitit's job
    pickles) are not writable by group or others, whatever the user's umask."""
    before = os.umask(0o022)
    os.umask(before | 0o022)
    try:
        yield
    finally:
        os.umask(before)


def make_dirs(path: Path) -> None:
    """`mkdir -p` with every folder it creates at DIR_MODE less the umask (os.makedirs
    gives the parents it creates the default mode)."""
    path = Path(path)
    missing = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            if not folder.is_dir():
                raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    make_dirs(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # the folder takes no new file
        raise failed_write(exc, path.parent) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            # mkstemp creates 0600: give the file the mode any other file of the user gets
            os.fchmod(fh.fileno(), FILE_MODE & ~umask())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise failed_write(exc, path) from None
        raise


def failed_write(exc: OSError, path: Path) -> OSError:
    """`exc` naming the file or folder whose write failed: a full disk's error names none, a
    refused one the temporary file, which is gone by the time anyone reads the message."""
    return type(exc)(exc.errno, exc.strerror, str(path)) if exc.errno else exc
