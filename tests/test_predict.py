"""cifarnet predict: a folder of generated images in odd modes and sizes plus broken files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from tiny_run import trained_run
from typer.testing import CliRunner

from cifarnet.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory, cifar100_dir) -> Path:
    return trained_run(tmp_path_factory, cifar100_dir)


def _save(path: Path, im: Image.Image, **params: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, **params)


@pytest.fixture
def photos(tmp_path) -> Path:
    """photos/ with 9 readable images of many modes and sizes (some suffixes upper-case, one in a
    subfolder), 3 broken image files and a text file that a folder search skips."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    noise = Image.fromarray(rng.integers(0, 256, (300, 500, 3), dtype=np.uint8))
    _save(root / "a_big.jpg", noise, quality=90)
    _save(root / "b_rgba.PNG", Image.new("RGBA", (50, 20), (10, 200, 30, 128)))
    _save(root / "c_gray.bmp", Image.new("L", (7, 300), 90))
    palette = Image.new("P", (33, 31), 1)
    palette.putpalette([0, 0, 0, 250, 5, 5])
    _save(root / "d_palette.gif", palette)
    _save(root / "e_cmyk.TIFF", Image.new("CMYK", (40, 40), (0, 255, 255, 0)))
    _save(root / "f_16bit.png", Image.fromarray(np.full((12, 9), 40000, np.uint16)))
    _save(root / "g_tiny.webp", Image.new("RGB", (1, 1), (1, 2, 3)))
    _save(root / "h_bilevel.png", Image.new("1", (32, 32), 1))
    _save(root / "sub" / "i_exact.jpeg", Image.new("RGB", (32, 32), (120, 60, 30)))
    full = root / "a_big.jpg"
    (root / "x_truncated.jpg").write_bytes(full.read_bytes()[: full.stat().st_size // 3])
    (root / "y_text.png").write_text("this is not a PNG\n")
    (root / "z_empty.gif").write_bytes(b"")
    (root / "notes.txt").write_text("skipped by the folder search")
    return root


GOOD = ["a_big.jpg", "b_rgba.PNG", "c_gray.bmp", "d_palette.gif", "e_cmyk.TIFF"]
GOOD += ["f_16bit.png", "g_tiny.webp", "h_bilevel.png", os.path.join("sub", "i_exact.jpeg")]
BROKEN = {
    "x_truncated.jpg": "truncated image",
    "y_text.png": "not an image file (PNG, JPEG, BMP, GIF, WebP or TIFF)",
    "z_empty.gif": "empty file",
}


def _args(run: Path) -> list[str]:
    return ["--model", str(run / "best.pt"), "--device", "cpu", "--precision", "fp32"]


def test_folder_of_odd_images_and_broken_files(run, photos, tmp_path):
    out = tmp_path / "predictions.csv"
    missing = str(tmp_path / "nothing-*.png")
    result = runner.invoke(
        app, ["predict", str(photos), missing, *_args(run), "--topk", "3", "--out", str(out)]
    )
    assert result.exit_code == 1  # some inputs failed ...
    assert "4 of 13 inputs failed" in result.output
    rows = pd.read_csv(out, keep_default_na=False)  # ... and every input still has its row
    assert list(rows.columns) == ["path", "label", "superclass", "probability", "topk", "error"]
    names = sorted([*GOOD, *BROKEN])
    assert rows["path"].tolist() == [str(photos / n) for n in names] + [missing]
    by_name = {
        os.path.relpath(p, photos): r for p, r in zip(rows["path"], rows.itertuples(), strict=True)
    }
    for name in GOOD:
        row = by_name[name]
        assert row.error == "", name
        assert row.label.startswith("class_")
        assert row.superclass == f"super_{int(row.label[6:]) % 20:02d}"
        top = [part.rsplit(" ", 1) for part in row.topk.split("; ")]
        assert len(top) == 3 and top[0][0] == row.label
        probabilities = [float(p) for _, p in top]
        assert probabilities == sorted(probabilities, reverse=True)
        assert 0 < probabilities[-1] <= float(row.probability) <= 1
    for name, error in BROKEN.items():
        row = by_name[name]
        assert (row.error, row.label, row.probability, row.topk) == (error, "", "", "")
    assert rows["error"].iloc[-1] == f"no such file, folder or matching pattern: {missing}"
    assert "notes.txt" not in " ".join(rows["path"])


def test_predictions_equal_the_model_on_the_resized_pixels(run, photos):
    from cifarnet.io.checkpoint import load_checkpoint, load_model
    from cifarnet.tasks.images import load_image
    from cifarnet.tasks.prediction import predict

    result = predict(
        [photos / "a_big.jpg", photos / "c_gray.bmp"],
        run / "best.pt",
        topk=100,
        resize="letterbox",
        device="cpu",
        precision="fp32",
    )
    ckpt = load_checkpoint(run / "best.pt")
    net = load_model(ckpt).eval()
    mean = torch.tensor(ckpt["data"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(ckpt["data"]["std"]).view(1, 3, 1, 1)
    for item in result.items:
        pixels = load_image(item.path, resize="letterbox").pixels  # (32, 32, 3) uint8
        x = torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            p = net((x - mean) / std).softmax(1)[0]
        classes = ckpt["data"]["classes"]
        got = torch.tensor([item.probabilities[item.labels.index(c)] for c in classes])
        assert torch.allclose(got, p, atol=1e-6)


def test_batching_does_not_change_results_or_order(run, photos):
    from cifarnet.tasks.prediction import predict

    sources = [photos, photos / "y_text.png", photos / "a_big.jpg"]  # named twice: listed once
    calls = []
    one = predict(
        sources,
        run / "best.pt",
        batch_size=1,
        device="cpu",
        precision="fp32",
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(i, 12) for i in range(1, 13)]  # one per input, failed ones included
    many = predict(
        sources, run / "best.pt", batch_size=256, workers=1, device="cpu", precision="fp32"
    )
    assert len(one.items) == len(many.items) == 12
    assert [p.path for p in one.items] == [p.path for p in many.items]
    for a, b in zip(one.items, many.items, strict=True):
        assert (a.labels, a.error) == (b.labels, b.error)
        assert np.allclose(a.probabilities, b.probabilities, atol=1e-6)


def test_one_source_may_be_given_without_a_list(run, photos):
    from cifarnet.tasks.prediction import predict

    listed = predict([photos / "sub"], run / "best.pt", device="cpu", precision="fp32")
    for source in (photos / "sub", str(photos / "sub")):  # not read letter by letter
        alone = predict(source, run / "best.pt", device="cpu", precision="fp32")
        assert [p.path for p in alone.items] == [p.path for p in listed.items]
        assert len(alone.items) > 0 and all(p.error == "" for p in alone.items)


def test_all_good_exits_zero_and_refuses_to_overwrite(run, photos, tmp_path):
    out = tmp_path / "p.csv"
    args = ["predict", str(photos / "*.PNG"), str(photos / "sub"), *_args(run), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(out)) == 2
    assert "2 predicted, 0 failed" in result.output

    again = runner.invoke(app, args)
    assert again.exit_code == 1
    assert "already exists; pass --force" in again.output
    assert runner.invoke(app, [*args, "--force"]).exit_code == 0


def test_a_file_name_that_is_not_utf8_still_gets_its_row(run, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9.png")  # Latin-1 bytes: not valid UTF-8
    _save(folder / name, Image.new("RGB", (8, 8), (200, 30, 30)))
    out = tmp_path / "p.csv"
    result = runner.invoke(app, ["predict", str(folder), *_args(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert b"caf\xe9.png" in out.read_bytes()  # the row names the file by its own bytes


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--resize", "squash"], "unknown --resize 'squash'"),
        (["--topk", "0"], "--topk must be a positive integer"),
        (["--workers", "-3"], "--workers must be 0 (automatic) or more, got -3"),
        (["--out", "predictions.json"], "give a .csv file name"),
        (["--device", "CPU"], "unknown device 'CPU'"),
        (["--precision", "fp9"], "unknown precision 'fp9'"),
    ],
)
def test_bad_options_are_one_line(run, photos, extra, message):
    result = runner.invoke(app, ["predict", str(photos), *_args(run), *extra])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output


def test_piped_output_keeps_each_row_on_one_line_and_lists_the_whole_top_k(run, tmp_path):
    deep = tmp_path / ("a-folder-name-long-enough-to-push-the-row-past-eighty-columns" * 2)
    _save(deep / "picture.png", Image.new("RGB", (32, 32), (200, 10, 10)))
    result = runner.invoke(app, ["predict", str(deep), *_args(run), "--topk", "3"])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if "picture.png" in line)
    assert str(deep / "picture.png") in row  # not folded at 80 columns: grep finds it whole
    assert "next 2" in result.stdout  # the label column has the first class, this the others
    assert row.count("%") == 3  # the top class's probability, and the 2 runners-up
    one = runner.invoke(app, ["predict", str(deep), *_args(run), "--topk", "1"])
    assert "next" not in one.stdout


def test_topk_above_the_class_count_lists_all_classes_with_a_warning(run, photos):
    from cifarnet.tasks.prediction import predict

    with pytest.warns(UserWarning, match="--topk 101 is more than the model's 100 classes"):
        result = predict([photos / "a_big.jpg"], run / "best.pt", topk=101, device="cpu")
    assert result.topk == 100 and len(result.items[0].labels) == 100
