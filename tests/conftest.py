"""Shared fixtures: a tiny CIFAR-100 / CIFAR-10 in the real on-disk pickle format, so the real
loader is exercised, and a tiny model config that trains in a fraction of a second per epoch."""

from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

# One intra-op thread (set before torch is first imported; subprocesses inherit it). The tests'
# tensors are tiny, and on a shared 2-core machine OpenMP's two threads wait on each other: a
# forward pass of the reference net took 1 s with 2 threads under load against 13 ms with 1.
os.environ.setdefault("OMP_NUM_THREADS", "1")

TRAIN_PER_CLASS = 4
TEST_PER_CLASS = 2
# a 4-stage ResNet with 8-16 channels: ~10 k parameters, milliseconds per batch on CPU
TINY_MODEL = {"model": "resnet", "model_kwargs": {"widths": [8, 8, 16, 16], "depths": [1, 1, 1, 1]}}


def trained_looking(name: str, **model_kwargs):
    """A `NormalizedModel` of the registered network `name` (10 classes, `model_kwargs`) in
    eval mode, its
    BatchNorms holding statistics and scales as after training: a fresh BatchNorm's 0 / 1 would
    make folding it trivially right, and a zero scale would hide a residual branch."""
    import torch

    from cifarnet.models import create_model
    from cifarnet.tasks.inference import NormalizedModel

    torch.manual_seed(0)
    model = NormalizedModel(create_model(name, 10, **model_kwargs), [0.5] * 3, [0.25] * 3)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


def _images(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """uint8 (N, 3072) rows whose mean colour depends on the label, so a model can learn."""
    base = (labels[:, None] * 37 % 256).astype(np.int16)
    noise = rng.integers(-40, 40, size=(len(labels), 3072))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _dump(obj: dict, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar100(root: Path, seed: int = 0) -> Path:
    """root/cifar-100-python/{train,test,meta} with 100 classes in 20 superclasses."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    fine_to_coarse = np.arange(100) % 20
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        fine = rng.permutation(np.repeat(np.arange(100), per_class))
        _dump(
            {
                "filenames": [f"img_{i}.png" for i in range(len(fine))],
                "batch_label": f"{split} batch 1 of 1",
                "fine_labels": fine.tolist(),
                "coarse_labels": fine_to_coarse[fine].tolist(),
                "data": _images(rng, fine),
            },
            folder / split,
        )
    _dump(
        {
            "fine_label_names": [f"class_{i:02d}" for i in range(100)],
            "coarse_label_names": [f"super_{i:02d}" for i in range(20)],
        },
        folder / "meta",
    )
    return folder


def write_cifar10(root: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
    for name in names:
        labels = rng.permutation(np.repeat(np.arange(10), 3))
        _dump({"labels": labels.tolist(), "data": _images(rng, labels)}, folder / name)
    _dump({"label_names": [f"c{i}" for i in range(10)]}, folder / "batches.meta")
    return folder


@pytest.fixture(scope="session")
def cifar100_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding an extracted tiny cifar-100-python/ (400 train, 200 test images)."""
    root = tmp_path_factory.mktemp("cifar100")
    write_cifar100(root)
    return root


@pytest.fixture(scope="session")
def cifar100_tar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding only cifar-100-python.tar.gz (the same tiny data)."""
    src = tmp_path_factory.mktemp("cifar100-src")
    folder = write_cifar100(src)
    root = tmp_path_factory.mktemp("cifar100-tar")
    with tarfile.open(root / "cifar-100-python.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname="cifar-100-python")
    return root


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar10")
    write_cifar10(root)
    return root


@pytest.fixture
def tiny_config(cifar100_dir: Path, tmp_path: Path):
    """A TrainConfig for a 2-epoch run on the tiny data, writing into tmp_path/runs."""
    from cifarnet.config.settings import resolve_config

    return resolve_config(
        {
            **TINY_MODEL,
            "data_dir": str(cifar100_dir),
            "epochs": 2,
            "batch_size": 64,
            "eval_batch_size": 128,
            "val_size": 100,
            "runs_dir": str(tmp_path / "runs"),
            "device": "cpu",
            "precision": "fp32",
            "download": False,
        }
    )
