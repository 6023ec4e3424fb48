"""What a run needs besides its spec: where its data is and the tag its row is recorded under.

Neither is part of what a run is (its run id): the same images read from another folder
train the same run. `ltbench run` makes one context from its flags, its sweep file and
$LTBENCH_DATA, and every launcher hands it down as an argument to `runner.execute` and from
there to the dataset builders: in this process, as an argument of each `--jobs` worker,
inside the call a Slurm job unpickles. Nothing below the command line reads the
environment, so a sweep never sees the data options or the tag of one before it.
"""

import copy
from dataclasses import dataclass, field
from pathlib import Path

from ltbench.data.sources import data_root


@dataclass(frozen=True)
class RunContext:
    # resolved: a job starts in another working directory
    data_root: Path = field(default_factory=data_root)
    # {dataset: {option: path}}: where an image dataset's files are when not in the default
    # layout (ltbench.data.image_datasets.OPTION_KEYS)
    data_options: dict = field(default_factory=dict)
    tag: str = ""  # the experiment tag (ltbench.tag); "" for none

    def __post_init__(self):
        object.__setattr__(self, "data_root", data_root(self.data_root).resolve())
        # a copy of its own: the caller's dict changing later cannot move a run's data
        object.__setattr__(self, "data_options", copy.deepcopy(dict(self.data_options)))

    def options_of(self, dataset: str) -> dict:
        return dict(self.data_options.get(dataset, {}))

    def to_dict(self) -> dict:
        """As JSON carries it (a `--jobs` worker's argument)."""
        return {"data_root": str(self.data_root), "data_options": self.data_options, "tag": self.tag}

    @classmethod
    def from_dict(cls, data: dict) -> "RunContext":
        return cls(Path(data["data_root"]), data["data_options"], data["tag"])
