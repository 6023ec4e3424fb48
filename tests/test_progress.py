"""The estimate of a run's time left counts the test evaluations still to come."""

import pytest

from ltbench.progress import remaining_seconds


def test_the_time_left_counts_the_evaluations_to_come():
    # 12 epochs, a test evaluation every 6th: epochs take 1 s, an evaluated one 3 s
    plain = [1.0] * 6
    evaluated = {6: 3.0}
    # after epoch 7: five epochs left and one evaluation (the last epoch's)
    assert remaining_seconds(7, 12, plain, evaluated) == (pytest.approx(7.0), True)
    # after epoch 6 of 20 (every 6th, and the last): 14 epochs, evaluations at 12, 18 and 20
    assert remaining_seconds(6, 20, plain[:5], evaluated) == (pytest.approx(14 + 3 * 2.0), True)
    assert remaining_seconds(12, 12, plain, {6: 3.0, 12: 3.0}) == (0.0, True)


def test_before_any_evaluation_the_time_left_says_it_is_training_only():
    assert remaining_seconds(1, 12, [1.5], {}) == (pytest.approx(16.5), False)
