"""The pixel branch: one network per fold (:func:`train_fold`) and the branch around it (:class:`PixelBranch`).

Pure torch: no MLflow, no files.

The loop reads top to bottom: class-weighted sampling, augmentation (pixel
jitter + Gaussian noise), AdamW with a cosine schedule over a fixed number of
epochs. The last epoch's weights are returned; validation data, when given, is
only scored for the loss curve, never used to pick anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from pixel_cnn.branches.base import Branch, Fitted
from pixel_cnn.vetter.networks import Preset, build_model


@dataclass
class FoldResult:
    """What one trained fold returns.

    Attributes
    ----------
    state_dict : dict[str, torch.Tensor]
        Final weights (CPU tensors).
    history : dict[str, list[float]]
        ``train_loss`` and (when validation data was given) ``val_loss`` per
        epoch, mean binary cross-entropy.
    val_prob : numpy.ndarray or None
        float64 ``(N_val,)`` probability of CONFIRMED for the validation inputs.
    """

    state_dict: dict
    history: dict[str, list[float]] = field(default_factory=dict)
    val_prob: np.ndarray | None = None


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch RNGs and make torch use deterministic kernels."""
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _augment(x: torch.Tensor, jitter: int, noise_sigma: float, gen: torch.Generator,
             n_constant: int = 0) -> torch.Tensor:
    """Shift each image by up to ``jitter`` pixels (edge-replicated) and add noise.

    x: ``(B, C, S, S)`` -> same shape. The last ``n_constant`` channels are
    constant planes (scalar features, see ``pixel_cnn.vetter.representation.phase_image``):
    an edge-replicated shift leaves them as they are, so only the others are
    shifted (same result, less work). Noise goes on every channel.
    """
    if jitter > 0:
        batch, channels, size, _ = x.shape
        moved = channels - n_constant
        padded = F.pad(x[:, :moved], (jitter,) * 4, mode="replicate")  # (B, M, S + 2j, S + 2j)
        offsets = torch.randint(0, 2 * jitter + 1, (batch, 2), generator=gen)
        window = torch.arange(size)
        rows = (offsets[:, 0, None] + window)[:, :, None]               # (B, S, 1)
        cols = (offsets[:, 1, None] + window)[:, None, :]               # (B, 1, S)
        flat = (rows * padded.shape[-1] + cols).reshape(batch, 1, size * size)
        shifted = padded.flatten(2).gather(2, flat.expand(batch, moved, size * size))
        x = torch.cat([shifted.reshape(batch, moved, size, size), x[:, moved:]], dim=1)
    if noise_sigma > 0:  # in place on a fresh batch (an index copy or the shifted one): same values
        x = x.clone() if jitter <= 0 else x
        x += torch.randn(x.shape, generator=gen).mul_(noise_sigma)
    return x


@torch.no_grad()
def predict_proba(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """Probability of CONFIRMED for inputs ``(N, C, S, S)`` float32 -> float64 ``(N,)``."""
    model.eval()
    x = torch.as_tensor(x, dtype=torch.float32)
    logits = [model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.sigmoid(torch.cat(logits)).double().numpy()


def _mean_bce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float(F.binary_cross_entropy_with_logits(model(x), y))


def train_fold(
    x_train: np.ndarray,
    y_train: np.ndarray,
    preset: Preset,
    seed: int,
    x_val: np.ndarray | None = None,
    y_val: np.ndarray | None = None,
    on_epoch=None,
) -> FoldResult:
    """Train a fresh network on one fold's training targets.

    Parameters
    ----------
    x_train : numpy.ndarray
        float32 ``(N, C, S, S)`` model inputs (from
        :func:`pixel_cnn.vetter.representation.build_inputs`).
    y_train : numpy.ndarray
        int ``(N,)``, 1 = CONFIRMED, 0 = FALSE POSITIVE; both classes present.
    preset : Preset
        Architecture and schedule.
    seed : int
        Seeds weights init, sampling order and augmentation.
    x_val, y_val : numpy.ndarray, optional
        Scored after each epoch for ``val_loss`` and at the end for ``val_prob``.
    on_epoch : callable, optional
        ``on_epoch(epoch, {"train_loss": .., "val_loss": ..})`` after each epoch
        (epoch counts from 0); used to stream metrics.

    Raises
    ------
    ValueError
        ``y_train`` lacks a class, or shapes disagree.
    """
    if len(x_train) != len(y_train):
        raise ValueError(f"x_train has {len(x_train)} rows, y_train {len(y_train)}")
    y_train = np.asarray(y_train).astype(np.int64)
    counts = np.bincount(y_train, minlength=2)
    if counts.min() == 0:
        raise ValueError(f"training targets hold one class only (counts {counts.tolist()})")

    seed_everything(seed)
    gen = torch.Generator().manual_seed(seed)
    model = build_model(preset)
    xt = torch.as_tensor(x_train, dtype=torch.float32)
    yt = torch.as_tensor(y_train, dtype=torch.float32)
    has_val = x_val is not None and y_val is not None and len(x_val) > 0
    if has_val:
        xv = torch.as_tensor(x_val, dtype=torch.float32)
        yv = torch.as_tensor(np.asarray(y_val), dtype=torch.float32)

    # Class-weighted sampling: each class drawn with equal probability.
    sample_weights = torch.as_tensor(1.0 / counts[y_train], dtype=torch.double)
    optimizer = torch.optim.AdamW(model.parameters(), lr=preset.lr, weight_decay=preset.weight_decay)
    steps_per_epoch = max(1, -(-len(xt) // preset.batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=preset.epochs * steps_per_epoch)

    history: dict[str, list[float]] = {"train_loss": []}
    if has_val:
        history["val_loss"] = []
    for epoch in range(preset.epochs):
        model.train()
        order = torch.multinomial(sample_weights, len(xt), replacement=True, generator=gen)
        total = 0.0
        for start in range(0, len(order), preset.batch_size):
            idx = order[start:start + preset.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples
                continue
            xb = _augment(xt[idx], preset.jitter, preset.noise_sigma, gen, preset.n_scalars)
            loss = F.binary_cross_entropy_with_logits(model(xb), yt[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(idx)
        history["train_loss"].append(total / len(order))
        if has_val:
            history["val_loss"].append(_mean_bce(model, xv, yv))
        if on_epoch is not None:
            on_epoch(epoch, {k: v[-1] for k, v in history.items()})

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    val_prob = predict_proba(model, xv) if has_val else None
    return FoldResult(state_dict=state, history=history, val_prob=val_prob)


class PixelBranch(Branch):
    """The Pixel-CNN branch: a network of ``preset`` per fit, on the stacks' model inputs.

    Parameters
    ----------
    preset : Preset
        Representation, architecture and schedule (:mod:`pixel_cnn.vetter.networks`).
    inputs : optional float32 ``(N, C, S, S)``: the model inputs already built for the dataset
        (``build_inputs(dataset.stack_list(), preset.representation, preset.image_size)``), so
        that many cvs on one dataset (tuning) build them once. Results are the same either way.
    extra_train : optional Dataset: more labelled targets that join every training side and
        are never scored; those whose kepid is in the cv's dataset are dropped first
        (:func:`extra_training_targets`).

    A fit trains with :func:`train_fold` (seed ``seed``) on ``x[train_idx]`` (plus the extra
    targets) and scores ``x[score_idx]``; ``exclude_kepids`` are never among ``train_idx``.
    """

    name = "pixel"
    answers_alone = True

    def __init__(self, preset: Preset, inputs: np.ndarray | None = None, extra_train=None):
        self.preset = preset
        self._inputs, self._extra = inputs, extra_train
        self.x = self.labels = self.kepids = None
        self.x_extra = self.y_extra = None

    def prepare(self, dataset) -> None:
        from pixel_cnn.vetter.representation import build_inputs

        self.labels, self.kepids = dataset.labels, dataset.kepids
        if self._inputs is None:
            self.x = build_inputs(dataset.stack_list(), self.preset.representation, self.preset.image_size)
        else:
            self.x = np.asarray(self._inputs, dtype=np.float32)
            expected = (len(self.labels), self.preset.in_channels, self.preset.image_size, self.preset.image_size)
            if self.x.shape != expected:
                raise ValueError(f"inputs have shape {self.x.shape}; preset {self.preset.name!r} on this "
                                 f"dataset needs {expected}")
        extra = extra_training_targets(dataset, self._extra)
        if extra is not None:
            self.x_extra = build_inputs(extra.stack_list(), self.preset.representation, self.preset.image_size)
            self.y_extra = extra.labels

    @property
    def n_extra(self) -> int:
        return 0 if self.y_extra is None else len(self.y_extra)

    def fit(self, train_idx, score_idx, exclude_kepids, seed, on_epoch=None) -> Fitted:
        assert not np.isin(self.kepids[train_idx], exclude_kepids).any(), "an excluded star is on the training side"
        x_train, y_train = with_extra(self.x[train_idx], self.labels[train_idx], self.x_extra, self.y_extra)
        result = train_fold(x_train, y_train, self.preset, seed=seed, x_val=self.x[score_idx],
                            y_val=self.labels[score_idx], on_epoch=on_epoch)
        return Fitted(prob=result.val_prob, model=result.state_dict, history=result.history,
                      training_kepids=self.kepids[train_idx])

    def explain(self, fitted: Fitted, idx) -> np.ndarray:
        """captum Integrated Gradients of the fitted network on rows ``idx``, the inputs' shape
        (:func:`pixel_cnn.drawing.explain.integrated_gradients`)."""
        from pixel_cnn.drawing.explain import integrated_gradients

        return integrated_gradients(self.preset, fitted.model, self.x[idx])

    def inputs(self, idx) -> np.ndarray:
        """The model inputs ``(len(idx), C, S, S)`` of rows ``idx`` (for attributions and sheets)."""
        return self.x[idx]

    def final(self, outer: list[Fitted], seed: int) -> list[dict]:
        """The served pixel branch: the ensemble of the outer folds' networks (their state dicts)."""
        return [f.model for f in outer]

    def describe(self) -> dict:
        return {"name": self.name, "preset": self.preset.to_dict()}


def with_extra(x: np.ndarray, y: np.ndarray, x_extra: np.ndarray | None, y_extra: np.ndarray | None):
    """``(x, y)`` with the extra training-only rows appended (unchanged when there are none)."""
    if x_extra is None or len(x_extra) == 0:
        return x, y
    return np.concatenate([x, x_extra]), np.concatenate([y, np.asarray(y_extra, dtype=y.dtype)])


def extra_training_targets(dataset, extra):
    """The targets of ``extra`` whose kepid is not in ``dataset`` (None if none or no ``extra``).

    Used to train on labelled stacks beyond the benchmark: they join training sides only, so
    removing every benchmark star from them keeps each star on one side of every split.
    """
    from pixel_cnn.stacks.dataset import Dataset

    if extra is None:
        return None
    keep = ~np.isin(extra.kepids, dataset.kepids)
    if not keep.any():
        return None
    manifest = extra.manifest[keep].reset_index(drop=True)
    return Dataset(stacks={int(k): extra.stacks[int(k)] for k in manifest["kepid"]}, manifest=manifest)
