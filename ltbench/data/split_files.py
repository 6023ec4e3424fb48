"""The split files of ImageNet-LT and Places-LT as OLTR (Liu et al., CVPR 2019) publishes them,
e.g. ImageNet_LT_train.txt: one `relative/path label` per line, the path relative to the
dataset's image root (`train/n01440764/n01440764_10026.JPEG 0`)."""

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
