"""cifarnet evaluate: the metrics on hand-made numbers, and the command against a hand
computation on a tiny trained model (generated data in the real on-disk format)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import trained_looking
from tiny_run import copy_run, trained_run
from typer.testing import CliRunner

from cifarnet import metrics
from cifarnet.cli import app

runner = CliRunner()


def test_topk_and_per_class_accuracy():
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [1.0, 2.0, 3.0], [3.0, 1.0, 2.0]])
    labels = torch.tensor([0, 2, 1, 0])
    assert metrics.topk_hits(logits, labels, 1).tolist() == [True, False, False, True]
    assert metrics.topk_hits(logits, labels, 2).tolist() == [True, True, True, True]
    counts, accuracy = metrics.per_class_accuracy(
        metrics.topk_hits(logits, labels, 1), labels, num_classes=4
    )
    assert counts.tolist() == [2, 1, 1, 0]
    assert accuracy[:3].tolist() == [100.0, 0.0, 0.0]
    assert torch.isnan(accuracy[3])  # a class without images has no accuracy


def test_engine_top1_breaks_ties_like_the_per_class_counts():
    from cifarnet.runtime.device import Runtime
    from cifarnet.training.step import evaluate as run_evaluation

    # every row ties classes 3 and 70 at the top (bf16 logits often tie): argmax says 3,
    # torch's CPU topk(5) lists 70 first
    logits = torch.zeros(4, 100)
    logits[:, [3, 70]] = 1.0
    labels = torch.tensor([3, 3, 70, 0])
    model = torch.nn.Linear(1, 100)
    model.forward = lambda x: logits[: len(x)]
    batches = [(torch.zeros(4, 1), labels)]
    result = run_evaluation(model, batches, Runtime(torch.device("cpu"), "fp32", False))
    counts, per_class = metrics.per_class_accuracy(logits.argmax(1) == labels, labels, 100)
    assert result.top1 == 50.0 == float((counts * per_class.nan_to_num()).sum() / 4)
    # class 0 ranks third (behind the tie, first of the 98 zeros): a top-5 hit, whatever order
    # topk gives the zeros
    assert result.top5 == 100.0


def test_topk_hits_rank_ties_like_argmax_so_top5_never_falls_below_top1():
    # seven classes tie at the top: argmax says 0; topk(5) may list any five of the seven
    logits = torch.zeros(7, 100)
    logits[:, [0, 10, 20, 30, 40, 50, 60]] = 1.0
    labels = torch.tensor([0, 10, 20, 30, 40, 50, 60])
    top1 = metrics.topk_hits(logits, labels, 1)
    top5 = metrics.topk_hits(logits, labels, 5)
    assert top1.tolist() == (logits.argmax(1) == labels).tolist()
    assert top5.tolist() == [True] * 5 + [False] * 2  # the five lowest indices of the tie
    assert bool((top5 | ~top1).all())
    assert metrics.topk_hits(logits, labels, 100).all()


def test_topk_hits_rank_nan_like_argmax():
    nan = float("nan")
    logits = torch.tensor(
        [[nan, 0.0, 5.0], [nan, nan, nan], [1.0, nan, 2.0], [0.0, 1.0, nan], [1.0, 2.0, 3.0]]
    )
    labels = torch.tensor([2, 2, 1, 0, 2])
    top1 = metrics.topk_hits(logits, labels, 1)
    assert (
        top1.tolist() == (logits.argmax(1) == labels).tolist() == [False, False, True, False, True]
    )
    assert metrics.topk_hits(logits, labels, 2).tolist() == [True, False, True, False, True]


def test_superclass_accuracy_counts_a_wrong_class_in_the_right_superclass():
    fine_to_coarse = [0, 0, 1, 1]
    predictions = torch.tensor([1, 2, 3, 0])
    labels = torch.tensor([0, 3, 2, 2])
    # 1~0 same superclass, 2~3 same, 3~2 same, 0 vs 2 different
    assert metrics.superclass_accuracy(predictions, labels, fine_to_coarse) == 75.0


def test_expected_calibration_error_by_hand():
    # confidences 0.9 and 0.91 share the bin (13/15, 14/15]; 0.62, 0.7 and 0.55 each have their own
    probabilities = torch.tensor([[0.9, 0.1], [0.91, 0.09], [0.62, 0.38], [0.3, 0.7], [0.55, 0.45]])
    labels = torch.tensor([0, 0, 1, 1, 0])  # wrong only for the 0.62 one
    expected = (2 * abs(1 - 0.905) + abs(0 - 0.62) + abs(1 - 0.7) + abs(1 - 0.55)) / 5
    assert metrics.expected_calibration_error(probabilities, labels) == pytest.approx(
        100 * expected, abs=1e-4
    )
    # one bin for everything: |accuracy - mean confidence|
    everything = abs(4 / 5 - (0.9 + 0.91 + 0.62 + 0.7 + 0.55) / 5)
    assert metrics.expected_calibration_error(probabilities, labels, bins=1) == pytest.approx(
        100 * everything, abs=1e-4
    )


def test_confusion_matrix_and_confused_pairs():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    predictions = torch.tensor([0, 1, 1, 1, 2, 0, 0, 2])
    confusion = metrics.confusion_matrix(predictions, labels, 3)
    assert confusion.tolist() == [[1, 2, 0], [0, 1, 1], [2, 0, 1]]
    # ties (0->1 and 2->0 both 2) keep row-major order; the diagonal never counts
    assert metrics.confused_pairs(confusion, k=2) == [(0, 1, 2), (2, 0, 2)]
    assert metrics.confused_pairs(confusion, k=10) == [(0, 1, 2), (2, 0, 2), (1, 2, 1)]


@pytest.fixture(scope="module")
def run(tmp_path_factory, cifar100_dir) -> Path:
    return trained_run(tmp_path_factory, cifar100_dir)


def _hand_computation(
    run: Path, data_dir: Path, tta: bool = False, shift: int = 0
) -> dict[str, float]:
    """The test split's numbers straight from the pickles and the checkpoint's weights, with
    numpy for everything after the logits. `tta`: the logits are the mean of each image's and
    its mirror's; `shift`: half that plus a quarter of each such mean for the image shifted
    `shift` px down-right and up-left, black where the shift uncovers the edge."""
    from cifarnet.models import build_model

    ckpt = torch.load(run / "best.pt", weights_only=True)
    net = build_model(ckpt["model"])
    net.load_state_dict(ckpt["state_dict"])
    net.eval()
    folder = data_dir / "cifar-100-python"
    with open(folder / "test", "rb") as f:
        test = pickle.load(f, encoding="latin1")
    x = test["data"].reshape(-1, 3, 32, 32).astype(np.float64) / 255.0
    mean = np.array(ckpt["data"]["mean"]).reshape(1, 3, 1, 1)
    std = np.array(ckpt["data"]["std"]).reshape(1, 3, 1, 1)
    with torch.no_grad():

        def mirrored(raw: np.ndarray) -> torch.Tensor:
            inputs = torch.from_numpy((raw - mean) / std).float()  # (N, 3, 32, 32)
            logits = net(inputs)
            return 0.5 * (logits + net(inputs.flip(3))) if tta else logits  # flip(3): left-right

        logits = mirrored(x)
        if shift:
            s = shift
            padded = np.pad(x, ((0, 0), (0, 0), (s, s), (s, s)))  # black edges
            down_right = padded[:, :, :32, :32]  # pixel (i, j) is the image's (i - s, j - s)
            up_left = padded[:, :, 2 * s :, 2 * s :]
            logits = 0.5 * logits + 0.25 * (mirrored(down_right) + mirrored(up_left))
        logits = logits.double().numpy()
    y = np.array(test["fine_labels"])
    coarse = np.array(test["coarse_labels"])
    fine_to_coarse = dict(zip(y.tolist(), coarse.tolist(), strict=True))
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    p = np.exp(log_p)
    order = np.argsort(-logits, axis=1)
    pred = order[:, 0]
    confidence = p.max(1)
    ece = 0.0
    for b in range(15):
        in_bin = (confidence > b / 15) & (confidence <= (b + 1) / 15)
        if in_bin.any():
            gap = abs((pred[in_bin] == y[in_bin]).mean() - confidence[in_bin].mean())
            ece += in_bin.mean() * gap
    return {
        "images": len(y),
        "loss": float(-log_p[np.arange(len(y)), y].mean()),
        "top1": 100 * float((pred == y).mean()),
        "top5": 100 * float((order[:, :5] == y[:, None]).any(1).mean()),
        "superclass_top1": 100
        * float(
            np.mean(
                [fine_to_coarse.get(int(a), -1) == c for a, c in zip(pred, coarse, strict=True)]
            )
        ),
        "ece": 100 * ece,
        "correct_per_class": np.bincount(y[pred == y], minlength=100),
    }


def test_evaluate_matches_hand_computation(run, cifar100_dir, tmp_path):
    out = tmp_path / "results" / "eval.csv"
    args = ["evaluate", str(run / "best.pt"), "--data-dir", str(cifar100_dir)]
    result = runner.invoke(
        app, [*args, "--device", "cpu", "--precision", "fp32", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    expected = _hand_computation(run, cifar100_dir)

    summary = pd.read_csv(out)
    assert list(summary.columns) == [
        "checkpoint",
        "dataset",
        "split",
        "images",
        "loss",
        "top1",
        "top5",
        "superclass_top1",
        "ece",
        "seconds",
        "images_per_second",
        "precision",
        "device",
        "tta",
        "tta_shift",
    ]
    row = summary.iloc[0]
    assert (row["checkpoint"], row["dataset"], row["split"]) == (
        str(run / "best.pt"),
        "cifar100",
        "test",
    )
    assert (row["precision"], row["device"], row["tta"]) == ("fp32", "cpu", False)
    assert row["images"] == expected["images"] == 200
    assert row["loss"] == pytest.approx(expected["loss"], rel=1e-5)
    for key in ("top1", "top5", "superclass_top1", "ece"):
        assert row[key] == pytest.approx(expected[key], abs=1e-3), key
    assert row["seconds"] > 0
    assert row["images_per_second"] == pytest.approx(200 / row["seconds"], rel=1e-6)

    per_class = pd.read_csv(tmp_path / "results" / "eval_per_class.csv")
    assert len(per_class) == 100
    assert per_class["images"].sum() == 200
    assert per_class["class"].iloc[7] == "class_07"
    assert per_class["superclass"].iloc[27] == "super_07"  # the fixture maps class c to c % 20
    correct = (per_class["top1"] * per_class["images"] / 100).round().astype(int)
    assert correct.tolist() == expected["correct_per_class"].tolist()

    confusion = pd.read_csv(tmp_path / "results" / "eval_confusion.csv", index_col=0)
    assert confusion.shape == (100, 100)
    assert confusion.to_numpy().sum() == 200
    assert np.trace(confusion.to_numpy()) == round(expected["top1"] * 2)
    png = (tmp_path / "results" / "eval_confusion.png").read_bytes()
    assert png.startswith(b"\x89PNG")

    # the rich tables show the same numbers
    assert f"{expected['top1']:.2f}%" in result.output
    assert "most confused pairs" in result.output
    assert "10 best and 10 worst classes" in result.output


def test_val_and_train_splits_are_the_runs_own(run, cifar100_dir):
    from cifarnet.tasks.evaluation import evaluate

    val = evaluate(run / "best.pt", data_dir=cifar100_dir, split="val", device="cpu")
    train = evaluate(run / "best.pt", data_dir=cifar100_dir, split="train", device="cpu")
    assert (val.images, train.images) == (100, 300)  # the run held out val_size=100 of 400
    assert val.class_images == [1] * 100  # stratified: one per class
    # the run's validation top-1 for the same weights (fp32, no augmentation)
    history = pd.read_csv(run / "metrics.csv")
    assert val.top1 == pytest.approx(history["val_top1"].iloc[-1], abs=1e-6)


def test_val_split_refuses_another_copy_of_the_data(run, tmp_path):
    from conftest import write_cifar100

    from cifarnet.errors import DataError
    from cifarnet.tasks.evaluation import evaluate

    write_cifar100(tmp_path, seed=1)  # same classes, other images in another order
    with pytest.raises(DataError, match="is not the copy of cifar100 that the run of"):
        evaluate(run / "best.pt", data_dir=tmp_path, split="val", device="cpu")
    assert evaluate(run / "best.pt", data_dir=tmp_path, device="cpu").images == 200  # test


def test_python_api_takes_a_torch_device_and_reports_progress(run, cifar100_dir):
    from cifarnet.tasks.evaluation import evaluate

    calls = []
    result = evaluate(
        run / "best.pt",
        data_dir=cifar100_dir,
        device=torch.device("cpu"),
        batch_size=64,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert (result.images, result.device) == (200, "cpu")
    assert calls == [(64, 200), (128, 200), (192, 200), (200, 200)]  # after each batch


def test_a_run_folder_stands_for_its_best_pt(run, cifar100_dir):
    args = ["evaluate", str(run), "--data-dir", str(cifar100_dir), "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"using {run / 'best.pt'} (the run's best.pt)" in result.stderr
    assert str(run / "best.pt") in result.stdout


def test_flip_tta_averages_logits_of_mirrored_images(run, cifar100_dir):
    from cifarnet.tasks.evaluation import evaluate

    plain = evaluate(run / "best.pt", data_dir=cifar100_dir, device="cpu", precision="fp32")
    tta = evaluate(run / "best.pt", data_dir=cifar100_dir, device="cpu", precision="fp32", tta=True)
    expected = _hand_computation(run, cifar100_dir, tta=True)
    assert tta.tta and not plain.tta
    assert tta.images == plain.images == expected["images"]
    assert tta.loss == pytest.approx(expected["loss"], rel=1e-5)
    for key in ("top1", "top5", "superclass_top1", "ece"):
        assert getattr(tta, key) == pytest.approx(expected[key], abs=1e-3), key
    assert tta.loss != pytest.approx(plain.loss, rel=1e-5)  # the mirrors did change the logits


def test_shifted_tta_adds_two_shifted_mirror_pairs_at_half_weight(run, cifar100_dir, tmp_path):
    from cifarnet.tasks.evaluation import evaluate

    kwargs = dict(data_dir=cifar100_dir, device="cpu", precision="fp32")
    flip = evaluate(run / "best.pt", tta=True, **kwargs)
    out = tmp_path / "shift.csv"
    shifted = evaluate(run / "best.pt", tta_shift=2, out=out, **kwargs)
    expected = _hand_computation(run, cifar100_dir, tta=True, shift=2)
    assert shifted.tta and shifted.tta_shift == 2  # a shift implies the flips
    assert shifted.loss == pytest.approx(expected["loss"], rel=1e-5)
    for key in ("top1", "top5", "superclass_top1", "ece"):
        assert getattr(shifted, key) == pytest.approx(expected[key], abs=1e-3), key
    assert shifted.loss != pytest.approx(flip.loss, rel=1e-5)
    row = pd.read_csv(out).iloc[0]
    assert (bool(row["tta"]), int(row["tta_shift"])) == (True, 2)


@pytest.mark.parametrize("shift", ["-1", "9"])
def test_a_tta_shift_out_of_range_is_one_line(run, cifar100_dir, shift):
    args = ["evaluate", str(run / "best.pt"), "--data-dir", str(cifar100_dir)]
    result = runner.invoke(app, [*args, "--tta-shift", shift])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: --tta-shift must be a whole number of pixels from 0 to 8, got {shift}"
    ]


def test_no_checkpoint_uses_the_newest_run_and_says_so(run, cifar100_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    older = copy_run(run, tmp_path / "runs", "older")
    newer = copy_run(run, tmp_path / "runs", "newer")
    now = time.time()
    os.utime(older / "best.pt", (now, now))
    os.utime(newer / "best.pt", (now - 100, now - 100))  # "older" is the newest file
    result = runner.invoke(
        app, ["evaluate", "--data-dir", str(cifar100_dir), "--device", "cpu", "--out", "e.csv"]
    )
    assert result.exit_code == 0, result.output
    assert f"using {Path('runs') / 'older' / 'best.pt'}" in result.output
    assert pd.read_csv("e.csv")["checkpoint"].iloc[0] == str(Path("runs/older/best.pt"))


def test_refuses_to_overwrite_without_force(run, cifar100_dir, tmp_path):
    out = tmp_path / "e.csv"
    (tmp_path / "e_confusion.png").write_bytes(b"keep me")
    args = ["evaluate", str(run / "best.pt"), "--data-dir", str(cifar100_dir), "--device", "cpu"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 1
    assert "e_confusion.png already exists; pass --force" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()  # refused before anything was written
    assert (tmp_path / "e_confusion.png").read_bytes() == b"keep me"

    result = runner.invoke(app, [*args, "--out", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "e_confusion.png").read_bytes().startswith(b"\x89PNG")


def test_a_checkpoint_name_that_is_not_utf8_gets_its_row_and_heatmap(run, cifar100_dir, tmp_path):
    checkpoint = tmp_path / os.fsdecode(b"caf\xe9.pt")  # Latin-1 bytes: not valid UTF-8
    checkpoint.write_bytes((run / "best.pt").read_bytes())
    out = tmp_path / "e.csv"
    args = ["evaluate", str(checkpoint), "--data-dir", str(cifar100_dir), "--device", "cpu"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert b"caf\xe9.pt" in out.read_bytes()  # the row names the file by its own bytes
    assert (tmp_path / "e_confusion.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["missing.pt"], "missing.pt: no such checkpoint file"),
        (["--split", "holdout"], "--split must be one of test, val, train"),
        (["--dataset", "cifar10"], "cannot be evaluated on cifar10"),
        (["--out", "results.txt"], "give a .csv file name"),
        (["--device", "gpu"], "unknown device 'gpu' (did you mean 'cpu'?)"),
        (["--device", "meta"], "unknown device 'meta'"),
        (["--precision", "fp8"], "unknown precision 'fp8'"),
    ],
    ids=["missing-checkpoint", "bad-split", "wrong-dataset", "bad-out", "gpu", "meta", "fp8"],
)
def test_user_errors_are_one_line(run, cifar100_dir, tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    checkpoint = [] if extra[0] == "missing.pt" else [str(run / "best.pt")]
    device = [] if "--device" in extra else ["--device", "cpu"]
    result = runner.invoke(
        app, ["evaluate", *checkpoint, *extra, "--data-dir", str(cifar100_dir), *device]
    )
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_fp16_on_cpu_is_refused_in_one_line(run, cifar100_dir):
    args = ["evaluate", str(run / "best.pt"), "--data-dir", str(cifar100_dir), "--device", "cpu"]
    result = runner.invoke(app, [*args, "--precision", "fp16"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: --precision fp16 is not supported on the CPU")
    assert len(result.stderr.strip().splitlines()) == 1


def test_no_run_at_all_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["evaluate"])
    assert result.exit_code == 1
    assert "no checkpoint given and none found" in result.output


def test_help_is_fast_and_does_not_import_torch():
    code = (
        "import sys, time\n"
        "t0 = time.perf_counter()\n"
        "from cifarnet.cli import app\n"
        "try:\n"
        "    app(['--help'], prog_name='cifarnet')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', time.perf_counter() - t0)\n"
    )
    best = float("inf")
    for _ in range(2):  # best of two: a busy shared machine can stall one start
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        verdict, seconds = out.stdout.strip().splitlines()[-1].split()
        assert verdict == "NO-TORCH", out.stderr
        best = min(best, float(seconds))
    assert "evaluate" in out.stdout and "export" in out.stdout
    assert best < 0.5


def test_public_api_is_lazy_and_complete():
    code = (
        "import sys, cifarnet\n"
        "before = 'torch' in sys.modules\n"
        "from cifarnet.tasks.evaluation import evaluate\n"
        "from cifarnet.tasks.exporting import export\n"
        "from cifarnet.tasks.prediction import predict\n"
        "from cifarnet.tasks.benchmarking import benchmark\n"
        "same = (cifarnet.evaluate is evaluate, cifarnet.predict is predict,\n"
        "        cifarnet.export is export, cifarnet.benchmark is benchmark)\n"
        "print(before, all(same))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["False", "True"], out.stderr


def test_cifar10_has_no_superclasses(cifar10_dir, tmp_path, monkeypatch):
    from conftest import TINY_MODEL

    from cifarnet.config.settings import resolve_config
    from cifarnet.training.trainer import train

    config = resolve_config(
        {
            **TINY_MODEL,
            "dataset": "cifar10",
            "data_dir": str(cifar10_dir),
            "epochs": 1,
            "val_size": 20,
            "runs_dir": str(tmp_path / "runs"),
            "device": "cpu",
            "precision": "fp32",
            "download": False,
        }
    )
    run = Path(train(config)["run_dir"])
    # no --data-dir and nothing in the usual place: the data the run trained on is used
    monkeypatch.setenv("CIFARNET_DATA", str(tmp_path / "empty"))
    out = tmp_path / "c10.csv"
    result = runner.invoke(app, ["evaluate", str(run / "best.pt"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    row = pd.read_csv(out).iloc[0]
    assert (row["dataset"], row["images"]) == ("cifar10", 30)
    assert np.isnan(row["superclass_top1"])
    per_class = pd.read_csv(tmp_path / "c10_per_class.csv")
    assert len(per_class) == 10 and per_class["superclass"].isna().all()
    assert "5 best and 5 worst classes" in result.output


RESIDUAL_FASTNET = {"widths": [16, 32, 32], "convs_per_stage": 3}


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("resnet_reference", {}), ("fastnet", {}), ("fastnet", RESIDUAL_FASTNET)],
)
def test_fold_batchnorm_keeps_the_function(name, kwargs):
    from cifarnet.tasks.inference import fold_batchnorm

    model = trained_looking(name, **kwargs)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        folded = fold_batchnorm(model)
        got = folded(x)
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    # every BN of the ResNet follows a conv; FastNet's first BN of each stage follows a max-pool
    # (its residual stages' other two follow convolutions)
    assert norms == (0 if name == "resnet_reference" else 3)
    assert torch.allclose(got, expected, atol=1e-5 * expected.abs().max().item())


def test_class_names_are_printed_literally_not_as_rich_markup():
    import io

    from rich.console import Console

    from cifarnet.cli.render import render_evaluation
    from cifarnet.tasks.evaluation import Evaluation

    names = ["[bold]cat", "dog[/]", "[red]x[/red]", "plain"]
    confusion = torch.tensor([[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 2], [0, 0, 0, 2]])
    result = Evaluation(
        checkpoint="[m].pt", kind="checkpoint", defaulted=False, dataset="cifar10",
        split="test", images=8, loss=1.0, top1=62.5, top5=100.0, superclass_top1=None,
        ece=5.0, seconds=1.0, device="cpu", precision="fp32", tta=False, tta_shift=0,
        classes=names,
        superclasses=None, fine_to_coarse=None, class_images=[2, 2, 2, 2],
        class_top1=[50.0, 100.0, 0.0, 100.0], class_top5=[100.0] * 4, confusion=confusion,
        confused_pairs=[(2, 3, 2), (0, 1, 1)],
    )  # fmt: skip
    screen = io.StringIO()
    render_evaluation(Console(file=screen, width=200), result)
    text = screen.getvalue()
    for name in names:  # in the best/worst table and the confused pairs alike
        assert text.count(name) >= 2, name


def test_a_run_trained_from_cifarnet_data_finds_its_data_again(
    tiny_config, cifar100_dir, tmp_path, monkeypatch
):
    from cifarnet.tasks.evaluation import evaluate
    from cifarnet.training.trainer import train

    monkeypatch.setenv("CIFARNET_DATA", str(cifar100_dir))
    summary = train(tiny_config.replace(data_dir=None, epochs=1))
    best = Path(summary["run_dir"]) / "best.pt"
    source = torch.load(best, weights_only=True)["data"]["source"]
    assert source == os.path.abspath(cifar100_dir / "cifar-100-python")
    monkeypatch.setenv("CIFARNET_DATA", str(tmp_path / "elsewhere"))  # unset, or changed since
    assert evaluate(best, device="cpu", download=False).images == 200


def test_last_pt_of_an_ema_run_is_evaluated_with_its_ema_weights(tiny_config, cifar100_dir):
    from cifarnet.tasks.evaluation import evaluate
    from cifarnet.training.trainer import train

    run = Path(train(tiny_config.replace(ema_decay=0.9, epochs=1))["run_dir"])
    last = torch.load(run / "last.pt", weights_only=True)
    ema = last["ema_state_dict"]
    assert any(not torch.equal(v, ema[f"module.{k}"]) for k, v in last["state_dict"].items())
    kwargs = {"data_dir": cifar100_dir, "device": "cpu", "precision": "fp32"}
    best, final = evaluate(run / "best.pt", **kwargs), evaluate(run / "last.pt", **kwargs)
    # one epoch: best.pt and last.pt hold the same averaged network, as validation measured it
    assert (final.loss, final.top1) == (best.loss, best.top1)


def test_a_failed_write_changes_none_of_the_four_files(run, cifar100_dir, tmp_path, monkeypatch):
    import errno

    from cifarnet.errors import OutputError
    from cifarnet.io import atomic as checkpoint
    from cifarnet.tasks.evaluation import evaluate

    out = tmp_path / "r.csv"
    kwargs = {"data_dir": cifar100_dir, "device": "cpu", "out": out}
    written = evaluate(run / "best.pt", **kwargs)  # an earlier result set
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert len(before) == 4
    write_temporary = checkpoint._write_temporary

    def full_disk(path, write):  # the heatmap, written last, does not fit
        if path.suffix == ".png":
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_temporary(path, write)

    monkeypatch.setattr(checkpoint, "_write_temporary", full_disk)
    with pytest.raises(OutputError, match=r"r_confusion\.png: No space left on device; none of"):
        evaluate(run / "best.pt", tta=True, force=True, **kwargs)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temporary left
    assert written.tta is False and pd.read_csv(out)["tta"].tolist() == [False]


def test_missing_data_names_every_folder_looked_in(run, tmp_path, monkeypatch):
    from cifarnet.errors import DataError
    from cifarnet.tasks.evaluation import evaluate

    data = tmp_path / "data"  # the folder the run trained from, since moved away
    ckpt = torch.load(run / "best.pt", weights_only=True)
    ckpt["train_config"]["data_dir"] = str(data)
    torch.save(ckpt, tmp_path / "best.pt")
    monkeypatch.setenv("CIFARNET_DATA", str(tmp_path / "cache"))
    with pytest.raises(DataError) as err:
        evaluate(tmp_path / "best.pt", device="cpu", download=False)
    assert f"not found in {tmp_path / 'cache'} (nor in {data}) (downloads are off)" in str(
        err.value
    )
