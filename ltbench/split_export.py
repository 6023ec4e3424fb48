"""`ltbench split`: a long-tailed training split as one JSON file, so that another codebase can
train on exactly the images an ltbench run trains on.

The file is one JSON object. Its header comes first: the dataset and its construction
(imbalance factor, profile, head-class size), `train_indices_into` (what the indices index),
the class counts and names, and the split fingerprint a run records (result column
`split_fingerprint`). Then one array a line: `train_indices` (positions in the source
dataset's training split, in the order the run sees the images), `train_labels`, for the
image-file datasets `train_paths` (relative to the image root), then the validation split
every choice is made on (`val_indices`, `val_labels`, and `val_paths` for the image-file
datasets; `val_indices_into` says what they index). The test set is the source's whole test
split, unchanged.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np

from ltbench import __version__, registry
from ltbench.data.profiles import check_imbalance_factor
from ltbench.errors import UserError
from ltbench.settings import SETTINGS
from ltbench.store import RunStore, atomic_write_bytes
from ltbench.sweep import imbalance_factors_of

# 2: the validation split (val_*) replaces the held-out images (holdout_*)
FORMAT = "ltbench split 2"


def split_document(dataset: str, data, imbalance_factor: float, profile: str, n_max: int | None,
                   val_per_class: int | None = None) -> dict:
    """The export of `data` (a built dataset), header first and arrays last."""
    info = registry.dataset(dataset)
    indices = getattr(data, "train_indices", None)
    if indices is None:
        raise UserError(f"{dataset} does not say which images of its source it keeps, so its split cannot be "
                        "exported", hint="a dataset plugin's build() can give its LongTailData train_indices")
    image_files = getattr(data, "root", None) is not None
    val = getattr(data, "val_indices", None)
    document = {
        "format": FORMAT,
        "dataset": dataset,
        "imbalance_factor": imbalance_factor,
        "profile": None if image_files else profile,
        "n_max": n_max if image_files else (n_max or info.n_max),
        "val_per_class": None if val is None else (val_per_class or info.val_per_class),
        "split_fingerprint": data.split_fingerprint,
        "split_fingerprint_of": "sha256 of the training, test and validation images (or image paths) and labels, "
                                "in order, first 16 hex digits (ltbench.data.datasets.split_fingerprint)",
        "ltbench_version": __version__,
        "train_indices_into": info.train_order,
        "val_indices_into": None if val is None else (info.val_order or info.train_order),
        "test_set": "the dataset's whole evaluation split, unchanged and in order",
        "num_classes": data.num_classes,
        "class_counts": [int(n) for n in data.class_counts],
        "val_class_counts": None if val is None else np.bincount(np.asarray(data.val_y, dtype=np.int64),
                                                                 minlength=data.num_classes).tolist(),
        "class_names": getattr(data, "class_names", None),
        "train_indices": np.asarray(indices).tolist(),
        "train_labels": np.asarray(data.train_y).tolist(),
    }
    if image_files:
        document["image_root"] = str(data.root)
        document["train_paths"] = [os.fsdecode(path) for path in data.train_x]
    if val is not None:
        document["val_indices"] = np.asarray(val).tolist()
        document["val_labels"] = np.asarray(data.val_y).tolist()
        if image_files:
            document["val_paths"] = [os.fsdecode(path) for path in data.val_x]
    return document


def document_bytes(document: dict) -> bytes:
    """One key a line (the arrays last, each on its own line), so `head` shows the header."""
    lines = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in document.items()]
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode()


def default_name(document: dict) -> str:
    parts = [document["dataset"], f"if{document['imbalance_factor']:g}"]
    if document["profile"] not in (None, "exp"):
        parts.append(document["profile"])
    if document["n_max"] is not None:
        parts.append(f"nmax{document['n_max']}")
    return "split_" + "_".join(parts) + ".json"


def export_split(args, console) -> int:
    """What `ltbench split` does with its parsed arguments."""
    recorded = None
    if args.run is not None:
        if args.dataset is not None or args.imbalance_factor is not None or args.profile is not None \
                or args.n_max is not None or args.val_per_class is not None:
            raise UserError("--run takes the dataset, --if, --profile, --n-max and --val-per-class from the run's "
                            "spec", hint="give either --run RUN_ID or DATASET --if N [--profile] [--n-max] "
                            "[--val-per-class]")
        from ltbench.show import find_run

        store = RunStore(args.results_dir)
        run_id = find_run(store, args.run)
        spec = store.read_spec(run_id)
        dataset, factor, profile, n_max = spec.dataset, spec.imbalance_factor, spec.profile, spec.n_max
        val_per_class = spec.params.get("val_per_class")
        row = store.read_result(run_id)
        recorded = (row or {}).get("split_fingerprint") or None
    else:
        if args.dataset is None:
            raise UserError("no dataset given", hint="e.g. ltbench split cifar10_lt --if 100, or ltbench split "
                            "--run RUN_ID for the split a run trained on")
        dataset = args.dataset
        info = registry.dataset(dataset)
        given = [] if args.imbalance_factor is None else [check_imbalance_factor(args.imbalance_factor)]
        if info.fixed_imbalance_factor is None and not given:
            raise UserError(f"--if not given for {dataset}", hint=f"e.g. ltbench split {dataset} --if 100")
        factor = imbalance_factors_of(info, given)[0]
        profile = SETTINGS["profile"].coerce("--profile", "exp" if args.profile is None else args.profile)
        n_max = SETTINGS["n_max"].coerce("--n-max", args.n_max)
        val_per_class = SETTINGS["val_per_class"].coerce("--val-per-class", args.val_per_class)
    data = registry.dataset(dataset).build(args.data_root, factor, profile, n_max, val_per_class=val_per_class)
    document = split_document(dataset, data, factor, profile, n_max, val_per_class)
    payload = document_bytes(document)
    if args.out == "-":
        sys.stdout.buffer.write(payload)
        sys.stdout.flush()
    else:
        out = Path(args.out or default_name(document))
        if out.is_dir():
            raise UserError(f"--out {out} is a folder", hint="give the file to write, e.g. --out split.json")
        atomic_write_bytes(out, payload)
        counts = document["class_counts"]
        validation = f", {len(document['val_indices'])} validation images" if "val_indices" in document else ""
        console.print(f"{out}: {len(document['train_indices'])} training images of {dataset} in "
                      f"{len(counts)} classes ({max(counts)} to {min(counts)} a class){validation}, split fingerprint "
                      f"{document['split_fingerprint']}", markup=False, highlight=False, soft_wrap=True)
    if recorded is not None and recorded != document["split_fingerprint"]:
        # on stderr: with --out - the export itself is stdout
        print(f"ltbench: warning: the run recorded split fingerprint {recorded}, the dataset's files now give "
              f"{document['split_fingerprint']}: they changed since the run, and this export is of today's files",
              file=sys.stderr)
        return 1
    return 0
