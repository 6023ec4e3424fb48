import pytest

from ltbench.data.sources import data_root, fetch_fashion_mnist


@pytest.fixture(scope="session")
def fashion_mnist():
    """The real Fashion-MNIST (`make test` fetches it first); the root it lives under."""
    root = data_root()
    fetch_fashion_mnist(root, allow_apt=False, log=lambda *_: None)
    return root


from conftest_slurm import slurm_cluster  # noqa: E402,F401  (the session's Slurm test cluster)

