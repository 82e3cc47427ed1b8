"""The data layer on tiny data in the real on-disk formats: loading, faults, split, augmentation."""

from __future__ import annotations

import gzip
import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEST_PER_CLASS, TRAIN_PER_CLASS, write_cifar100

from cifarnet.data.augment import Augment, Normalize
from cifarnet.data.datasets import SPECS, load_dataset
from cifarnet.data.loader import BatchLoader
from cifarnet.data.splits import balanced_subset, stratified_split
from cifarnet.errors import DataError

# loading


def test_load_extracted_folder(cifar100_dir: Path) -> None:
    d = load_dataset("cifar100", cifar100_dir, download=False)
    assert d.train_images.shape == (100 * TRAIN_PER_CLASS, 3, 32, 32)
    assert d.test_images.shape == (100 * TEST_PER_CLASS, 3, 32, 32)
    assert d.train_images.dtype == torch.uint8 and d.train_labels.dtype == torch.int64
    assert torch.bincount(d.train_labels).tolist() == [TRAIN_PER_CLASS] * 100
    assert len(d.classes) == 100 and d.classes[7] == "class_07"
    assert len(d.superclasses) == 20 and d.fine_to_coarse == [i % 20 for i in range(100)]
    info = d.info()
    assert info["mean"] == list(SPECS["cifar100"].mean) and info["classes"] == d.classes
    # the folder itself (not only its parent) is accepted as --data-dir
    again = load_dataset("cifar100", cifar100_dir / "cifar-100-python", download=False)
    assert torch.equal(again.train_images, d.train_images)


def test_load_tar_gz_gives_the_same_data(cifar100_dir: Path, cifar100_tar_dir: Path) -> None:
    folder = load_dataset("cifar100", cifar100_dir, download=False)
    archive = load_dataset("cifar100", cifar100_tar_dir, download=False)
    assert archive.source.endswith("cifar-100-python.tar.gz")
    assert torch.equal(archive.train_images, folder.train_images)
    assert torch.equal(archive.test_labels, folder.test_labels)


def test_load_cifar10(cifar10_dir: Path) -> None:
    d = load_dataset("cifar10", cifar10_dir, download=False)
    assert d.train_images.shape == (5 * 30, 3, 32, 32) and d.test_images.shape == (30, 3, 32, 32)
    assert d.classes == [f"c{i}" for i in range(10)]
    assert d.superclasses is None and d.fine_to_coarse is None
    assert int(d.train_labels.max()) == 9


def test_data_dir_from_environment(cifar100_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CIFARNET_DATA", str(cifar100_dir))
    assert load_dataset("cifar100", None, download=False).source.startswith(str(cifar100_dir))


def test_missing_data_says_where_and_how(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        load_dataset("cifar100", tmp_path, download=False)
    text = str(err.value)
    assert str(tmp_path) in text and "cifar-100-python.tar.gz" in text and "--data-dir" in text
    assert "\n" not in text


def test_data_dir_naming_some_other_file_says_so(tmp_path: Path) -> None:
    other = tmp_path / "test"
    other.write_bytes(b"not the archive")
    with pytest.raises(
        DataError, match=r"test is a file, not a folder or cifar-100-python\.tar\.gz"
    ):
        load_dataset("cifar100", other)  # not taken for a folder to download into
    assert other.read_bytes() == b"not the archive"


# faults in the files


def _fresh(tmp_path: Path) -> Path:
    write_cifar100(tmp_path)
    return tmp_path / "cifar-100-python"


def _rewrite(path: Path, **changes: object) -> None:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="latin1")
    d.update(changes)
    with open(path, "wb") as f:
        pickle.dump(d, f, protocol=2)


def _error(root: Path) -> str:
    with pytest.raises(DataError) as err:
        load_dataset("cifar100", root, download=False)
    return str(err.value)


def test_truncated_pickle_names_the_file(tmp_path: Path) -> None:
    folder = _fresh(tmp_path)
    raw = (folder / "train").read_bytes()
    (folder / "train").write_bytes(raw[: len(raw) // 3])
    assert f"{folder / 'train'} is not a readable CIFAR pickle" in _error(tmp_path)


@pytest.mark.parametrize(
    ("file", "key", "value"),
    [("train", "fine_labels", 5), ("train", "fine_labels", None), ("meta", "fine_label_names", 5)],
)
def test_malformed_label_lists_are_one_data_error(
    tmp_path: Path, file: str, key: str, value: object
) -> None:
    import pickle

    folder = _fresh(tmp_path)
    with open(folder / file, "rb") as f:
        content = pickle.load(f, encoding="latin1")
    content[key] = value
    with open(folder / file, "wb") as f:
        pickle.dump(content, f, protocol=2)
    assert "it is not an intact CIFAR copy" in _error(tmp_path)


def test_missing_label_list_names_the_file_and_the_dataset(tmp_path: Path) -> None:
    folder = _fresh(tmp_path)
    with open(folder / "train", "rb") as f:
        content = pickle.load(f, encoding="latin1")
    del content["fine_labels"]
    with open(folder / "train", "wb") as f:
        pickle.dump(content, f, protocol=2)
    message = f"{folder / 'train'} has no 'fine_labels' entry; it is not a CIFAR-100 file"
    assert _error(tmp_path) == message


def test_empty_and_garbage_files_name_the_file(tmp_path: Path) -> None:
    folder = _fresh(tmp_path)
    (folder / "test").write_bytes(b"")
    assert str(folder / "test") in _error(tmp_path)
    (folder / "test").write_bytes(b"<html>404 not found</html>")
    assert str(folder / "test") in _error(tmp_path)


def test_missing_file_in_folder(tmp_path: Path) -> None:
    folder = _fresh(tmp_path)
    (folder / "test").unlink()
    assert f"{folder / 'test'} is missing" in _error(tmp_path)


def test_wrong_image_shape(tmp_path: Path) -> None:
    folder = _fresh(tmp_path)
    _rewrite(folder / "train", data=np.zeros((400, 1024), dtype=np.uint8))
    assert f"{folder / 'train'}: images have shape (400, 1024)" in _error(tmp_path)
    _rewrite(folder / "train", data=np.zeros((400, 3072), dtype=np.float32))
    assert "not a uint8 N x 3072 array" in _error(tmp_path)


def test_label_count_and_range(tmp_path: Path) -> None:
    folder = _fresh(tmp_path)
    _rewrite(folder / "test", fine_labels=[0] * 199)
    assert f"{folder / 'test'}: 199 fine_labels for 200 images" in _error(tmp_path)
    _rewrite(folder / "test", fine_labels=[100] * 200)
    assert f"{folder / 'test'}: fine_labels outside 0..99" in _error(tmp_path)
    _rewrite(folder / "test", fine_labels=[-1] * 200)
    assert "outside 0..99" in _error(tmp_path)


def test_image_counts_other_than_the_official_ones_warn_and_load(
    cifar100_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses
    import warnings

    train, test = 100 * TRAIN_PER_CLASS, 100 * TEST_PER_CLASS
    with pytest.warns(UserWarning, match=f"{train:,} training and {test:,} test images, not the "
                      "official 50,000 and 10,000; using them as they are"):  # fmt: skip
        d = load_dataset("cifar100", cifar100_dir, download=False)
    assert len(d.train_images) == train
    # the official counts and every file's official md5: not a word
    folder = cifar100_dir / "cifar-100-python"
    md5 = {n: hashlib.md5((folder / n).read_bytes()).hexdigest() for n in ("train", "test", "meta")}
    official = dataclasses.replace(
        SPECS["cifar100"], train_count=train, test_count=test, file_md5=tuple(md5.items())
    )
    monkeypatch.setitem(SPECS, "cifar100", official)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset("cifar100", cifar100_dir, download=False)


def test_files_that_differ_from_the_official_ones_warn_and_load(
    cifar100_dir: Path, cifar100_tar_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    folder = cifar100_dir / "cifar-100-python"
    # counts as the official ones; the official md5 of meta, the train and test files re-encoded
    official = dataclasses.replace(
        SPECS["cifar100"],
        train_count=100 * TRAIN_PER_CLASS,
        test_count=100 * TEST_PER_CLASS,
        file_md5=(
            ("train", "16019d7e3df5f24257cddd939b257f8d"),
            ("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
            ("meta", hashlib.md5((folder / "meta").read_bytes()).hexdigest()),
        ),
    )
    monkeypatch.setitem(SPECS, "cifar100", official)
    for data_dir, source in ((cifar100_dir, folder), (cifar100_tar_dir, "cifar-100-python.tar.gz")):
        with pytest.warns(UserWarning) as caught:
            d = load_dataset("cifar100", data_dir, download=False)
        assert [str(w.message) for w in caught] == [
            f"{d.source}: train, test differ from the official CIFAR-100 files (md5); their "
            "structure is valid, so they are used as they are"
        ]
        assert d.source.endswith(str(source)) and len(d.train_images) == 100 * TRAIN_PER_CLASS


def test_meta_with_wrong_class_count(tmp_path: Path) -> None:
    folder = _fresh(tmp_path)
    _rewrite(folder / "meta", fine_label_names=["a", "b"])
    assert "meta lists 2 class names, expected 100" in _error(tmp_path)


def test_pickle_carrying_code_is_refused(tmp_path: Path) -> None:
    folder = _fresh(tmp_path)
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": Evil()}, f)
    assert "unexpected object" in _error(tmp_path)
    assert not marker.exists()


def _tar(tmp_path: Path) -> Path:
    folder = write_cifar100(tmp_path / "src")
    archive = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-100-python")
    return archive


def test_truncated_archive_names_the_file(tmp_path: Path) -> None:
    archive = _tar(tmp_path)
    raw = archive.read_bytes()
    archive.write_bytes(raw[: len(raw) // 2])
    root = archive.parent
    (root / "src").rename(root.parent / f"{root.name}-src")  # only the archive remains
    assert f"{archive} is truncated or corrupt" in _error(root)


def test_archive_missing_members(tmp_path: Path) -> None:
    archive = tmp_path / "cifar-100-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        meta = write_cifar100(tmp_path / "src") / "meta"
        tar.add(meta, arcname="cifar-100-python/meta")
    (tmp_path / "src").rename(tmp_path.parent / f"{tmp_path.name}-src")
    assert f"{archive} lacks train, test" in _error(tmp_path)


def test_archive_not_gzip(tmp_path: Path) -> None:
    archive = tmp_path / "cifar-100-python.tar.gz"
    archive.write_bytes(gzip.compress(b"not a tar file at all" * 40))
    assert f"{archive} is truncated or corrupt" in _error(tmp_path)


# split and subset


def test_stratified_split_is_disjoint_balanced_and_seeded() -> None:
    labels = torch.arange(10).repeat_interleave(20)  # 10 classes x 20 images
    train, val = stratified_split(labels, 30, seed=0)
    assert len(val) == 30 and len(train) == 170
    assert not set(train.tolist()) & set(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(200))
    assert torch.bincount(labels[val], minlength=10).tolist() == [3] * 10
    assert torch.equal(stratified_split(labels, 30, seed=0)[1], val)
    assert not torch.equal(stratified_split(labels, 30, seed=1)[1], val)
    # 25 = 2 per class + 5 classes with a third
    counts = torch.bincount(labels[stratified_split(labels, 25, seed=0)[1]], minlength=10)
    assert sorted(counts.tolist()) == [2] * 5 + [3] * 5


def test_split_edges() -> None:
    labels = torch.arange(4).repeat(5)
    train, val = stratified_split(labels, 0, seed=0)
    assert len(train) == 20 and len(val) == 0
    with pytest.raises(DataError, match="leaves no training images"):
        stratified_split(labels, 20, seed=0)
    uneven = torch.tensor([0, 0] + [1] * 10)
    with pytest.raises(DataError, match="asks 3 images of class 0, which has 2"):
        stratified_split(uneven, 6, seed=0)


def test_subset_is_class_balanced() -> None:
    labels = torch.arange(10).repeat_interleave(30)
    indices = torch.arange(0, 300)
    chosen = balanced_subset(labels, indices, 47, seed=0)
    counts = torch.bincount(labels[chosen], minlength=10)
    assert len(chosen) == 47 and len(set(chosen.tolist())) == 47
    assert counts.max() - counts.min() <= 1
    assert set(chosen.tolist()) <= set(indices.tolist())
    assert torch.equal(balanced_subset(labels, indices, 47, seed=0), chosen)


# augmentation and batches


def _images(n: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(1, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)


def test_augment_keeps_shape_dtype_and_varies() -> None:
    x = _images()
    aug = Augment(crop_padding=4, flip=True)
    g = torch.Generator().manual_seed(0)
    a, b = aug(x, g), aug(x, g)
    assert a.shape == x.shape and a.dtype == torch.uint8
    assert not torch.equal(a, b)  # the generator moved on: a new draw
    assert not torch.equal(a, x)
    assert torch.equal(aug(x, torch.Generator().manual_seed(0)), a)  # seeded: reproducible
    # padding is zeros: a shifted crop shows black borders (inputs are >= 1 everywhere)
    assert (a == 0).any()


def test_flip_only_gives_the_image_or_its_mirror() -> None:
    x = _images(64)
    out = Augment(crop_padding=0, flip=True)(x, torch.Generator().manual_seed(3))
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert torch.all(same | mirrored)
    assert same.any() and mirrored.any()


def test_crop_is_a_shift_of_the_padded_image() -> None:
    x = _images(8)
    out = Augment(crop_padding=4, flip=False)(x, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(len(x)):
        windows = [
            torch.equal(out[i], padded[i, :, dy : dy + 32, dx : dx + 32])
            for dy in range(9)
            for dx in range(9)
        ]
        assert any(windows)


def test_cutout_zeroes_one_square_clipped_at_the_border() -> None:
    x = _images(64)
    out = Augment(crop_padding=0, flip=False, cutout=8)(x, torch.Generator().manual_seed(0))
    holes = (out == 0).all(1)  # (N, 32, 32): pixels zero in every channel
    assert torch.equal(out, x.masked_fill(holes.unsqueeze(1), 0))  # the rest is untouched
    for hole in holes:
        rows = hole.any(1).nonzero().flatten()
        cols = hole.any(0).nonzero().flatten()
        # one solid rectangle: the hole fills its bounding box
        assert hole.sum() == len(rows) * len(cols) > 0
        assert hole[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()
        for side in (rows, cols):
            assert len(side) <= 8
            assert len(side) == 8 or side.min() == 0 or side.max() == 31  # clipped at an edge
    assert (holes.flatten(1).sum(1) == 64).any()  # away from the border, all of 8 x 8


def test_batch_loader_normalises_and_covers_every_image() -> None:
    x = _images(10)
    y = torch.arange(10)
    norm = Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.device("cpu"))
    loader = BatchLoader(x, y, 4, norm, Augment(), shuffle=True)
    batches = list(loader.batches(torch.Generator().manual_seed(0)))
    assert len(loader) == 3 and [len(b[1]) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat([b[1] for b in batches]).tolist()) == list(range(10))
    assert batches[0][0].dtype == torch.float32 and batches[0][0].shape == (4, 3, 32, 32)
    plain = next(BatchLoader(x, y, 10, norm).batches())[0]
    assert torch.allclose(plain, (x.float() / 255 - 0.5) / 0.25, atol=1e-5)
