"""How many training images each class keeps: the long-tail profiles of LDAM-DRW (Cao et al. 2019)."""

import numpy as np

from ltbench.errors import UserError

PROFILES = ("exp", "step")


def class_counts(num_classes: int, n_max: int, imbalance_factor: float, profile: str = "exp") -> list[int]:
    """Images kept per class, class 0 the head.

    exp:  n_i = int(n_max * (1/IF) ** (i / (C - 1)))   (LDAM-DRW's `get_img_num_per_cls`)
    step: the first half of the classes keep n_max, the rest int(n_max / IF) (Buda et al. 2018).
    """
    check_imbalance_factor(imbalance_factor)
    if profile == "exp":
        steps = max(num_classes - 1, 1)
        counts = [int(n_max * (1.0 / imbalance_factor) ** (i / steps)) for i in range(num_classes)]
    elif profile == "step":
        half = num_classes // 2
        counts = [n_max] * half + [int(n_max / imbalance_factor)] * (num_classes - half)
    else:
        raise UserError(f"unknown long-tail profile '{profile}'", hint=f"use one of: {', '.join(PROFILES)}")
    if min(counts) < 1:
        raise UserError(
            f"imbalance factor {imbalance_factor:g} with n_max {n_max} leaves the tail classes no images",
            hint=f"use an imbalance factor of at most {n_max} or a larger --n-max",
        )
    return counts


def check_imbalance_factor(value) -> float:
    try:
        factor = float(value)
    except (TypeError, ValueError):
        raise UserError(
            f"imbalance factor '{value}' is not a number",
            hint="give numbers >= 1, e.g. --if 10,50,100 (IF = n_max / n_min; 1 is balanced)",
        ) from None
    if not np.isfinite(factor) or factor < 1:
        raise UserError(
            f"imbalance factor {value} is {'below 1' if factor < 1 else 'not a finite number'}",
            hint="IF = n_max / n_min, so it is at least 1 (1 is balanced); e.g. --if 10,50,100",
        )
    return factor


def class_permutations(labels: np.ndarray, num_classes: int, seed: int = 0) -> list[np.ndarray]:
    """Each class's indices in the order LDAM-DRW shuffles them: numpy's global RNG seeded
    with 0 once, then each class's indices shuffled in class order (a RandomState replays the
    same sequence without touching global state). A shuffle draws according to the class's
    size only, so the permutations are the same at every imbalance factor, profile and n_max."""
    rng = np.random.RandomState(seed)
    labels = np.asarray(labels)
    # each class's indices in ascending order, as np.where gives them, in one sort rather
    # than one pass over the labels per class (iNaturalist: 8142 classes, 437k labels)
    order = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels[(labels >= 0) & (labels < num_classes)], minlength=num_classes)[:num_classes]
    start = np.searchsorted(labels[order], 0)
    permutations = []
    for size in sizes:
        idx = order[start:start + size].copy()
        start += size
        rng.shuffle(idx)
        permutations.append(idx)
    return permutations


def select_long_tail(labels: np.ndarray, counts: list[int], seed: int = 0) -> np.ndarray:
    """Indices of the kept images, exactly as LDAM-DRW picks them: the first n_i of each
    class's permutation (class_permutations)."""
    kept = []
    for cls, (idx, n) in enumerate(zip(class_permutations(labels, len(counts), seed), counts)):
        if len(idx) < n:
            raise UserError(
                f"class {cls} has {len(idx)} images but the profile asks for {n}",
                hint="lower --n-max to at most the smallest class size of the full dataset",
            )
        kept.append(idx[:n])
    return np.concatenate(kept)


def left_out_validation(labels: np.ndarray, counts: list[int], per_class: int, seed: int = 0) -> np.ndarray:
    """A validation split among the images the long-tailed construction leaves out: the last
    `per_class` of each class's permutation, where the class keeps fewer than all its images.
    The first n_i are the training images, so the two never meet; and as the permutations do
    not depend on the construction, a class gives the same validation images at every
    imbalance factor where it leaves that many out. A class kept whole (the head class at
    the paper's n_max) has none to give."""
    chosen = [idx[max(n, len(idx) - per_class):]
              for idx, n in zip(class_permutations(labels, len(counts), seed), counts)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def carved_validation(labels: np.ndarray, num_classes: int, per_class: int, keep_at_least: int,
                      seed: int = 0) -> np.ndarray:
    """A validation split carved from a published training split that leaves nothing out
    (iNaturalist 2018): the last `per_class` of each class's permutation (class_permutations),
    from the classes that keep at least `keep_at_least` training images after giving them;
    the smaller classes give none and keep every image."""
    chosen = [idx[len(idx) - per_class:] for idx in class_permutations(labels, num_classes, seed)
              if len(idx) - per_class >= keep_at_least]
    return np.sort(np.concatenate([np.zeros(0, dtype=np.int64), *chosen])).astype(np.int64)


SHOT_RULES = ("cb", "oltr", "terciles")


def many_medium_few(counts, convention: str = "cb") -> list[str]:
    """Group of each class by its training count (`counts` in class order).

    cb   (classifier-balancing `shot_acc`, the default): many n > 100, few n < 20.
    oltr (OLTR's code): many n >= 100, few n <= 20.
    terciles: classes sorted by count, most first (equal counts by class index), split into
         three near-equal parts, the larger parts first (numpy.array_split): 10 classes give
         4 many, 3 medium, 3 few. Unlike fixed thresholds, no group is empty from 3 classes
         up, whatever the imbalance factor (CIFAR-10-LT at IF 100 has no class under 20).
    """
    if convention == "cb":
        return ["many" if n > 100 else "few" if n < 20 else "medium" for n in counts]
    if convention == "oltr":
        return ["many" if n >= 100 else "few" if n <= 20 else "medium" for n in counts]
    if convention == "terciles":
        # a stable sort on -count keeps equal counts in class-index order
        order = np.argsort(-np.asarray(counts, dtype=float), kind="stable")
        groups = [""] * len(order)
        for group, members in zip(("many", "medium", "few"), np.array_split(order, 3)):
            for cls in members:
                groups[cls] = group
        return groups
    raise UserError(f"unknown many/medium/few rule '{convention}'", hint=f"use one of: {', '.join(SHOT_RULES)}")
