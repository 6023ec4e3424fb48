import numpy as np
import torch

from ltbench.data.profiles import class_counts
from ltbench.metrics import ClassCounts, group_accuracy, group_sizes


def test_counts_from_predictions_and_their_sum():
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    preds = torch.tensor([0, 1, 1, 1, 0, 2])
    counts = ClassCounts.from_predictions(preds, labels, 4)
    assert counts.correct.tolist() == [1, 2, 1, 0] and counts.total.tolist() == [2, 3, 1, 0]
    assert abs(counts.top1 - 400 / 6) < 1e-9
    both = counts + counts
    assert both.correct.tolist() == [2, 4, 2, 0] and both.top1 == counts.top1
    assert np.isnan(counts.per_class[3])


def test_empty_group_is_none_not_zero():
    counts = class_counts(10, 5000, 100)  # CIFAR-10-LT IF 100: 8 many, 2 medium, 0 few
    correct = ClassCounts(np.array([90] * 8 + [40, 60]), np.array([100] * 10))
    groups = group_accuracy(correct, counts)
    assert groups == {"many": 90.0, "medium": 50.0, "few": None}
    assert group_sizes(counts) == {"many": 8, "medium": 2, "few": 0}


def test_group_accuracy_is_the_mean_of_class_accuracies():
    counts = [500, 50, 5]
    evaluated = ClassCounts(np.array([10, 3, 1]), np.array([10, 4, 4]))
    assert group_accuracy(evaluated, counts) == {"many": 100.0, "medium": 75.0, "few": 25.0}


def test_a_group_whose_classes_have_no_test_images_is_none(recwarn):
    counts = [500, 400, 50, 5]  # the few-shot class has no test image here
    evaluated = ClassCounts(np.array([10, 5, 3, 0]), np.array([10, 10, 4, 0]))
    assert group_accuracy(evaluated, counts) == {"many": 75.0, "medium": 75.0, "few": None}
    assert not recwarn.list  # no "mean of empty slice"
