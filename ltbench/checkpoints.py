"""A run's checkpoint: its latest epoch (weights, optimiser, RNG and sampler state) and the
weights of its epoch best on validation, stamped with the run id and spec it belongs to.

Who can write a results dir can make ltbench read what they wrote, so a checkpoint is read
weights-only (tensors and plain data): loading one never runs code. A checkpoint that would
need more, or that names another run, is refused and left where it is for the user to look
at; one that is merely unreadable is moved aside and the run starts over.

The only module of the store that needs torch: reading results (ltbench.results_dir) never
opens a checkpoint. It writes nothing itself: the store (and the migration) write the bytes
it makes as they write every file.
"""

import io
import os
import pickletools
import zipfile
from pathlib import Path

import torch

from ltbench.errors import CorruptFile
from ltbench.spec import RunSpec


def weights_copy(backbone: torch.nn.Module, method: torch.nn.Module) -> dict:
    """The weights of this moment, copied to the CPU: a checkpoint keeps those of the epoch
    best on validation beside its latest epoch's (`bestval_weights`), for a two-stage
    method's stage 2 that starts there (ltbench.stages)."""
    return {name: {key: value.detach().to("cpu", copy=True) if isinstance(value, torch.Tensor) else value
                   for key, value in module.state_dict().items()}
            for name, module in (("backbone", backbone), ("method", method))}


class CheckpointRefused(Exception):
    """A checkpoint that is not used: loading it could run code, or it belongs to another run
    (or to other data). It is left where it is, for the user to look at."""


def stamped(spec: RunSpec, state: dict) -> bytes:
    """`state` (tensors and plain data only) as a checkpoint file, stamped with the run it belongs to."""
    buffer = io.BytesIO()
    torch.save({**state, "run_id": spec.run_id, "spec": spec.to_dict()}, buffer)
    return buffer.getvalue()


def load_checkpoint(path: Path, run_id: str) -> dict | None:
    """The run's latest checkpoint, or None.

    Read weights-only, so nothing in it runs. One that would need more (a pickle that
    imports code) or that names another run is refused (CheckpointRefused) and left
    where it is; one that is merely unreadable is moved aside and reported (CorruptFile),
    and the run starts over rather than failing for ever."""
    if not path.exists():
        return None
    code = code_in_pickle(path)
    if code:
        raise CheckpointRefused(
            f"checkpoint {path} is not plain data: unpickling it would call {code}. It was not loaded; "
            "if you did not put it there, someone who can write this results dir did. Move it away "
            "(or delete it) to start the run over")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a damaged file
        aside = path.with_name("checkpoint.corrupt.pt")
        os.replace(path, aside)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CorruptFile(f"checkpoint {path} could not be read ({first}); moved to {aside.name}") from None
    check_checkpoint_identity(path, state, run_id)
    return state


def check_checkpoint_identity(path: Path, state, run_id: str) -> None:
    """The checkpoint names `run_id`, and its spec hashes to it: never another run's weights
    under this run's id."""
    if not isinstance(state, dict) or not isinstance(state.get("spec"), dict) or "run_id" not in state:
        raise CheckpointRefused(f"checkpoint {path} names no run (written by ltbench 0.1, or not by ltbench); "
                                "it was not used. Move it away (or delete it) to start the run over")
    if state["run_id"] != run_id:
        try:
            label = RunSpec.from_dict(state["spec"]).label
        except (TypeError, ValueError):
            label = "?"
        raise CheckpointRefused(f"checkpoint {path} is run {state['run_id']}'s ({label}), not run {run_id}'s: "
                                "copied from another run? It was not used. Move it away (or delete it) to start "
                                "the run over")
    try:
        hashed = RunSpec.from_dict(state["spec"]).run_id
    except (TypeError, ValueError) as exc:
        raise CheckpointRefused(f"checkpoint {path}: its spec is not a run spec ({exc})") from None
    if hashed != run_id:
        raise CheckpointRefused(f"checkpoint {path} says it is run {run_id}'s but holds the spec of run {hashed}; "
                                "it was not used. Move it away (or delete it) to start the run over")


# the pickle opcodes that import a global: a file torch.save wrote has its globals checked by
# torch (get_unsafe_globals_in_checkpoint); any other pickle was not written by ltbench
IMPORTS = {"GLOBAL", "STACK_GLOBAL", "INST"}
TEXT = {"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"}


def code_in_pickle(path: Path) -> str:
    """What a checkpoint's pickle would import beyond tensors and plain data ("" for none),
    found by reading its opcodes, never by running them. torch.load(weights_only=True)
    refuses such a file too; this tells a planted file from a damaged one."""
    try:
        if zipfile.is_zipfile(path):
            return ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        data = path.read_bytes()
    except (OSError, ValueError, RuntimeError, zipfile.BadZipFile):
        return ""  # unreadable: torch.load says how
    names, strings, stream = [], [], io.BytesIO(data)
    try:
        while stream.tell() < len(data):  # a legacy torch file is several pickles in a row
            start = stream.tell()
            for opcode, arg, _ in pickletools.genops(stream):
                if opcode.name in TEXT:
                    strings.append(arg)
                elif opcode.name == "STACK_GLOBAL":
                    names.append(".".join(strings[-2:]))
                elif opcode.name in IMPORTS:
                    names.append(str(arg).replace(" ", "."))
            if stream.tell() == start:
                break
    except Exception:  # noqa: BLE001 - not a pickle, or a damaged one: what it names so far
        pass
    return ", ".join(n for n in dict.fromkeys(names) if n not in _allowed_globals())


def _allowed_globals() -> set[str]:
    try:  # what torch's weights-only unpickler itself allows (a legacy-format torch file names them)
        from torch._weights_only_unpickler import _get_allowed_globals
        return set(_get_allowed_globals())
    except (ImportError, AttributeError):
        return set()


def _numpy_data_types() -> list:
    """numpy's pickle rebuilders of arrays, scalars and dtypes: each makes data, never a call."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    return [core.multiarray.scalar, core.multiarray._reconstruct, np.ndarray, np.dtype,
            *(getattr(np.dtypes, name) for name in np.dtypes.__all__)]


def plain(value):
    """numpy scalars as Python numbers and numpy arrays as tensors, through dicts, lists and tuples."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, dict):
        return type(value)((k, plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


def upgrade_legacy_checkpoint(path: Path, spec: RunSpec, log) -> bytes | None:
    """A checkpoint of ltbench 0.1 (it named no run and held numpy scalars), read weights-only with
    numpy's data rebuilders allowed and nothing else, as plain data stamped with its run; None
    where it is not one or needs more (it stays as it is, and the run refuses it)."""
    if not path.exists():
        return None
    try:
        with torch.serialization.safe_globals(_numpy_data_types()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - left as it is; the run refuses it and says why
        log(f"{path}: a checkpoint of ltbench 0.1 that is not plain data ({type(exc).__name__}); not upgraded")
        return None
    if not isinstance(state, dict) or "run_id" in state:
        return None
    return stamped(spec, plain(state))
