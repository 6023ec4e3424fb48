"""RunSpec: everything that defines one run. Its stable hash is the run id."""

import hashlib
import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class RunSpec:
    method: str
    dataset: str
    imbalance_factor: float
    profile: str
    backbone: str
    seed: int
    epochs: int
    batch_size: int
    n_max: int | None  # head-class size; None = the dataset's paper value
    preset: str  # paper | quick | smoke, or custom when anything was overridden
    params: dict = field(default_factory=dict)  # every method and trainer hyperparameter, resolved

    @property
    def run_id(self) -> str:
        # the preset label is a description of the values, not one of them: two routes to
        # the same values are the same run
        identity = {k: v for k, v in self.to_dict().items() if k != "preset"}
        blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        return f"{self.method} {self.dataset} IF{self.imbalance_factor:g} seed{self.seed}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunSpec":
        return cls(**data)
