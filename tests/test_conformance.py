"""Every registered method passes ltbench.testing's checks: a new method file is tested
without editing a list."""

from ltbench.testing import parametrize_with_checks


@parametrize_with_checks()
def test_method_conformance(method, check):
    check(method)
