import os

import pytest

from ltbench.data.sources import data_root, fetch_fashion_mnist


@pytest.fixture(scope="session")
def fashion_mnist():
    """The real Fashion-MNIST (`make test` fetches it first); the root it lives under."""
    root = data_root()
    fetch_fashion_mnist(root, allow_apt=False, log=lambda *_: None)
    return root


from conftest_slurm import slurm_cluster  # noqa: E402,F401  (the session's Slurm test cluster)


@pytest.fixture(autouse=True)
def keep_data_root():
    """`ltbench run --data-root` exports LTBENCH_DATA for its child processes; a test that
    passes one must not move the data of the tests after it."""
    before = os.environ.get("LTBENCH_DATA")
    yield
    if before is None:
        os.environ.pop("LTBENCH_DATA", None)
    else:
        os.environ["LTBENCH_DATA"] = before
