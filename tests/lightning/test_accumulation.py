"""Modality-aware accumulation: a modality switch mid-window keeps every batch's gradient, checked on the
parameters against a hand-computed update (each window's step = the mean of its batches' gradients)."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch import Tensor, nn
from torch.utils.data import DataLoader

from x2sam_lightning.lightning.accumulation import ModalityAccumulation, check_trainer_config

DIM = 3


@dataclass
class ToyBatch:
    x: Tensor  # [B, DIM]
    y: Tensor  # [B]
    modality: str


def toy_batches(modalities: str, seed: int = 0) -> list[ToyBatch]:
    """``"VVI..."``: a video batch of 1 sample, an image batch of 4 (as base 1 x multiplier 4)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for m in modalities:
        n = 1 if m == "V" else 4
        out.append(ToyBatch(torch.randn(n, DIM, generator=gen), torch.randn(n, generator=gen), _MODALITY[m]))
    return out


_MODALITY = {"V": "video", "I": "image"}


def toy_loss(linear: nn.Linear, batch: ToyBatch) -> Tensor:
    return ((linear(batch.x).squeeze(-1) - batch.y) ** 2).mean()


def lr_factor(step: int) -> float:
    return 1.0 / (1 + step)  # a schedule that changes every optimiser step


class ToyModule(L.LightningModule):
    """The contract both LightningModules follow (manual optimisation through ModalityAccumulation)."""

    def __init__(self, accumulation: ModalityAccumulation, lr: float = 0.1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(DIM, 1)
        self.lr = lr
        self.automatic_optimization = False
        self.accumulation = accumulation

    def training_step(self, batch: ToyBatch, batch_idx: int) -> Tensor:
        loss = self.accumulation.train_step(self, batch, batch_idx, lambda: toy_loss(self.linear, batch))
        self.log("train/loss", loss, batch_size=len(batch.y))
        return loss

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self.accumulation.on_train_batch_start(self)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.accumulation.on_train_batch_end(self)

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def _loader(batches: list[ToyBatch]) -> DataLoader:
    return DataLoader(batches, batch_size=None, collate_fn=lambda b: b)


class BlindData(L.LightningDataModule):
    """Batches in a fixed order; no look-ahead."""

    def __init__(self, batches: list[ToyBatch]) -> None:
        super().__init__()
        self.batches = batches

    def train_dataloader(self) -> DataLoader:
        return _loader(self.batches)


class LookaheadData(BlindData):
    """Batches in a fixed order, and their modalities ahead (as SegDataModule gives them)."""

    def __init__(self, batches: list[ToyBatch]) -> None:
        super().__init__(batches)
        self.consumed = 0

    def on_before_batch_transfer(self, batch, dataloader_idx):
        if self.trainer.training:
            self.consumed += 1
        return batch

    def upcoming_train_modalities(self, count: int) -> list[str]:
        return [b.modality for b in self.batches[self.consumed : self.consumed + count]]


def reference_update(batches: list[ToyBatch], windows: list[int], clip: float | None, lr: float = 0.1):
    """Plain PyTorch: each window's step is the mean of its batches' gradients at the window's start,
    clipped, times the scheduled learning rate."""
    torch.manual_seed(0)
    linear = nn.Linear(DIM, 1)
    start = 0
    for step, length in enumerate(windows):
        grads = [torch.zeros_like(p) for p in linear.parameters()]
        for batch in batches[start : start + length]:
            for g, gb in zip(grads, torch.autograd.grad(toy_loss(linear, batch), list(linear.parameters()))):
                g += gb / length
        if clip:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
            grads = [g * min(1.0, clip / (float(norm) + 1e-6)) for g in grads]
        with torch.no_grad():
            for p, g in zip(linear.parameters(), grads):
                p -= lr * lr_factor(step) * g
        start += length
    assert start == len(batches)
    return linear


def fit(module: ToyModule, data: L.LightningDataModule, tmp_path, **trainer_kwargs) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=CSVLogger(tmp_path),
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(module, datamodule=data)
    return trainer


# V V | I | V V V V | V | I | V V   (video windows of 4, cut by a switch and by the end of the epoch)
MODALITIES = "VVIVVVVVIVV"
WINDOWS = [2, 1, 4, 1, 1, 2]


@pytest.mark.parametrize("lookahead", [True, False])
@pytest.mark.parametrize("clip", [None, 0.05])
def test_a_modality_switch_mid_window_keeps_every_batch_gradient(tmp_path, lookahead, clip):
    batches = toy_batches(MODALITIES)
    module = ToyModule(ModalityAccumulation({"image": 1, "video": 4}, gradient_clip_val=clip))
    trainer = fit(module, (LookaheadData if lookahead else BlindData)(batches), tmp_path)
    expected = reference_update(batches, WINDOWS, clip)
    torch.testing.assert_close(module.linear.weight, expected.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(module.linear.bias, expected.bias, rtol=1e-5, atol=1e-6)
    # One optimiser step per window, the schedule stepped with it.
    assert trainer.global_step == len(WINDOWS)
    assert module.lr_schedulers().last_epoch == len(WINDOWS)


def test_dropping_the_cut_window_would_give_another_update(tmp_path):
    """The check above can tell: the authors' behaviour (a cut window dropped) moves the parameters
    elsewhere."""
    batches = toy_batches(MODALITIES)
    module = ToyModule(ModalityAccumulation({"image": 1, "video": 4}))
    fit(module, LookaheadData(batches), tmp_path)
    kept = [b for i, b in enumerate(batches) if i not in (0, 1, 7, 9, 10)]  # the cut windows' batches
    dropped = reference_update(kept, [1, 4, 1], None)
    assert not torch.allclose(module.linear.weight, dropped.weight, atol=1e-4)


def test_logged_step_counts_optimiser_steps(tmp_path):
    batches = toy_batches(MODALITIES)
    module = ToyModule(ModalityAccumulation({"image": 1, "video": 4}))
    trainer = fit(module, LookaheadData(batches), tmp_path)
    with open(Path(trainer.logger.log_dir) / "metrics.csv") as file:
        rows = list(csv.DictReader(file))
    steps = [int(r["step"]) for r in rows if r.get("train/loss")]
    # Each batch is logged at the number of optimiser steps taken before it (Lightning's convention
    # for its own accumulation), not at its batch index.
    before = [0, 0, 1, 2, 2, 2, 2, 3, 4, 5, 5]
    assert steps == before


def test_image_only_with_accumulation_one_steps_every_batch(tmp_path):
    batches = toy_batches("IIII")
    module = ToyModule(ModalityAccumulation({"image": 1, "video": 4}))
    trainer = fit(module, BlindData(batches), tmp_path)
    expected = reference_update(batches, [1, 1, 1, 1], None)
    torch.testing.assert_close(module.linear.weight, expected.weight)
    assert trainer.global_step == 4


def test_max_steps_counts_optimiser_steps(tmp_path):
    batches = toy_batches("VVVVVVVVVVVV")
    module = ToyModule(ModalityAccumulation({"image": 1, "video": 4}))
    trainer = fit(module, LookaheadData(batches), tmp_path, max_steps=2)
    assert trainer.global_step == 2
    torch.testing.assert_close(module.linear.weight, reference_update(batches[:8], [4, 4], None).weight)


class StopAfter(L.Callback):
    """Stop the fit after ``n`` batches (a run interrupted inside a window)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 == self.n:
            trainer.should_stop = True


def test_resume_mid_window_gives_the_uninterrupted_update(tmp_path):
    """A checkpoint written inside a window holds the window and its gradient so far."""
    batches = toy_batches("VVVVIV")
    module = ToyModule(ModalityAccumulation({"image": 1, "video": 4}))
    data = LookaheadData(batches)
    fit(module, data, tmp_path / "a", callbacks=[StopAfter(2)])  # stops inside the first window
    state = {"accumulation": module.accumulation.state_dict(module), "weights": module.state_dict()}
    assert state["accumulation"]["window"] == {"modality": "video", "length": 4, "done": 2, "exact": True}

    resumed = ToyModule(ModalityAccumulation({"image": 1, "video": 4}))
    resumed.load_state_dict(state["weights"])
    resumed.accumulation.load_state_dict(state["accumulation"])
    rest = LookaheadData(batches[2:])
    trainer = fit(resumed, rest, tmp_path / "b")
    assert trainer.global_step == 3  # the restored window, the image, the last video
    # No step was taken before the interruption, so the schedule is at step 0 in both runs.
    expected = reference_update(batches, [4, 1, 1], None)
    torch.testing.assert_close(resumed.linear.weight, expected.weight, rtol=1e-5, atol=1e-6)


def test_trainer_options_that_manual_optimisation_replaces_are_refused():
    with pytest.raises(ValueError, match="model.accumulation.gradient_clip_val"):
        check_trainer_config({"gradient_clip_val": 1.0})
    with pytest.raises(ValueError, match="model.accumulation.steps"):
        check_trainer_config({"accumulate_grad_batches": 4})
    check_trainer_config({"gradient_clip_val": None, "accumulate_grad_batches": 1})


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="video"):
        ModalityAccumulation({"image": 1, "video": 0})
    with pytest.raises(ValueError, match="gradient_clip_algorithm"):
        ModalityAccumulation(gradient_clip_algorithm="max")


class RankData(LookaheadData):
    """Each rank its own samples, every rank the same modality sequence (as the mixer draws it)."""

    def __init__(self, modalities: str) -> None:
        super().__init__([])
        self.modalities = modalities

    def train_dataloader(self) -> DataLoader:
        self.batches = toy_batches(self.modalities, seed=self.trainer.global_rank)
        return _loader(self.batches)


@pytest.mark.slow  # two spawned processes: ~40 s alone, minutes on a loaded 2-core machine
def test_two_process_ddp_skips_the_all_reduce_inside_a_window_and_gets_the_same_update(tmp_path):
    """Accumulating batches run under ``no_sync``; the window's last batch syncs the summed gradient:
    the update is the mean over ranks of each rank's window mean."""
    module = ToyModule(ModalityAccumulation({"image": 1, "video": 4}))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=RankData(MODALITIES))
    per_rank = [reference_update(toy_batches(MODALITIES, seed=r), WINDOWS, None) for r in range(2)]
    # One SGD step is linear in the gradient, but later windows start from the averaged parameters:
    # replay the averaged update window by window.
    expected = ddp_reference([toy_batches(MODALITIES, seed=r) for r in range(2)], WINDOWS)
    torch.testing.assert_close(module.linear.weight, expected.weight, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(module.linear.weight, per_rank[0].weight, atol=1e-4)


def ddp_reference(rank_batches: list[list[ToyBatch]], windows: list[int], lr: float = 0.1) -> nn.Linear:
    torch.manual_seed(0)
    linear = nn.Linear(DIM, 1)
    start = 0
    for step, length in enumerate(windows):
        grads = [torch.zeros_like(p) for p in linear.parameters()]
        for batches in rank_batches:
            for batch in batches[start : start + length]:
                loss = toy_loss(linear, batch)
                for g, gb in zip(grads, torch.autograd.grad(loss, list(linear.parameters()))):
                    g += gb / length / len(rank_batches)
        with torch.no_grad():
            for p, g in zip(linear.parameters(), grads):
                p -= lr * lr_factor(step) * g
        start += length
    return linear


def test_ddp_all_reduces_a_part_the_last_batch_of_a_window_leaves_unused():
    """What the ddp presets rely on (``find_unused_parameters``): a part used by an accumulating batch of a
    window (under ``no_sync``) and unused by its last one (a chat batch) is still all-reduced at the sync:
    DDP remembers parameters used anywhere in the window. Ranks keep equal gradients, so equal weights."""
    from helpers.ddp_parts import window_ending_in_a_chat_batch
    from helpers.distributed import run_distributed

    seg, shared = zip(*run_distributed(window_ending_in_a_chat_batch))
    assert seg[0] == seg[1] == [1.5, 1.5]  # the mean of rank 0's 1 and rank 1's 2
    assert shared[0] == shared[1] == [2.5, 2.5]
