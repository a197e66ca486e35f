"""The progress display: a bar redrawn in place on a terminal, plain lines otherwise."""

from __future__ import annotations

import io

from optiplug.training.loop import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _record(epoch: int) -> dict[str, object]:
    return {"epoch": epoch, "train_loss": 0.5 / epoch, "val_loss": 0.25,
            "val_accuracy": 0.875}


def test_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(2, stream=stream)
    progress.update(_record(1), elapsed=1.0)
    progress.update(_record(2), elapsed=2.5)
    progress.close()
    assert stream.getvalue().splitlines() == [
        "epoch 1/2  loss   0.5000  val_loss   0.2500  val_acc 87.50%     1.0s",
        "epoch 2/2  loss   0.2500  val_loss   0.2500  val_acc 87.50%     2.5s"]


def test_only_the_last_line_per_run_when_asked() -> None:
    stream = io.StringIO()
    progress = Progress(2, label="adam", stream=stream, every_epoch=False)
    progress.update(_record(1), elapsed=1.0)
    progress.update(_record(2), elapsed=2.0)
    assert stream.getvalue().splitlines() == [
        "adam  epoch 2/2  loss   0.2500  val_loss   0.2500  val_acc 87.50%     2.0s"]


def test_a_bar_redrawn_in_place_on_a_terminal() -> None:
    stream = _Terminal()
    progress = Progress(4, stream=stream)
    progress.update(_record(1), elapsed=1.0)
    progress.update(_record(2), elapsed=2.0)
    progress.close()
    text = stream.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    assert "[#####...............] epoch 1/4" in text
    assert "[##########..........] epoch 2/4" in text
