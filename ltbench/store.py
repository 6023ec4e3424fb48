"""The results store (the writer): one folder per run, named by its run id, laid out as
ltbench.results_dir reads it; the checkpoint in it is ltbench.checkpoints'.

Every file is written to a temporary name and renamed into place, so a killed process
leaves either the old file or the new one, never half of one. Each run has its own folder,
so concurrent jobs never write to one shared file. result.csv is written last, so its
presence marks a finished run.

Who can write a results dir can make ltbench read what they wrote, so folders are created
writable by their owner only (0755 less the umask) and files 0644 less the umask: readable
by collaborators as the umask allows, writable by no one else.
"""

import csv
import io
import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from ltbench.errors import CorruptFile, UserError  # noqa: F401  (CorruptFile: what the readers raise)
# the modes and atomic write live apart so that the torch-free report uses them too
from ltbench.file_modes import (DIR_MODE, FILE_MODE, atomic_write_bytes, make_dirs,  # noqa: F401
                                owner_writes_only, umask)
from ltbench.results_dir import CHECKPOINT_FILE, PER_CLASS_FILE, RESULT_FILE, SPEC_FILE, ResultsDir
from ltbench.results_schema import (HISTORY_FILE, HISTORY_LEADING, HISTORY_TRAILING, PER_CLASS_COLUMNS,
                                    PREDICTIONS_FILE, RESULT_COLUMNS)
from ltbench.spec import RunSpec

SET_ASIDE = ".corrupt"  # run folders whose files disagree, moved here rather than deleted



def csv_bytes(columns: list[str], rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return out.getvalue().encode()


def history_columns(history: list[dict]) -> list[str]:
    """The fixed leading and trailing columns, and between them what the method recorded, in
    the order it first appeared."""
    fixed = set(HISTORY_LEADING) | set(HISTORY_TRAILING)
    recorded = dict.fromkeys(k for row in history for k in row if k not in fixed)
    return [*HISTORY_LEADING, *recorded, *HISTORY_TRAILING]


class RunStore(ResultsDir):
    """A results dir that runs are written to."""

    def ensure_writable(self) -> None:
        try:
            make_dirs(self.root)
            probe = tempfile.NamedTemporaryFile(dir=self.root, prefix=".write-probe-")
            probe.close()
        except OSError as exc:
            raise UserError(
                f"results dir {self.root} is not writable ({exc.strerror or exc})",
                hint="pass --results-dir with a folder you can write to, or fix its permissions",
            ) from None

    def write_text(self, run_id: str, name: str, text: str) -> None:
        """A file of the run's own (an error log), written as the store writes every file."""
        atomic_write_bytes(self.run_dir(run_id) / name, text.encode())

    def write_spec(self, spec: RunSpec) -> None:
        atomic_write_bytes(self.run_dir(spec.run_id) / SPEC_FILE, json.dumps(spec.to_dict(), indent=2).encode())

    def write_result(self, row: dict, per_class: list[dict] | None = None) -> None:
        folder = self.run_dir(row["run_id"])
        if per_class is not None:
            atomic_write_bytes(folder / PER_CLASS_FILE, csv_bytes(PER_CLASS_COLUMNS, per_class))
        atomic_write_bytes(folder / RESULT_FILE, csv_bytes(RESULT_COLUMNS, [row]))

    def write_history(self, run_id: str, history: list[dict]) -> None:
        """history.csv, rewritten whole from the checkpointed rows at each epoch end, so after
        a resume it holds exactly the epochs the weights have seen."""
        # six significant digits: a loss or lr reads as 0.693147, not 0.6931471805599453
        rows = [{k: format(v, ".6g") if isinstance(v, float) else v for k, v in row.items()} for row in history]
        atomic_write_bytes(self.run_dir(run_id) / HISTORY_FILE, csv_bytes(history_columns(history), rows))

    def write_predictions(self, run_id: str, arrays: dict) -> None:
        import numpy as np

        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        atomic_write_bytes(self.run_dir(run_id) / PREDICTIONS_FILE, buffer.getvalue())

    def set_aside(self, run_id: str) -> Path:
        """Moves a run folder whose files cannot be trusted out of the way (never deletes
        it), so the run can start over; returns where it went."""
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds").replace(":", "")
        aside = self.root / SET_ASIDE / f"{run_id}.{stamp}"
        make_dirs(aside.parent)
        n = 1
        while aside.exists():
            n += 1
            aside = aside.with_name(f"{aside.name.split('~')[0]}~{n}")
        os.rename(self.run_dir(run_id), aside)
        return aside

    # checkpoints need torch, which nothing that only reads a results dir imports

    def checkpoint_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / CHECKPOINT_FILE

    def save_checkpoint(self, spec: RunSpec, state: dict) -> None:
        from ltbench.checkpoints import stamped

        atomic_write_bytes(self.checkpoint_path(spec.run_id), stamped(spec, state))

    def load_checkpoint(self, run_id: str) -> dict | None:
        """ltbench.checkpoints.load_checkpoint: CheckpointRefused or CorruptFile where it is not used."""
        from ltbench.checkpoints import load_checkpoint

        return load_checkpoint(self.checkpoint_path(run_id), run_id)
