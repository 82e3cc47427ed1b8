"""Dataset files made to hurt: foreign pickles, odd label types, members and files far larger
than any CIFAR file, and files that are not regular files. Each is refused in one line, before
its bytes are read."""

from __future__ import annotations

import gzip
import os
import pickle
import tarfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import write_cifar100

from cifarnet.data.datasets import get_spec, load_dataset
from cifarnet.errors import DataError

CAP = get_spec("cifar100").max_file_bytes


def _error(root: Path) -> str:
    with pytest.raises(DataError) as err:
        load_dataset("cifar100", root, download=False)
    message = str(err.value)
    assert "\n" not in message
    return message


def _only_archive(tmp_path: Path, archive: Path) -> None:
    (tmp_path / "src").rename(tmp_path.parent / f"{tmp_path.name}-src")
    assert [p.name for p in tmp_path.iterdir()] == [archive.name]


def test_a_pickle_of_empty_bytes_says_what_it_holds(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path)
    (folder / "meta").write_bytes(pickle.dumps(b"", protocol=2))
    message = _error(tmp_path)
    assert f"{folder / 'meta'} is not a CIFAR data file: it holds a bytes string" in message
    assert "__builtin__" not in message


def test_a_pickle_of_a_list_names_its_type(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path)
    (folder / "meta").write_bytes(pickle.dumps([1, 2], protocol=2))
    assert f"{folder / 'meta'} does not hold a CIFAR dict (it holds a list)" in _error(tmp_path)


def test_boolean_labels_are_named_as_such(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path)
    with open(folder / "test", "rb") as f:
        d = pickle.load(f, encoding="latin1")
    d["fine_labels"] = np.zeros(len(d["fine_labels"]), dtype=bool)
    with open(folder / "test", "wb") as f:
        pickle.dump(d, f, protocol=2)
    message = _error(tmp_path)
    assert f"{folder / 'test'}: fine_labels are bool values, not class numbers 0..99" in message


def test_an_archive_member_far_larger_than_cifar_is_refused_from_its_header(
    tmp_path: Path,
) -> None:
    # a header that claims 1 GiB more than the cap, followed by no data at all: reading the
    # member would need gigabytes; the refusal must come from the header alone
    write_cifar100(tmp_path / "src")
    archive = tmp_path / "cifar-100-python.tar.gz"
    info = tarfile.TarInfo("cifar-100-python/train")
    info.size = CAP + 2**30
    archive.write_bytes(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT)))
    _only_archive(tmp_path, archive)
    tracemalloc.start()
    start = time.perf_counter()
    message = _error(tmp_path)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert f"{archive}:cifar-100-python/train is 1,4" in message
    assert "far larger than any CIFAR-100 file" in message and "refused unread" in message
    assert peak < 16 * 2**20 and seconds < 5


def test_any_oversized_member_is_refused_not_skipped_through(tmp_path: Path) -> None:
    # a member the loader does not need would still be decompressed to skip past it
    write_cifar100(tmp_path / "src")
    archive = tmp_path / "cifar-100-python.tar.gz"
    info = tarfile.TarInfo("cifar-100-python/padding")
    info.size = CAP + 1
    archive.write_bytes(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT)))
    _only_archive(tmp_path, archive)
    assert f"{archive}:cifar-100-python/padding is" in _error(tmp_path)


def test_an_oversized_file_in_the_folder_is_refused_unread(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path)
    with open(folder / "train", "r+b") as f:
        f.truncate(CAP + 1)  # sparse: no disk used, but reading it would take the whole cap
    tracemalloc.start()
    message = _error(tmp_path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert f"{folder / 'train'} is " in message and "refused unread" in message
    assert peak < 16 * 2**20


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_in_place_of_a_file_is_refused_without_blocking(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path)
    (folder / "test").unlink()
    os.mkfifo(folder / "test")  # reading it would block until a writer comes
    assert f"{folder / 'test'} is not a regular file" in _error(tmp_path)
