"""Reading the full (balanced) datasets from disk as uint8 arrays, NCHW.

Each reader returns (train_x, train_y, test_x, test_y). CIFAR is read from the standard
`cifar-*-batches-py` pickles (torchvision only downloads them), Fashion-MNIST from IDX files.
"""

import gzip
import os
import pickle
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np

from ltbench.errors import UserError

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where datasets live: --data-root, else $LTBENCH_DATA, else ~/.cache/ltbench/data."""
    if root:
        return Path(root).expanduser()
    return Path(os.environ.get("LTBENCH_DATA", "~/.cache/ltbench/data")).expanduser()


# ----------------------------------------------------------------------------- CIFAR

CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}


def read_cifar(name: str, root: Path, download: bool = True):
    folder, train_files, test_files, label_key = CIFAR[name]
    base = root / folder
    if not base.exists() and download:
        _download_cifar(name, root)
    missing = [f for f in train_files + test_files if not (base / f).exists()]
    if missing:
        raise UserError(
            f"{name} not found: {base} lacks {', '.join(missing)}",
            hint=f"download it with torchvision (needs internet): python -c \"import torchvision; "
            f"torchvision.datasets.{name.upper()}('{root}', download=True)\", or pass --data-root",
        )

    def load(files):
        xs, ys = [], []
        for f in files:
            with open(base / f, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[label_key], dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    return (*load(train_files), *load(test_files))


def fetch_cifar(name: str, root: Path, allow_apt: bool = False, log=print) -> Path:
    """Download CIFAR with torchvision (needs internet) unless it is under root already."""
    read_cifar(name, root)  # downloads what is missing, or says what is
    log(f"{name} found in {root / CIFAR[name][0]}")
    return root / CIFAR[name][0]


def _download_cifar(name: str, root: Path) -> None:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        cls(str(root), train=True, download=True)
    except Exception as exc:  # no network, bad mirror: the caller reports what is missing
        print(f"torchvision could not download {name}: {exc}")


# ----------------------------------------------------------------------------- Fashion-MNIST


def read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    _, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if dtype_code != 0x08:
        raise UserError(f"{path} is not a uint8 IDX file", hint="re-fetch it: ltbench fetch-data fashion_mnist_lt")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise UserError(f"{path} is truncated or corrupt", hint="delete it and run: ltbench fetch-data fashion_mnist_lt")
    return array.reshape(shape)


def fashion_raw_dir(root: Path) -> Path:
    # torchvision's layout, so torchvision.datasets.FashionMNIST(root) loads the same files
    return root / "FashionMNIST" / "raw"


def fashion_mnist_available(root: Path) -> bool:
    raw = fashion_raw_dir(root)
    return all((raw / f).exists() for f in FASHION_FILES.values())


def read_fashion_mnist(root: Path):
    if not fashion_mnist_available(root):
        raise UserError(
            f"Fashion-MNIST not found under {fashion_raw_dir(root)}",
            hint="run `ltbench fetch-data fashion_mnist_lt` (as root it can install Debian's "
            "dataset-fashion-mnist), or `apt-get install dataset-fashion-mnist`",
        )
    raw = fashion_raw_dir(root)
    arrays = {key: read_idx(raw / f) for key, f in FASHION_FILES.items()}
    return (
        arrays["train_x"][:, None],
        arrays["train_y"].astype(np.int64),
        arrays["test_x"][:, None],
        arrays["test_y"].astype(np.int64),
    )


def fetch_fashion_mnist(root: Path, allow_apt: bool = False, log=print) -> Path:
    """Make Fashion-MNIST available under root: data cache, then Debian's files, then
    torchvision's download, then (root with apt only) Debian's package."""
    raw = fashion_raw_dir(root)
    if fashion_mnist_available(root):
        log(f"Fashion-MNIST found in {raw}")
        return raw
    if _copy_from_debian(raw):
        log(f"Fashion-MNIST copied from {DEBIAN_FASHION_MNIST} to {raw}")
        return raw
    if _torchvision_download(root):
        log(f"Fashion-MNIST downloaded by torchvision to {raw}")
        return raw
    if allow_apt and os.geteuid() == 0 and shutil.which("apt-get"):
        log("installing Debian's dataset-fashion-mnist ...")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        done = subprocess.run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], env=env)
        if done.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env)
            subprocess.run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"], env=env)
        if _copy_from_debian(raw):
            log(f"Fashion-MNIST installed and copied to {raw}")
            return raw
    raise UserError(
        "Fashion-MNIST is not available and could not be fetched",
        hint="install Debian's package (`sudo apt-get install dataset-fashion-mnist`), or put the four "
        f"IDX files ({', '.join(FASHION_FILES.values())}, optionally .gz) in {raw}",
    )


def _copy_from_debian(raw: Path) -> bool:
    sources = {f: DEBIAN_FASHION_MNIST / f"{f}.gz" for f in FASHION_FILES.values()}
    if not all(p.exists() for p in sources.values()):
        return False
    raw.mkdir(parents=True, exist_ok=True)
    # Debian's gzip bytes differ from upstream (torchvision's md5 check fails on them), so
    # store the decompressed IDX files, which are the standard ones.
    for name, src in sources.items():
        tmp = raw / f".{name}.tmp"
        with gzip.open(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        os.replace(tmp, raw / name)
    return True


def _torchvision_download(root: Path) -> bool:
    try:
        import torchvision

        torchvision.datasets.FashionMNIST(str(root), train=True, download=True)
        torchvision.datasets.FashionMNIST(str(root), train=False, download=True)
    except Exception:
        return False
    return fashion_mnist_available(root)
