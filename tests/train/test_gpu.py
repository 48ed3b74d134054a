"""Training on CUDA with mixed precision. Marked gpu: skipped, with the reason, where no NVIDIA GPU is
visible (tests/conftest.py); run them on a GPU node (the device machine)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="training needs the train extra")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from engines.checkpoint import read_checkpoint  # noqa: E402
from train.data import human_budget, split_by_dialogue  # noqa: E402
from train.errors import TrainError  # noqa: E402
from train.loop import FitConfig, Trainer  # noqa: E402

from .test_loop import synthetic, tiny_student  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    data = synthetic(12)
    split = split_by_dialogue(data, dev_fraction=0.2, seed=0)
    with pytest.raises(TrainError, match="no CUDA GPU"):
        Trainer(data, split, split.train, FitConfig(device="cuda", max_length=16), model=tiny_student())


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("method", ["method", "distill", "ce_human"])
def test_mixed_precision_fit_on_cuda_learns_and_reloads_on_cpu(method: str, tmp_path: Path) -> None:
    """Both stages run on CUDA under autocast with a gradient scaler: the student learns the separable
    task, its checkpoint holds fp32 weights, and the checkpoint read on CPU predicts what it predicted
    on the GPU."""
    data = synthetic()
    split = split_by_dialogue(data, dev_fraction=0.2, seed=0)
    config = FitConfig(
        method=method,
        pretrain_epochs=3,
        finetune_epochs=6,
        lr=3e-3,
        head_lr=3e-3,
        batch_size=16,
        max_length=16,
        tau=0.2,
        patience=3,
        device="cuda",
    )
    trainer = Trainer(data, split, human_budget(split.train, 0.3, seed=0), config, model=tiny_student())
    result = trainer.fit(tmp_path / "ckpt")
    assert next(trainer.model.parameters()).device.type == "cuda"  # back on its device after writing
    test = trainer.evaluate(split.test)
    assert test["sentiment/accuracy"] > 0.6, (method, test)
    assert result.history
    assert all(math.isfinite(row["train_loss"]) for row in result.history)
    _, on_gpu = trainer.predict(split.test)

    _, model = read_checkpoint(result.checkpoint)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    cpu = Trainer(data, split, split.train, FitConfig(method=method, max_length=16), model=model)
    _, on_cpu = cpu.predict(split.test)
    assert np.abs(on_gpu["sentiment"] - on_cpu["sentiment"]).max() < 1e-3
    assert (on_gpu["sentiment"].argmax(1) == on_cpu["sentiment"].argmax(1)).all()
