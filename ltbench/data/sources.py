"""Reading the full (balanced) datasets from disk as uint8 arrays, NCHW.

Each reader returns (train_x, train_y, test_x, test_y). CIFAR is read from the standard
`cifar-*-batches-py` pickles (torchvision only downloads them) by an unpickler that builds
numpy arrays and nothing else, so a planted file in a shared data root runs no code;
Fashion-MNIST from IDX files, plain or gzipped.
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


DEFAULT_DATA_ROOT = "~/.cache/ltbench/data"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where datasets live: `root`, else ~/.cache/ltbench/data. The command line decides
    `root` (--data-root, a sweep file's data_root, $LTBENCH_DATA); nothing here reads the
    environment."""
    return Path(root or DEFAULT_DATA_ROOT).expanduser()


# ----------------------------------------------------------------------------- CIFAR

CIFAR = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "fine_labels"),
}
# the file naming the classes, and its key: the names of class 0, 1, ... in order
CIFAR_META = {"cifar10": ("batches.meta", "label_names"), "cifar100": ("meta", "fine_label_names")}
CIFAR_ORDER = {
    "cifar10": "CIFAR-10's 50,000 training images: data_batch_1 to data_batch_5 of cifar-10-batches-py, "
    "concatenated in file order (torchvision.datasets.CIFAR10(train=True) has the same order)",
    "cifar100": "CIFAR-100's 50,000 training images: the `train` file of cifar-100-python, in file order "
    "(torchvision.datasets.CIFAR100(train=True) has the same order)",
}


def find_cifar(name: str, root: Path) -> None:
    """The batch files are there (a UserError says which are not); downloads nothing."""
    folder, train_files, test_files, _ = CIFAR[name]
    base = root / folder
    missing = [f for f in train_files + test_files if not (base / f).is_file()]
    if missing:
        raise UserError(
            f"{name} not found: {base} lacks {', '.join(missing)}",
            hint=f"run `ltbench fetch-data {name}_lt --data-root {root}` (downloads it; needs internet), or pass "
            f"--data-root with the folder that holds {folder}",
        )


def read_cifar(name: str, root: Path, download: bool = False):
    """CIFAR's arrays; only `ltbench fetch-data` downloads (`download`): a run, and its dry
    run, read what is there and write nothing."""
    folder, train_files, test_files, label_key = CIFAR[name]
    base = root / folder
    if not base.exists() and download:
        _download_cifar(name, root)
    find_cifar(name, root)

    def load(files):
        xs, ys = [], []
        for f in files:
            batch = _read_cifar_batch(base / f, label_key)
            xs.append(batch["data"].reshape(-1, 3, 32, 32))
            ys.append(batch[label_key])
        return np.concatenate(xs), np.concatenate(ys)

    return (*load(train_files), *load(test_files))


class _ArraysOnly(pickle.Unpickler):
    """CIFAR's batches are pickled dicts of numpy arrays and lists: numpy's array, scalar and
    dtype rebuilders are all they import. Anything else a file names is refused, not called."""

    def find_class(self, module, name):
        core = module.replace("numpy.core.", "numpy._core.")
        allowed = {("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
                   ("numpy._core.numeric", "_frombuffer"), ("numpy", "ndarray"), ("numpy", "dtype")}
        if (core, name) in allowed:
            import importlib
            return getattr(importlib.import_module(core), name)
        if module == "numpy.dtypes" and name.endswith("DType"):
            return getattr(np.dtypes, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never does")


def _read_cifar_pickle(path: Path) -> dict:
    """A CIFAR file's dict with str keys. The original files were pickled by Python 2, so their
    keys are bytes; a copy pickled again by Python 3 has str keys (torchvision reads both)."""
    with open(path, "rb") as fh:
        loaded = _ArraysOnly(fh, encoding="bytes").load()
    if not isinstance(loaded, dict):
        raise TypeError(f"it holds a {type(loaded).__name__}, not a dict")
    return {key.decode("latin-1") if isinstance(key, bytes) else key: value for key, value in loaded.items()}


def _read_cifar_batch(path: Path, label_key: str) -> dict:
    try:
        batch = _read_cifar_pickle(path)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise UserError(f"{path} is not a CIFAR batch file: {exc}", hint="delete it and fetch the dataset again "
                        "(ltbench fetch-data), or pass --data-root") from None
    try:
        data = np.asarray(batch["data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path} is not a CIFAR batch file (no usable {exc})") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels):
        raise UserError(f"{path}: {data.shape} image rows and {labels.shape} labels; a CIFAR batch has one row of "
                        "3072 bytes per label", hint="delete it and fetch the dataset again (ltbench fetch-data)")
    return {"data": data, label_key: labels}


def cifar_class_names(name: str, root: Path) -> list[str] | None:
    """The class names of the dataset's meta file (batches.meta, meta), or None where the
    copy lacks it: the batches alone still train."""
    file_name, key = CIFAR_META[name]
    path = root / CIFAR[name][0] / file_name
    if not path.is_file():
        return None
    try:
        names = _read_cifar_pickle(path)[key]
        # the original files were pickled by Python 2: names are bytes there, str if re-pickled
        return [item.decode() if isinstance(item, bytes) else str(item) for item in names]
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise UserError(f"{path} is not a CIFAR meta file naming the classes ({type(exc).__name__}: {exc})",
                        hint="delete it (runs then name classes by index) or fetch the dataset again "
                        "(ltbench fetch-data)") from None


def fetch_cifar(name: str, root: Path, allow_apt: bool = False, log=print) -> Path:
    """Download CIFAR with torchvision (needs internet) unless it is under root already."""
    read_cifar(name, root, download=True)  # downloads what is missing, or says what is
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


REFETCH = "delete it and run: ltbench fetch-data fashion_mnist_lt"
# the names of labels 0..9 (Xiao et al. 2017; the IDX files hold only the numbers)
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
FASHION_ORDER = "Fashion-MNIST's 60,000 training images in the order of train-images-idx3-ubyte"


def read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise UserError(f"{path} cannot be read: {exc}", hint=REFETCH) from None
    if len(data) < 4:
        raise UserError(f"{path} is {'empty' if not data else 'truncated'} ({len(data)} bytes): not an IDX file",
                        hint=REFETCH)
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08 or not 1 <= ndim <= 4:
        raise UserError(f"{path} is not a uint8 IDX file", hint=REFETCH)
    if len(data) < 4 + 4 * ndim:
        raise UserError(f"{path} is truncated ({len(data)} bytes): its header is incomplete", hint=REFETCH)
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise UserError(f"{path} is truncated or corrupt: its header says {shape}, it holds {array.size} bytes",
                        hint=REFETCH)
    return array.reshape(shape)


def fashion_raw_dir(root: Path) -> Path:
    # torchvision's layout, so torchvision.datasets.FashionMNIST(root) loads the same files
    return root / "FashionMNIST" / "raw"


def fashion_files(root: Path) -> dict[str, Path | None]:
    """Each IDX file as it is there: plain, else gzipped (`.gz`), else None."""
    raw = fashion_raw_dir(root)
    found = {}
    for key, name in FASHION_FILES.items():
        found[key] = next((p for p in (raw / name, raw / f"{name}.gz") if p.is_file()), None)
    return found


def fashion_mnist_available(root: Path) -> bool:
    return all(path is not None for path in fashion_files(root).values())


def find_fashion_mnist(root: Path) -> None:
    missing = [FASHION_FILES[key] for key, path in fashion_files(root).items() if path is None]
    if missing:
        raise UserError(
            f"Fashion-MNIST not found under {fashion_raw_dir(root)}: {', '.join(missing)} missing (plain or .gz)",
            hint="run `ltbench fetch-data fashion_mnist_lt` (as root it can install Debian's "
            "dataset-fashion-mnist), or `apt-get install dataset-fashion-mnist`",
        )


def read_fashion_mnist(root: Path):
    find_fashion_mnist(root)
    paths = fashion_files(root)
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if images.ndim != 3 or labels.ndim != 1:
            raise UserError(f"{paths[f'{split}_x'].name} / {paths[f'{split}_y'].name}: expected images (N x 28 x 28) "
                            f"and labels (N), got shapes {images.shape} and {labels.shape}",
                            hint="are image and label files mixed up? " + REFETCH.replace("delete it", "delete them"))
        if len(images) != len(labels):
            raise UserError(f"{paths[f'{split}_x'].name} holds {len(images)} images but {paths[f'{split}_y'].name} "
                            f"{len(labels)} labels: are the train and t10k files swapped, or one truncated?",
                            hint=REFETCH.replace("delete it", "delete them"))
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
