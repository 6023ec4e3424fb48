"""The split files of ImageNet-LT and Places-LT as OLTR (Liu et al., CVPR 2019) publishes them,
e.g. ImageNet_LT_train.txt: one `relative/path label` per line, the path relative to the
dataset's image root (`train/n01440764/n01440764_10026.JPEG 0`)."""

import os
from pathlib import Path

from ltbench.errors import UserError

SHOWN = 5  # offenders listed in an error message


def read_split_file(path: Path) -> tuple[list[str], list[int]]:
    """(relative paths, labels) in file order."""
    paths, labels, bad = [], [], []
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not a text split file ({exc.reason})") from None
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text:
            continue
        # split on the last blank: OLTR's loader splits on blanks, and a label is never blank
        parts = text.rsplit(None, 1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            bad.append(f"line {number}: {text!r}")
            continue
        relative, label = parts
        labels.append(int(label))
        # a leading slash would make the path absolute; it is always under the image root
        paths.append(relative.lstrip("/"))
    if bad:
        raise UserError(f"{path}: {len(bad)} line(s) are not `relative/path label`: {'; '.join(bad[:SHOWN])}"
                        + (" ..." if len(bad) > SHOWN else ""),
                        hint="each line names one image, relative to the image root, and its integer class")
    if not paths:
        raise UserError(f"{path} lists no images")
    return paths, labels


# ImageNet's WordNet ids as words, where one of these lies beside the split file
# (`n01440764 tench, Tinca tinca` a line); the first name of each line is kept
SYNSET_FILES = ("LOC_synset_mapping.txt", "synset_words.txt")


def folder_class_names(train_file: Path) -> dict[int, str] | None:
    """{class id: name} from the folders of the training images, where each class's images
    lie in one folder of their own, as in OLTR's lists: `train/n01440764/...` (ImageNet-LT,
    named by WordNet id, or by word with a synset file), `data_256/a/abbey/...` (Places-LT).
    A class is named by its folder below the folders all classes share, less a one-letter
    index folder (Places' `a/`). None where the folders do not name the classes one to one."""
    paths, labels = read_split_file(train_file)
    folders: dict[int, set[str]] = {}
    for path, label in zip(paths, labels):
        folders.setdefault(label, set()).add(path.rpartition("/")[0])
    if any(len(f) != 1 for f in folders.values()):
        return None
    folder = {label: f.pop().split("/") for label, f in folders.items()}
    if len({"/".join(parts) for parts in folder.values()}) != len(folder):
        return None  # two classes in one folder
    shared = len(os.path.commonprefix(list(folder.values())))  # folders every class's path starts with
    names = {label: parts[min(shared, len(parts) - 1):] for label, parts in folder.items()}
    if all(len(parts) > 1 and len(parts[0]) == 1 for parts in names.values()):
        names = {label: parts[1:] for label, parts in names.items()}
    words = _synset_words(train_file.parent)
    return {label: words.get("/".join(parts), "/".join(parts)) for label, parts in names.items()}


def _synset_words(folder: Path) -> dict[str, str]:
    for name in SYNSET_FILES:
        path = folder / name
        if path.is_file():
            words = {}
            for line in path.read_text(errors="replace").splitlines():
                wnid, _, text = line.strip().partition(" ")
                if wnid and text:
                    words[wnid] = text.split(",")[0].strip()
            return words
    return {}
