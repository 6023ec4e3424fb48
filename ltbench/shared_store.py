"""The results store as the processes of one distributed run share it.

Rank 0 writes the spec, the checkpoints and the result; what the run reads back (its
checkpoint, whether a run is done) is rank 0's reading, broadcast, so every rank takes the
same path through `execute` even where a network file system shows one node a new file
before another. A failure is recorded by whichever rank meets it.
"""

from ltbench import distributed
from ltbench.checkpoints import CheckpointRefused
from ltbench.errors import CorruptFile
from ltbench.store import RunStore


def open_store(results_dir):
    store = RunStore(results_dir)
    return RankZeroStore(store) if distributed.is_distributed() else store


class RankZeroStore:
    def __init__(self, store: RunStore):
        self.store = store

    def __getattr__(self, name):
        # paths and the rest read the same on every rank
        return getattr(self.store, name)

    def write_spec(self, spec) -> None:
        if distributed.is_main():
            self.store.write_spec(spec)

    def save_checkpoint(self, spec, state: dict) -> None:
        if distributed.is_main():
            self.store.save_checkpoint(spec, state)

    def write_history(self, run_id: str, history: list[dict]) -> None:
        if distributed.is_main():
            self.store.write_history(run_id, history)

    def write_predictions(self, run_id: str, arrays: dict) -> None:
        if distributed.is_main():
            self.store.write_predictions(run_id, arrays)

    def write_result(self, row: dict, per_class: list[dict] | None = None) -> None:
        if row["status"] == "failed":
            self.store.write_result(row, per_class)
            return
        if distributed.is_main():
            self.store.write_result(row, per_class)
        # no rank moves on (to a run that may reuse this one) before the result exists
        distributed.barrier()

    def state(self, run_id: str) -> str:
        return self.inspect(run_id)[0]

    def inspect(self, run_id: str) -> tuple[str, str]:
        return distributed.broadcast(self.store.inspect(run_id) if distributed.is_main() else None)

    def set_aside(self, run_id: str):
        return distributed.broadcast(self.store.set_aside(run_id) if distributed.is_main() else None)

    def read_result(self, run_id: str) -> dict | None:
        return distributed.broadcast(self.store.read_result(run_id) if distributed.is_main() else None)

    def load_checkpoint(self, run_id: str) -> dict | None:
        loaded = None
        if distributed.is_main():
            try:
                loaded = ("state", self.store.load_checkpoint(run_id))
            except CorruptFile as exc:  # rank 0 has moved it aside; every rank starts over
                loaded = ("corrupt", str(exc))
            except CheckpointRefused as exc:  # every rank fails the run alike
                loaded = ("refused", str(exc))
        kind, value = distributed.broadcast(loaded)
        if kind == "corrupt":
            raise CorruptFile(value)
        if kind == "refused":
            raise CheckpointRefused(value)
        return value
