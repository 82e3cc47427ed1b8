"""The GPU check's scripts: the dataset split and join, the check script's syntax and options,
and the summary of a partial output folder."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

# the check run by this interpreter (its default, the machine's python3, may lack torch)
WITH_THIS_PYTHON = {**os.environ, "PYTHON": sys.executable}

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _summary(out: Path) -> str:
    """What gpu_summary.py prints for the check's output folder `out`."""
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_summary.py"), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout


@needs_bash
@pytest.mark.parametrize("through_link", [False, True])
def test_split_dataset_parts_join_to_the_archive(tmp_path, through_link: bool) -> None:
    archive = tmp_path / "a.tgz"
    archive.write_bytes(bytes(range(256)) * 9000)  # 2.2 MiB
    if through_link:  # a link to a shared copy of the archive is split like the file itself
        link = tmp_path / "link.tgz"
        link.symlink_to(archive)
    out = tmp_path / "parts"
    script = BENCHMARKS / "split_dataset.sh"
    given = link if through_link else archive
    subprocess.run(["bash", str(script), str(given), str(out), "1"], check=True)
    parts = sorted(out.glob("part.*"))
    assert [p.name for p in parts] == ["part.1", "part.2", "part.3"]
    joined = b"".join(p.read_bytes() for p in parts)
    assert joined == archive.read_bytes()
    digest = hashlib.sha256(joined).hexdigest()
    assert (out / "parts.sha256").read_text().strip() == digest


@needs_bash
def test_gpu_check_script_parses_and_refuses_missing_data(tmp_path) -> None:
    script = BENCHMARKS / "gpu_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    dry_run = [
        *("bash", str(script), "--dry-run", "--data", str(tmp_path / "none")),
        *("--work", str(tmp_path / "w"), str(tmp_path / "o")),
    ]
    proc = subprocess.run(dry_run, capture_output=True, text=True, env=WITH_THIS_PYTHON)
    assert proc.returncode == 1 and "no cifar-100-python/" in proc.stdout
    # an interpreter without torch is named in one line before any step starts
    without_torch = {**os.environ, "PYTHON": "true-but-not-python"}
    dry_run[-1] = str(tmp_path / "o2")
    proc = subprocess.run(dry_run, capture_output=True, text=True, env=without_torch)
    assert proc.returncode == 1 and "cannot import torch" in proc.stdout
    assert "START" not in (tmp_path / "o2" / "log.txt").read_text()
    proc = subprocess.run(["bash", str(script), "--bogus"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown option --bogus" in proc.stderr


@needs_bash
def test_gpu_check_runs_steps_in_the_order_given_and_packs_its_folder(
    tmp_path, cifar100_dir: Path
) -> None:
    script = BENCHMARKS / "gpu_check.sh"
    out, pack = tmp_path / "out", tmp_path / "pack"
    command = [
        *("bash", str(script), "--dry-run", "--data", str(cifar100_dir)),
        *("--work", str(tmp_path / "w"), "--pack", str(pack), "--label", "abc1234"),
    ]
    proc = subprocess.run(
        [*command, "--steps", "refloop,env", str(out)],
        capture_output=True,
        text=True,
        env=WITH_THIS_PYTHON,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = (out / "log.txt").read_text()
    assert log.index("SKIP refloop") < log.index("label: abc1234")
    # whatever the step count, the packed folder is two files: for a machine that returns few
    assert sorted(p.name for p in pack.iterdir()) == ["check.tgz", "summary.md"]
    with tarfile.open(pack / "check.tgz") as packed:
        assert {"out/env.txt", "out/log.txt", "out/summary.md"} <= set(packed.getnames())
    proc = subprocess.run(
        [*command, "--steps", "env,bogus", str(out)], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "unknown step 'bogus'" in proc.stderr


def test_summary_of_a_check_stopped_during_the_70_epoch_run(tmp_path) -> None:
    (tmp_path / "steps.tsv").write_text(
        "step\trc\tseconds\nrefloop\t0\t20.0\ndefault70\t124\t200\n"
    )
    (tmp_path / "refloop.json").write_text(json.dumps({"train_img_per_s": 1000.0}))
    header = "epoch,val_top1,epoch_seconds,images_per_second\n"
    runs = [
        "### reference/metrics.csv",
        header + "1,10,60,700\n2,20,3,12000",
        "### default70/config.json",
        json.dumps({"epochs": 70}),
        "### default70/metrics.csv",
        header + "1,14,60,700\n2,24,2,8000\n3,30,2,8000",
    ]
    (tmp_path / "runs.txt").write_text("\n".join(runs) + "\n")
    (tmp_path / "pytest.txt").write_text("FAILED tests/x.py::t - boom\n1 failed, 9 passed\n")
    (tmp_path / "cudatests.txt").write_text("12 passed in 30.1s\n")
    text = _summary(tmp_path)
    assert "speed-up 12.00x (meets the 10x target)" in text
    assert "stopped after 3 epochs" in text and "about 140 s of training" in text
    assert "- FAILED tests/x.py::t - boom" in text and "- 1 failed, 9 passed" in text
    assert "## CUDA tests\n- 12 passed in 30.1s" in text


def test_summary_of_a_rerun_stopped_early_does_not_show_the_earlier_runs_result(tmp_path) -> None:
    first = {"run_dir": "runs/speedrun-0", "test_top1": 73.0, "train_seconds": 4.0}
    runs = [
        "### speedrun-0/",
        "### speedrun-0/summary.json",
        json.dumps(first),
        "### speedrun-0/",  # the rerun, stopped before it wrote summary.json
        "### speedrun-0/metrics.csv",
        "epoch,val_top1,epoch_seconds,images_per_second\n1,10,60,700",
    ]
    (tmp_path / "runs.txt").write_text("\n".join(runs) + "\n")
    assert "73.00%" not in _summary(tmp_path)


def test_summary_of_speedrun_seeds_gives_single_view_and_tta_means_apart(tmp_path) -> None:
    def run(seed: int, top1: float) -> list[str]:
        summary = {"run_dir": f"runs/speedrun-{seed}", "test_top1": top1, "train_seconds": 4.0}
        return [f"### speedrun-{seed}/summary.json", json.dumps(summary)]

    (tmp_path / "runs.txt").write_text("\n".join([*run(0, 73.0), *run(1, 74.0)]) + "\n")
    # seed 0 has its TTA evaluation, seed 1's did not happen (the deadline came)
    (tmp_path / "speedrun_tta_0.csv").write_text("checkpoint,top1\nbest.pt,75.5\n")
    text = _summary(tmp_path)
    assert "- seed 0: 73.00% single view, 75.50% with 6-view TTA, 4.00 s training" in text
    assert "- seed 1: 74.00% single view, 4.00 s training" in text
    assert (
        "- mean 73.50% single view (2 seeds), 75.50% with 6-view TTA (1 seeds); slowest 4.00 s"
        " (targets >= 75%, <= 5 s)"
    ) in text
