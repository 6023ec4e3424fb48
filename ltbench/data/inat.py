"""The official iNaturalist 2018 annotation files (train2018.json, val2018.json), COCO-style:
`images` [{id, file_name}], `annotations` [{image_id, category_id}], `categories` [{id}].
file_name is relative to the dataset root (`train_val2018/Plantae/7477/<hash>.jpg`); the
category id is the class, as in the classifier-balancing lists generated from these files."""

import json
from pathlib import Path

from ltbench.data.split_files import SHOWN
from ltbench.errors import UserError


# iNaturalist 2018 first published its annotation files with obfuscated category names, then
# the real ones in categories.json, to replace the files' `categories` with
CATEGORIES_FILE = "categories.json"


def read_inat_names(train_file: Path) -> dict[int, str] | None:
    """{category id: name}: from categories.json beside the annotation file where it is there,
    else from the annotation file's own `categories`; None where the annotation file's
    categories do not all have a name (they need none to train)."""
    names_file = train_file.parent / CATEGORIES_FILE
    if names_file.is_file():
        try:
            data = json.loads(names_file.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise UserError(f"{names_file} is not valid JSON: {exc}",
                            hint="replace it with iNaturalist's categories.json, or delete it") from None
        names = _names(data.get("categories") if isinstance(data, dict) else data)
        if names is None:
            raise UserError(f"{names_file} is not a list of categories with an id and a name each",
                            hint="replace it with iNaturalist's categories.json, or delete it")
        return names
    data = json.loads(train_file.read_text())  # read_inat_json has checked it
    return _names(data.get("categories"))


def _names(categories) -> dict[int, str] | None:
    if not isinstance(categories, list) or not categories:
        return None
    names = {c.get("id"): c.get("name") for c in categories if isinstance(c, dict)}
    if len(names) != len(categories) or not all(isinstance(i, int) and isinstance(n, str) and n.strip()
                                                for i, n in names.items()):
        return None
    return names


def read_inat_json(path: Path) -> tuple[list[str], list[int]]:
    """(relative paths, labels) in the order of `images`."""
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    missing = [key for key in ("images", "annotations", "categories") if not isinstance(data.get(key), list)]
    if missing:
        raise UserError(f"{path} has no {', '.join(missing)} list",
                        hint="expected the iNaturalist 2018 format: images, annotations, categories")
    try:
        file_names = {image["id"]: image["file_name"] for image in data["images"]}
        category_of = {a["image_id"]: a["category_id"] for a in data["annotations"]}
        categories = {c["id"] for c in data["categories"]}
    except (KeyError, TypeError) as exc:
        raise UserError(f"{path}: an entry lacks the field {exc}",
                        hint="images need id and file_name, annotations image_id and category_id, categories id")
    unlabelled = [name for image_id, name in file_names.items() if image_id not in category_of]
    if unlabelled:
        raise UserError(f"{path}: {len(unlabelled)} image(s) have no annotation: {', '.join(unlabelled[:SHOWN])}")
    orphans = [str(image_id) for image_id in category_of if image_id not in file_names]
    if orphans:
        raise UserError(f"{path}: {len(orphans)} annotation(s) name unknown image ids: {', '.join(orphans[:SHOWN])}")
    unknown = [f"{file_names[i]} (category {c})" for i, c in category_of.items() if c not in categories]
    if unknown:
        raise UserError(f"{path}: {len(unknown)} annotation(s) have a category id not in `categories`: "
                        f"{', '.join(unknown[:SHOWN])}")
    if not file_names:
        raise UserError(f"{path} lists no images")
    return list(file_names.values()), [int(category_of[i]) for i in file_names]
