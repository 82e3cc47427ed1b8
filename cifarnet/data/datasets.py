"""The CIFAR datasets: specs, finding, downloading, verifying and unpickling their files into uint8
tensors.

The whole dataset lives in memory as uint8 tensors (CIFAR-100: 60,000 x 3 x 32 x 32 = 184 MB) and
is moved once to the training device.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import stat
import tarfile
import tempfile
import warnings
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from cifarnet.errors import CifarnetWarning, DataError, unknown_name


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    folder: str  # the extracted folder name of the official archive
    archive: str
    url: str
    md5: str  # of the official archive; a download is refused unless it matches
    # (name, md5) of each official file inside the archive: a local copy that differs is used
    # (its structure is validated) with a warning that its figures are not the official data's
    file_md5: tuple[tuple[str, str], ...]
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    train_count: int
    test_count: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    coarse_label_key: str | None = None
    coarse_names_key: str | None = None

    @property
    def max_file_bytes(self) -> int:
        """The largest file of the dataset read into memory: twice every image of the dataset
        (3,072 bytes each) plus 64 MiB for labels and names. The official files are at most 155 MB;
        a file or archive member larger than this is refused from its size alone, unread (a small
        .tar.gz can expand to gigabytes)."""
        return 2 * (self.train_count + self.test_count) * 3 * 32 * 32 + 64 * 2**20


SPECS = {
    "cifar100": DatasetSpec(
        name="cifar100",
        title="CIFAR-100",
        folder="cifar-100-python",
        archive="cifar-100-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        file_md5=(
            ("train", "16019d7e3df5f24257cddd939b257f8d"),
            ("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
            ("meta", "7973b15100ade9c7d40fb424638fde48"),
        ),
        train_files=("train",),
        test_files=("test",),
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        num_classes=100,
        train_count=50_000,
        test_count=10_000,
        mean=(0.507, 0.487, 0.441),
        std=(0.267, 0.256, 0.276),
        coarse_label_key="coarse_labels",
        coarse_names_key="coarse_label_names",
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        archive="cifar-10-python.tar.gz",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        file_md5=(
            ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
            ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
            ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
            ("data_batch_4", "634d18415352ddfa80567beed471001a"),
            ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
            ("test_batch", "40351d587109b95175f43aff81a1287e"),
            ("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
        ),
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
        num_classes=10,
        train_count=50_000,
        test_count=10_000,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
}


@dataclass
class CifarData:
    """A loaded dataset. Images are uint8 (N, 3, 32, 32); labels int64 (N,)."""

    spec: DatasetSpec
    source: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    superclasses: list[str] | None
    fine_to_coarse: list[int] | None

    def info(self) -> dict[str, Any]:
        """What travels inside every checkpoint and export."""
        return data_info(
            self.spec.name,
            self.classes,
            self.superclasses,
            self.fine_to_coarse,
            train_fingerprint(self.train_images, self.train_labels),
        )


def train_fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """A short digest of a training split as loaded (every label, every 50th image): it tells
    `evaluate --split val|train` whether the copy at hand is the one a run was split from (the
    split is by position, so a copy in another order would put training images in "val")."""
    digest = hashlib.sha256(labels.cpu().to(torch.int64).numpy().tobytes())
    digest.update(images[::50].cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def data_info(
    dataset: str,
    classes: list[str],
    superclasses: list[str] | None,
    fine_to_coarse: list[int] | None,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """The data description every checkpoint and export carries: names, mean and std."""
    spec = SPECS[dataset]
    return {
        "train_fingerprint": fingerprint,
        "dataset": dataset,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "classes": list(classes),
        "superclasses": list(superclasses) if superclasses else None,
        "fine_to_coarse": list(fine_to_coarse) if fine_to_coarse else None,
        "image_size": 32,
    }


def get_spec(dataset: str) -> DatasetSpec:
    """The spec of "cifar100" or "cifar10"; another name raises ConfigError."""
    if dataset not in SPECS:
        raise unknown_name("dataset", dataset, tuple(SPECS))
    return SPECS[dataset]


def default_data_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    """--data-dir, else $CIFARNET_DATA, else the per-user cache folder."""
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    if os.environ.get("CIFARNET_DATA"):
        return [Path(os.environ["CIFARNET_DATA"]).expanduser()]
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return [Path(cache) / "cifarnet"]


def locate(spec: DatasetSpec, data_dir: str | os.PathLike | None) -> Path | None:
    """The extracted folder or archive of `spec` in the search folder, or None."""
    for root in default_data_dirs(data_dir):
        candidates = [root / spec.folder, root, root / spec.archive]
        for path in candidates:
            if path.is_dir() and (path / spec.meta_file).is_file():
                return path
            if path.is_file() and path.name == spec.archive:
                return path
    return None


def load_dataset(
    dataset: str = "cifar100",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    searched_too: str | None = None,
) -> CifarData:
    """Load a CIFAR dataset from a local copy, downloading it (verified) only when absent.
    `searched_too`: a folder the caller already looked in, named when nothing is found."""
    spec = get_spec(dataset)
    source = locate(spec, data_dir)
    if source is None:
        root = default_data_dirs(data_dir)[0]
        if root.is_file():
            raise DataError(
                f"{root} is a file, not a folder or {spec.archive}: point --data-dir / "
                f"$CIFARNET_DATA at the folder holding {spec.archive} or {spec.folder}/, or at "
                "the archive itself"
            )
        if not download:
            raise DataError(_missing_message(spec, root, "downloads are off", searched_too))
        source = _download(spec, root, searched_too)
    files, digests = _read_files(spec, source)
    try:
        return _build(spec, source, files, digests)
    except (TypeError, ValueError, IndexError) as exc:  # a well-formed pickle of odd contents
        raise DataError(
            f"{source}: its label or name lists are malformed ({type(exc).__name__}: {exc}); "
            "it is not an intact CIFAR copy"
        ) from None


def _missing_message(spec: DatasetSpec, root: Path, why: str, searched_too: str | None) -> str:
    also = f" (nor in {searched_too})" if searched_too else ""
    return (
        f"{spec.title} not found in {root}{also} ({why}): put {spec.archive} or its extracted "
        f"{spec.folder}/ folder there, or point --data-dir / $CIFARNET_DATA at the folder "
        f"holding it (download: {spec.url})"
    )


def _download(spec: DatasetSpec, root: Path, searched_too: str | None = None) -> Path:
    """Download to a temporary name, verify the md5, then rename: a broken-off download is never
    taken for a complete archive."""
    from torchvision.datasets.utils import check_integrity, download_url

    made = [p for p in (root, *root.parents) if not p.exists()]  # to remove if it fails
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
            download_url(spec.url, tmp, filename=spec.archive, md5=None)
            part = Path(tmp) / spec.archive
            if not check_integrity(str(part), spec.md5):
                raise DataError(f"downloaded {spec.archive} failed its md5 check; try again")
            final = root / spec.archive
            os.replace(part, final)
            return final
    except DataError:
        _remove_empty(made)
        raise
    except Exception as exc:  # network errors come in many types (URLError, OSError, HTTPError)
        _remove_empty(made)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            _missing_message(spec, root, f"download failed: {reason}", searched_too)
        ) from None


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders a failed download created (deepest first), as long as empty."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


class _ArrayUnpickler(pickle.Unpickler):
    """The CIFAR pickles hold only dicts, lists, strings and numpy arrays: refuse anything else,
    so a tampered dataset file cannot run code."""

    _ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # protocol-2 pickles written by Python 3 store bytes this way
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise _ForeignObject(module, name)


class _ForeignObject(pickle.UnpicklingError):
    """A pickle names a class or function that CIFAR files never hold; it was not called."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"unexpected object {module}.{name}")
        self.module, self.name = module, name

    def what(self) -> str:
        """The object in the user's terms: Python 2's and 3's bytes are just "bytes"."""
        if self.name in ("bytes", "bytearray") and self.module in ("__builtin__", "builtins"):
            return "a bytes string"
        return f"an unexpected object ({self.module}.{self.name})"


def _unpickle(raw: bytes, label: str) -> dict[str, Any]:
    try:
        obj = _ArrayUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except _ForeignObject as exc:
        raise DataError(
            f"{label} is not a CIFAR data file: it holds {exc.what()} where CIFAR files hold a "
            "dict of images and labels (refused without running it); re-download it"
        ) from None
    except Exception as exc:
        raise DataError(f"{label} is not a readable CIFAR pickle ({exc}); re-download it") from None
    if not isinstance(obj, dict):
        raise DataError(
            f"{label} does not hold a CIFAR dict (it holds a {type(obj).__name__}); re-download it"
        )
    return obj


def _read_files(
    spec: DatasetSpec, source: Path
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Every file of the dataset, unpickled, and the md5 of its bytes, each keyed by its name
    inside the folder."""
    out: dict[str, dict[str, Any]] = {}
    pending: dict[str, Future[str]] = {}
    # hashing releases the GIL, so it runs beside the reading and unpickling: CIFAR-100's
    # 186 MB take about 0.4 s of one core
    with ThreadPoolExecutor(max_workers=1) as pool:
        for name, raw, label in _raw_files(spec, source):
            pending[name] = pool.submit(_md5, raw)
            out[name] = _unpickle(raw, label)
        return out, {name: digest.result() for name, digest in pending.items()}


def _raw_files(spec: DatasetSpec, source: Path) -> Iterator[tuple[str, bytes, str]]:
    """(name inside the folder, bytes, label for messages) of every file of the dataset."""
    names = (*spec.train_files, *spec.test_files, spec.meta_file)
    if source.is_dir():
        for name in names:
            yield name, _read_file(spec, source / name), str(source / name)
        return
    found = set()
    try:
        with tarfile.open(source, "r:gz") as tar:
            for member in tar:
                base = Path(member.name).name
                _check_size(spec, member.size, f"{source}:{member.name}")
                if (
                    member.isfile()
                    and base in names
                    and Path(member.name).parent.name == spec.folder
                ):
                    extracted = tar.extractfile(member)
                    assert extracted is not None  # isfile() members always extract
                    found.add(base)
                    yield base, extracted.read(), f"{source}:{member.name}"
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{source} is truncated or corrupt ({exc}); replace it") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise DataError(f"{source} lacks {', '.join(missing)}; it is not a complete {spec.archive}")


def _read_file(spec: DatasetSpec, path: Path) -> bytes:
    """A dataset file's bytes, refused unread when it is not a regular file (a FIFO or a device
    would block or never end) or larger than the dataset can be."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise DataError(f"{path} is not a regular file; the {spec.folder}/ folder is damaged")
        _check_size(spec, info.st_size, str(path))
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path} is missing; the {spec.folder}/ folder is incomplete") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


def _check_size(spec: DatasetSpec, size: int, label: str) -> None:
    if size > spec.max_file_bytes:
        raise DataError(
            f"{label} is {size / 2**20:,.0f} MiB, far larger than any {spec.title} file "
            f"(at most {spec.max_file_bytes / 2**20:,.0f} MiB); refused unread: replace it"
        )


def _md5(raw: bytes) -> str:
    return hashlib.md5(raw, usedforsecurity=False).hexdigest()  # a fingerprint, not security


def _labels(
    d: dict[str, Any], key: str, count: int, num_classes: int, label: str, title: str
) -> np.ndarray:
    if key not in d:
        raise DataError(f"{label} has no {key!r} entry; it is not a {title} file")
    labels = np.asarray(d[key])
    if labels.shape != (count,):
        raise DataError(f"{label}: {len(labels)} {key} for {count} images")
    if labels.dtype.kind not in "iu":
        raise DataError(
            f"{label}: {key} are {labels.dtype} values, not class numbers 0..{num_classes - 1}"
        )
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(f"{label}: {key} outside 0..{num_classes - 1}")
    return labels.astype(np.int64)


def _split_arrays(
    spec: DatasetSpec, files: dict[str, dict[str, Any]], names: tuple[str, ...], source: Path
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    images, fine, coarse = [], [], []
    for name in names:
        d, label = files[name], f"{source}/{name}" if source.is_dir() else f"{source}:{name}"
        data = d.get("data")
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
            raise DataError(f"{label}: 'data' is not a uint8 N x 3072 array; the file is damaged")
        if data.shape[1] != 3 * 32 * 32 or data.shape[0] == 0:
            raise DataError(f"{label}: images have shape {data.shape}, expected N x 3072")
        images.append(data.reshape(-1, 3, 32, 32))
        fine.append(_labels(d, spec.label_key, len(data), spec.num_classes, label, spec.title))
        if spec.coarse_label_key:
            coarse.append(_labels(d, spec.coarse_label_key, len(data), 20, label, spec.title))
    return (
        np.concatenate(images),
        np.concatenate(fine),
        np.concatenate(coarse) if coarse else None,
    )


def _build(
    spec: DatasetSpec, source: Path, files: dict[str, dict[str, Any]], digests: dict[str, str]
) -> CifarData:
    train_x, train_y, train_c = _split_arrays(spec, files, spec.train_files, source)
    test_x, test_y, _ = _split_arrays(spec, files, spec.test_files, source)
    if (len(train_x), len(test_x)) != (spec.train_count, spec.test_count):
        # a subset or a re-packed copy is still usable data, but not the benchmark's figures
        warnings.warn(
            f"{source} holds {len(train_x):,} training and {len(test_x):,} test images, not the "
            f"official {spec.train_count:,} and {spec.test_count:,}; using them as they are",
            CifarnetWarning,
            stacklevel=3,
        )
    elif differing := [name for name, md5 in spec.file_md5 if digests.get(name) != md5]:
        # e.g. the same images re-encoded: valid data, but accuracy figures from it are not
        # figures on the official files
        warnings.warn(
            f"{source}: {', '.join(differing)} differ from the official {spec.title} files "
            "(md5); their structure is valid, so they are used as they are",
            CifarnetWarning,
            stacklevel=3,
        )
    meta = files[spec.meta_file]
    classes = list(meta.get(spec.names_key, []))
    if len(classes) != spec.num_classes:
        raise DataError(
            f"{source}: meta lists {len(classes)} class names, expected {spec.num_classes}"
        )
    superclasses, fine_to_coarse = None, None
    if spec.coarse_names_key:
        superclasses = list(meta.get(spec.coarse_names_key, []))
        if len(superclasses) != 20:
            raise DataError(
                f"{source}: meta lists {len(superclasses)} superclass names, expected 20"
            )
        mapping = np.full(spec.num_classes, -1)
        mapping[train_y] = train_c
        if (mapping < 0).any():
            raise DataError(f"{source}: some classes have no training image")
        fine_to_coarse = mapping.tolist()
    return CifarData(
        spec=spec,
        source=str(source),
        train_images=torch.from_numpy(np.ascontiguousarray(train_x)),
        train_labels=torch.from_numpy(train_y),
        test_images=torch.from_numpy(np.ascontiguousarray(test_x)),
        test_labels=torch.from_numpy(test_y),
        classes=classes,
        superclasses=superclasses,
        fine_to_coarse=fine_to_coarse,
    )
