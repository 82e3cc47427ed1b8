"""Progress where a command can sit silent for long: each benchmark row is announced before its
warm-up (which can take minutes on a slow CPU), and train's final test pass reports the images
it has evaluated."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from cifarnet.cli import app
from cifarnet.config.settings import TrainConfig
from cifarnet.training.callbacks import TrainCallbacks

runner = CliRunner()


def test_benchmark_announces_each_row_and_says_seconds_is_a_minimum(tmp_path: Path) -> None:
    args = ["benchmark", "--model", "resnet", "--device", "cpu", "--batch-size", "2"]
    result = runner.invoke(app, [*args, "--seconds", "0.01", "--no-train", "--no-onnx"])
    assert result.exit_code == 0, result.output
    assert "inference, eager, fp32: warming up, then timing ..." in result.stderr
    help_text = runner.invoke(app, ["benchmark", "--help"], env={"COLUMNS": "200"}).stdout
    assert "Minimum timed seconds per row" in help_text and "can take minutes" in help_text


class _TestProgress(TrainCallbacks):
    def __init__(self) -> None:
        self.reports: list[tuple[int, int]] = []
        self.status: list[str] = []

    def on_status(self, message: str) -> None:
        self.status.append(message)

    def on_test_progress(self, images_done: int, images: int) -> None:
        self.reports.append((images_done, images))


def test_the_final_test_pass_reports_its_progress(tiny_config: TrainConfig) -> None:
    from cifarnet.training.trainer import train

    seen = _TestProgress()
    train(tiny_config.replace(epochs=1, eval_batch_size=64), callbacks=seen)
    assert "evaluating on the test set (200 images)" in seen.status
    assert seen.reports == [(64, 200), (128, 200), (192, 200), (200, 200)]


def test_the_terminal_shows_a_bar_for_the_test_pass() -> None:
    import io

    from rich.console import Console

    from cifarnet.cli.progress import RichCallbacks

    buffer = io.StringIO()
    callbacks = RichCallbacks(Console(file=buffer, force_terminal=True, width=100))
    callbacks.progress.start()
    callbacks.on_test_progress(64, 200)
    callbacks.on_test_progress(200, 200)
    callbacks.progress.refresh()
    callbacks.close()
    assert "test" in buffer.getvalue() and "200/200" in buffer.getvalue()
