"""Each run trained by one process at a time: a lock file in the run's folder, held while it trains.

Every process that trains runs takes the run's lock in `ltbench.runner.execute` first: a
local sweep, a job of `ltbench run --jobs N`, a Slurm job, rank 0 of a torchrun run (the
other ranks follow rank 0's answer). A process that finds the lock held skips the run for
now, or waits for it (a two-stage run for its stage 1, a sweep for the runs it skipped).

The lock is an OS lock, flock(2) through the filelock package, not a marker file: the kernel
drops it when the holding process ends, however it ends (kill -9 and out-of-memory kills
included). The lock file stays behind, unlocked, and the next process takes the run over
with nothing to clean up. What holds where:

- A local disk: always.
- NFS (v3 with lockd, or v4): Linux sends flock to the server as a whole-file byte-range lock
  (since kernel 2.6.12, unless the mount says local_lock=flock or all), and the server
  arbitrates between clients, so a sweep on a workstation and Slurm jobs on cluster nodes
  exclude each other. A process that dies on a running client gives its lock back at once;
  the locks of a client node that crashed stay held until the server notices: when its
  NFSv4 lease runs out (90 s by default), or, on NFSv3, when that node reboots.
- A file system without flock (some FUSE and Lustre mounts; flock fails with ENOSYS):
  filelock falls back to a marker file that names the holder's pid and host, and warns. A
  marker left by a dead process on the same host is taken over; one left by a process on
  another host is not, since this host cannot tell whether that process still runs: delete
  the run's `train.lock` by hand once you know it has ended.
"""

import os
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from ltbench.store import FILE_MODE, make_dirs, umask

LOCK_FILE = "train.lock"
# A waiting rank 0 tells the other ranks this often that it is still waiting: a collective
# must not outlast ltbench.distributed.TIMEOUT.
POLL_SECONDS = 30.0


def lock_path(run_dir) -> Path:
    return Path(run_dir) / LOCK_FILE


@contextmanager
def holding(run_dir, wait: bool = False, on_wait=None):
    """Holds the run's lock for the block and yields True; yields False at once when another
    process holds it, unless `wait`: then calls `on_wait()` once and waits for it.
    In a distributed run only rank 0 takes the lock; every rank gets rank 0's answer."""
    from ltbench import distributed  # torch: `ltbench status` reads locks without it

    lock = None
    if distributed.is_main():
        make_dirs(Path(run_dir))
        # the store's file mode: no one else may write what ltbench reads
        lock = FileLock(lock_path(run_dir), mode=FILE_MODE & ~umask())
    held = _acquire(lock, wait, on_wait)
    try:
        yield held
    finally:
        if held and lock is not None:
            lock.release()


def _acquire(lock: FileLock | None, wait: bool, on_wait) -> bool:
    from ltbench import distributed

    timeout = 0.0
    while True:
        held = distributed.broadcast(_try(lock, timeout) if lock is not None else None)
        if held or not wait:
            return held
        if timeout == 0.0 and on_wait is not None:
            on_wait()
        timeout = POLL_SECONDS


def _try(lock: FileLock, timeout: float) -> bool:
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        return False
    return True


def wait_while_held(run_dir, on_wait=None) -> None:
    """Returns once no other process holds the run's lock (at once when none does)."""
    with holding(run_dir, wait=True, on_wait=on_wait):
        pass


def holder_pid(run_dir) -> int | None:
    """The process of this machine that holds the run's lock, read from the kernel's table of
    locks (/proc/locks, Linux) without touching the lock: a probe that took it, even for a
    moment, could make a sweep skip the run. None where no process here holds it, and where
    this cannot be told (no /proc; a holder on another NFS client)."""
    try:
        lock = lock_path(run_dir).stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    for line in table.splitlines():
        # "1: FLOCK  ADVISORY  WRITE 4120 fe:00:2146327 0 EOF" (a waiter's line has "->" second)
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK" or fields[5].count(":") != 2:
            continue
        major, minor, inode = fields[5].split(":")
        if (int(inode), int(major, 16), int(minor, 16)) == (lock.st_ino, os.major(lock.st_dev), os.minor(lock.st_dev)):
            return int(fields[4])
    return None
