"""Protocol presets: `paper` is the published protocol; `quick` and `smoke` shrink it.

A preset only changes how long and how big a run is (epochs, backbone, head-class size,
batch size, how often to evaluate); losses stay the method's paper defaults, and so does
the learning rate per image: where a preset changes the batch size, the sweep scales the
paper's learning rate linearly with it. A preset is a function of the dataset and of the
method's full protocol there (`protocol_base`), which it shrinks.
"""

from ltbench.data.datasets import DatasetInfo
from ltbench.errors import UserError
from ltbench.settings import SETTINGS, defaults


def protocol_base(method, ds: DatasetInfo) -> dict:
    """The full protocol a preset shrinks: the settings' defaults < the dataset's protocol <
    the method's paper values (on that dataset)."""
    return {**defaults(SETTINGS), **ds.protocol, **method.protocol_defaults(ds)}


def paper(ds: DatasetInfo, protocol: dict) -> dict:
    # a paper run keeps its test predictions: a few hundred kB next to hours of training
    if ds.protocol:  # the dataset's own (ImageNet-LT: ResNeXt-50, 90 epochs, ...)
        return {"n_max": None, "save_predictions": True}
    cifar = {"backbone": "resnet32_cifar", "n_max": None, "save_predictions": True}
    # 200 epochs (LDAM-DRW's), unless the method's own protocol sets another length (PaCo's 400)
    own_length = protocol["epochs"] != SETTINGS["epochs"].default
    return cifar if own_length else {"epochs": 200, **cifar}


def quick(ds: DatasetInfo, protocol: dict) -> dict:
    # a few minutes per comparison on a 2-core CPU; head classes capped at 1000 images so the
    # tail still reaches the few-shot group (< 20 images) at IF 100. Batch 128 for every
    # method: the ~2.5k images then give 20 steps an epoch, where the hybrids' paper batch of
    # 512 would leave them 5 (60 steps in all) against CE's 20. A warm-up shrinks to one epoch
    # where the protocol has one, and stays absent where it has none (the hybrids', decoupling's).
    warmup = min(1, protocol["warmup_epochs"])
    if ds.protocol:
        # image-file datasets: 100 images a class at most, ResNet-18 at 112 px; a CPU still
        # takes hours over ImageNet-LT's 1000 classes, a GPU minutes
        return {"epochs": 12, "backbone": "resnet18", "n_max": 100, "batch_size": 128, "image_size": 112,
                "warmup_epochs": warmup, "eval_every": 6}
    return {"epochs": 12, "backbone": "resnet8_cifar", "n_max": min(ds.n_max, 1000), "batch_size": 128,
            "warmup_epochs": warmup, "eval_every": 6}


def smoke(ds: DatasetInfo, protocol: dict) -> dict:
    # seconds per run: proves the whole path works, measures nothing
    if ds.protocol:  # image-file datasets at 32 px
        return {"epochs": 2, "backbone": "resnet8_cifar", "n_max": 20, "batch_size": 64, "image_size": 32,
                "warmup_epochs": 0, "eval_every": 2}
    return {"epochs": 2, "backbone": "resnet8_cifar", "n_max": min(ds.n_max, 200), "batch_size": 64,
            "warmup_epochs": 0, "eval_every": 2}


PRESETS = {"paper": paper, "quick": quick, "smoke": smoke}


def preset_values(name: str, ds: DatasetInfo, protocol: dict) -> dict:
    """What preset `name` sets on `ds`, for a method whose full protocol is `protocol` (protocol_base)."""
    if name not in PRESETS:
        raise UserError(f"unknown preset '{name}'", hint=f"use one of: {', '.join(PRESETS)}")
    return PRESETS[name](ds, protocol)
