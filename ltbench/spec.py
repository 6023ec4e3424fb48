"""RunSpec: everything that defines one run. The stable hash of its protocol is the run id."""

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
    preset: str  # paper | quick | smoke, or custom when a protocol setting was overridden
    params: dict = field(default_factory=dict)  # the trainer's other protocol settings, resolved
    # the method's own hyperparameters under its name, and its stage 1's under that one's:
    # {"crt": {"crt_lr": 0.2, ...}, "ce": {}}
    hyperparameters: dict = field(default_factory=dict)
    execution: dict = field(default_factory=dict)  # how it runs (ltbench.settings): not its identity

    @property
    def run_id(self) -> str:
        # the preset label describes the values rather than being one of them, and execution
        # settings say how the run is computed: neither is part of what the run is
        identity = {k: v for k, v in self.to_dict().items() if k not in ("preset", "execution")}
        blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        return f"{self.method} {self.dataset} IF{self.imbalance_factor:g} seed{self.seed}"

    @property
    def own_hyperparameters(self) -> dict:
        return self.hyperparameters.get(self.method, {})

    @property
    def trainer_params(self) -> dict:
        """What the trainer reads: the protocol settings and the execution settings."""
        return {**self.params, **self.execution}

    def flat_params(self) -> dict:
        """One flat dict for result rows and report labels: the trainer's settings, the method's
        own hyperparameters by name, a stage 1's as `stage1_method.name`."""
        flat = dict(self.params)
        for owner, values in self.hyperparameters.items():
            flat.update({(k if owner == self.method else f"{owner}.{k}"): v for k, v in values.items()})
        return flat

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunSpec":
        return cls(**data)
