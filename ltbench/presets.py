"""Protocol presets: `paper` is the published protocol; `quick` and `smoke` shrink it.

A preset only changes how long and how big a run is (epochs, backbone, head-class size,
how often to evaluate); learning rates and losses stay the method's paper defaults.
"""

from ltbench.data.datasets import DatasetInfo
from ltbench.errors import UserError


def paper(ds: DatasetInfo) -> dict:
    return {"epochs": 200, "backbone": "resnet32_cifar", "n_max": None}


def quick(ds: DatasetInfo) -> dict:
    # a few minutes per comparison on a 2-core CPU; head classes capped at 1000 images so the
    # tail still reaches the few-shot group (< 20 images) at IF 100
    return {"epochs": 12, "backbone": "resnet8_cifar", "n_max": min(ds.n_max, 1000),
            "warmup_epochs": 1, "eval_every": 6}


def smoke(ds: DatasetInfo) -> dict:
    # seconds per run: proves the whole path works, measures nothing
    return {"epochs": 2, "backbone": "resnet8_cifar", "n_max": min(ds.n_max, 200), "batch_size": 64,
            "warmup_epochs": 0, "eval_every": 2}


PRESETS = {"paper": paper, "quick": quick, "smoke": smoke}


def preset_values(name: str, ds: DatasetInfo) -> dict:
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}'", hint=f"use one of: {', '.join(PRESETS)}")
    return PRESETS[name](ds)
