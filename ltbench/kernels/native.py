"""Compiling ltbench's C kernels on first use and loading them with ctypes.

The kernels are plain C with OpenMP and no PyTorch headers, so one compiles in about a
second with the system's C compiler (`$CC`, else `cc`). The shared object is cached under
$LTBENCH_CACHE/kernels (default ~/.cache/ltbench/kernels), named by a hash of everything
that shapes it: the source, the compiler, the flags, the OpenMP runtime it links and the
CPU, since -march=native code from one machine of a cluster may not run on another that
shares the home directory. Without a working compiler `build` returns None with the reason,
and callers keep PyTorch's own operators.
"""

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch  # noqa: F401  (loaded first: its OpenMP runtime is the one the kernels join)

HERE = Path(__file__).parent
# no FMA contraction: the backward recomputes the forward's ReLU mask and must get the
# forward's exact floats
CFLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fopenmp", "-fPIC", "-shared"]


@dataclass(frozen=True)
class Loaded:
    library: ctypes.CDLL | None
    reason: str  # why library is None; "" when it loaded


def cache_dir() -> Path:
    return Path(os.environ.get("LTBENCH_CACHE", "~/.cache/ltbench")).expanduser() / "kernels"


def torch_openmp_runtime() -> str:
    """The OpenMP library PyTorch loaded, so the kernels link that one and share its thread
    pool: two runtimes in one process would each keep threads spinning for work."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return ""
    for line in maps.splitlines():
        path = line.split()[-1] if "/" in line else ""
        if Path(path).name.startswith(("libgomp", "libiomp5", "libomp")):
            return path
    return ""


def _cpu_identity() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text().split("\n\n")[0]
    except OSError:
        return platform.processor()
    keep = ("model name", "flags", "Features", "CPU part")
    return "\n".join(line for line in info.splitlines() if line.split(":")[0].strip() in keep)


def _compiler_version(compiler: str) -> str:
    out = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout


def _command(compiler: str, source: Path, target: Path, openmp: str) -> list[str]:
    # PyTorch's runtime is linked by path (found again at load time through the rpath) and
    # ahead of the -lgomp that -fopenmp adds, so its symbols are the ones the kernels bind
    runtime = [openmp, f"-Wl,-rpath,{Path(openmp).parent}"] if openmp else []
    return [compiler, *CFLAGS, str(source), *runtime, "-o", str(target)]


def build(name: str) -> Loaded:
    """Loads ltbench/kernels/<name>.c's library from the cache, compiling it if it is not
    there. Each kernel's module calls this once per process and keeps the result."""
    source = HERE / f"{name}.c"
    compiler = os.environ.get("CC", "cc")
    openmp = torch_openmp_runtime()
    try:
        version = _compiler_version(compiler)
    except (OSError, subprocess.SubprocessError) as exc:
        return Loaded(None, f"no C compiler ({compiler}: {exc})")
    key = hashlib.sha256("\0".join([source.read_text(), compiler, version, " ".join(CFLAGS), openmp,
                                    _cpu_identity()]).encode()).hexdigest()[:16]
    target = cache_dir() / f"{name}-{key}.so"
    if not target.exists():
        reason = _compile(compiler, source, target, openmp)
        if reason:
            return Loaded(None, reason)
    try:
        return Loaded(ctypes.CDLL(str(target)), "")
    except OSError as exc:
        return Loaded(None, f"{target} would not load: {exc}")


def _compile(compiler: str, source: Path, target: Path, openmp: str) -> str:
    """Compiles to a private file and renames it into place, so concurrent runs (a Slurm
    array sharing one home directory) never load a half-written library. Returns "" or why
    it failed."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
        os.close(fd)
    except OSError as exc:
        return f"cannot write the compiled kernel to {target.parent}: {exc} (set LTBENCH_CACHE to a writable folder)"
    try:
        out = subprocess.run(_command(compiler, source, Path(partial), openmp), capture_output=True,
                             text=True, timeout=300)
        if out.returncode != 0:
            return f"{compiler} could not compile {source.name}: {out.stderr.strip()[-2000:]}"
        os.replace(partial, target)
        return ""
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{compiler} could not compile {source.name}: {exc}"
    finally:
        Path(partial).unlink(missing_ok=True)
