import numpy as np
import pytest

from ltbench.data.profiles import check_imbalance_factor, class_counts, many_medium_few, select_long_tail
from ltbench.errors import UserError
from test_validation_split import ldam_drw_selection


@pytest.mark.parametrize(
    "classes, n_max, factor, total",
    [(10, 5000, 100, 12406), (10, 5000, 50, 13996), (10, 5000, 10, 20431),
     (100, 500, 100, 10847), (100, 500, 50, 12608), (100, 500, 10, 19573)],
)
def test_cifar_lt_sizes_match_the_papers(classes, n_max, factor, total):
    counts = class_counts(classes, n_max, factor)
    assert sum(counts) == total
    assert counts[0] == n_max and counts[-1] == int(n_max / factor)
    assert counts == sorted(counts, reverse=True)


def test_step_profile_halves():
    assert class_counts(10, 5000, 100, "step") == [5000] * 5 + [50] * 5


def test_balanced_when_if_is_one():
    assert class_counts(10, 500, 1) == [500] * 10


@pytest.mark.parametrize("bad", ["abc", 0.5, 0, -3, float("nan"), None])
def test_bad_imbalance_factor_is_refused(bad):
    with pytest.raises(UserError, match="imbalance factor"):
        check_imbalance_factor(bad)


def test_unknown_profile():
    with pytest.raises(UserError, match="profile 'linear'"):
        class_counts(10, 100, 10, "linear")


def test_selection_replays_ldam_drw():
    labels = np.repeat(np.arange(5), 40)
    np.random.RandomState(7).shuffle(labels)
    counts = class_counts(5, 40, 10)
    kept = select_long_tail(labels, counts)
    assert kept.tolist() == ldam_drw_selection(labels, counts).tolist()
    assert np.bincount(labels[kept]).tolist() == counts


def test_selection_too_few_images_is_explained():
    with pytest.raises(UserError, match="class 0 has 3 images"):
        select_long_tail(np.array([0, 0, 0, 1, 1, 1]), [5, 1])


def test_many_medium_few_conventions():
    c10 = class_counts(10, 5000, 100)
    groups = many_medium_few(c10)
    assert (groups.count("many"), groups.count("medium"), groups.count("few")) == (8, 2, 0)
    c100 = class_counts(100, 500, 100)
    cb, oltr = many_medium_few(c100, "cb"), many_medium_few(c100, "oltr")
    assert [cb.count(g) for g in ("many", "medium", "few")] == [35, 35, 30]
    assert [oltr.count(g) for g in ("many", "medium", "few")] == [35, 34, 31]
    with pytest.raises(UserError):
        many_medium_few(c100, "median")


def test_a_class_left_without_images_is_refused():
    with pytest.raises(UserError, match="leaves the tail classes no images"):
        class_counts(10, 60, 100)
