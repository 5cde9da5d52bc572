"""Fashion-MNIST through torchvision's ``FashionMNIST``, from local files first.

Where the four original ``.gz`` files are looked for, in order:
  1. ``$L335Q_DATA`` (the .gz files directly, or torchvision's layout ``FashionMNIST/raw/``);
  2. ``/usr/share/datasets/fashion-mnist/`` (Debian package ``dataset-fashion-mnist``);
  3. torchvision's download (needs the network), into the per-user data directory.
torchvision wants ``root/FashionMNIST/raw/`` with the files un-gzipped: files found in 1 or 2 are extracted into a
cache under the per-user data directory (the sources are never written to), which torchvision then reads.

``load(device, train_subset)`` returns the images as float tensors in [0, 1] (like ``ToTensor``), N x 1 x 28 x 28,
already on the device, with int64 labels. ``train_subset=N`` keeps the FIRST N training images (the original file
order, which is already class-mixed). Tensors are cached in-process per device.
"""
from __future__ import annotations

import gzip
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import UserError
from ..config import data_home

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

log = logging.getLogger("l335q.data")


@dataclass
class FashionMNIST:
    x_train: torch.Tensor      # N x 1 x 28 x 28 float32 in [0, 1], on the device
    y_train: torch.Tensor      # N int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    source: str                # where the files came from
    classes: tuple[str, ...] = CLASSES

    @property
    def device(self) -> torch.device:
        return self.x_train.device


def _sources() -> list[Path]:
    dirs = []
    env = os.environ.get("L335Q_DATA")
    if env:
        dirs += [Path(env), Path(env) / "FashionMNIST" / "raw"]
    dirs.append(DEBIAN_DIR)
    return dirs


def _extract_into_cache(src: Path) -> Path:
    """A torchvision root whose FashionMNIST/raw/ holds the four files of ``src``, un-gzipped."""
    root = data_home() / "fashion-mnist"
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        target = raw / name.removesuffix(".gz")
        if not target.is_file() or target.stat().st_mtime < (src / name).stat().st_mtime:
            # a private temporary name, then an atomic rename: workers extracting at once never collide
            with gzip.open(src / name) as fin, \
                    tempfile.NamedTemporaryFile(dir=raw, prefix=target.name, suffix=".part", delete=False) as fout:
                shutil.copyfileobj(fin, fout)
            Path(fout.name).replace(target)
    return root


def _read(root: Path, download: bool):
    from torchvision.datasets import FashionMNIST as TV

    train = TV(str(root), train=True, download=download)
    test = TV(str(root), train=False, download=download)
    return train.data, train.targets, test.data, test.targets


_RAW: dict = {}      # "raw" -> (uint8 tensors on the CPU, source)
_ON_DEVICE: dict = {}  # device -> float tensors


def load_raw() -> tuple[tuple[torch.Tensor, ...], str]:
    """(train images uint8 N x 28 x 28, train labels, test images, test labels), source description."""
    if "raw" in _RAW:
        return _RAW["raw"]
    tried = []
    for d in _sources():
        if all((d / f).is_file() for f in FILES):
            try:
                tensors = _read(_extract_into_cache(d), download=False)
                _RAW["raw"] = (tensors, str(d))
                return _RAW["raw"]
            except Exception as exc:   # corrupt or wrong files: say which and go on
                log.warning("Fashion-MNIST files in %s unusable: %s", d, exc)
        tried.append(str(d))
    root = data_home() / "fashion-mnist-download"
    try:
        tensors = _read(root, download=True)
    except Exception as exc:
        raise UserError("Fashion-MNIST not found: looked in $L335Q_DATA"
                        f"{' (' + os.environ['L335Q_DATA'] + ')' if os.environ.get('L335Q_DATA') else ' (unset)'}, "
                        f"{DEBIAN_DIR} (apt-get install dataset-fashion-mnist), and torchvision's download into "
                        f"{root} failed ({type(exc).__name__})") from None
    _RAW["raw"] = (tensors, f"torchvision download into {root}")
    return _RAW["raw"]


def load(device: str | torch.device = "cpu", train_subset: int | None = None) -> FashionMNIST:
    """Fashion-MNIST on ``device`` as floats in [0, 1]; ``train_subset`` keeps the first N training images."""
    device = torch.device(device)
    key = str(device)
    if key not in _ON_DEVICE:
        (xtr, ytr, xte, yte), source = load_raw()
        to = lambda x: (x.to(device).unsqueeze(1).float() / 255.0)   # noqa: E731
        _ON_DEVICE[key] = (to(xtr), ytr.to(device), to(xte), yte.to(device), source)
    xtr, ytr, xte, yte, source = _ON_DEVICE[key]
    if train_subset is not None:
        if not 1 <= train_subset <= len(xtr):
            raise UserError(f"train_subset must be between 1 and {len(xtr)}, got {train_subset}")
        xtr, ytr = xtr[:train_subset], ytr[:train_subset]
    return FashionMNIST(xtr, ytr, xte, yte, source)
