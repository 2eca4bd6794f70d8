"""Named presets (frozen dataclasses) and the networks they build.

A preset fixes everything a cv run depends on besides data and seed: input
representation, architecture and training schedule. Look one up with
:func:`get_preset`; the resolved preset is logged with every run and saved
inside every model artifact.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from pixel_cnn.representation import REPRESENTATION_CHANNELS, REPRESENTATION_SCALARS


@dataclass(frozen=True)
class Preset:
    """A complete model + training configuration.

    Attributes
    ----------
    name : str
    representation : str
        Key of :data:`pixel_cnn.representation.REPRESENTATIONS`.
    image_size : int
        Side of the square model input, pixels.
    channels : tuple of int
        Output channels of the three conv blocks.
    hidden : int
        Width of the hidden dense layer of the head.
    dropout : float
        Dropout probability before each dense layer, in [0, 1).
    lr, weight_decay : float
        AdamW learning rate and decoupled weight decay.
    epochs, batch_size : int
        Fixed schedule (cosine annealing over ``epochs``); the last epoch's
        weights are kept, nothing is picked on validation data.
    jitter : int
        Training augmentation: random shift of up to this many pixels.
    noise_sigma : float
        Training augmentation: Gaussian noise std added to the (standardized) input.
    arch : str
        Network family, a key of :data:`ARCHITECTURES`: ``pixel`` (:class:`PixelCNN`,
        the seed study's), ``phase`` (:class:`PhaseCNN`, image + scalar head) or
        ``hybrid`` (:class:`HybridCNN`, PhaseCNN + a linear path from the scalars)
        or ``linear`` (:class:`ScalarLogit`, the scalars alone).
    """

    name: str
    representation: str = "median"
    image_size: int = 24
    channels: tuple[int, int, int] = (16, 32, 64)
    hidden: int = 32
    dropout: float = 0.3
    lr: float = 3e-4
    weight_decay: float = 5e-4
    epochs: int = 40
    batch_size: int = 32
    jitter: int = 1
    noise_sigma: float = 0.01
    arch: str = "pixel"

    @property
    def in_channels(self) -> int:
        return REPRESENTATION_CHANNELS[self.representation]

    @property
    def n_scalars(self) -> int:
        """Trailing input channels that are constant planes of scalar features."""
        return REPRESENTATION_SCALARS[self.representation]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preset":
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        return cls(**d)

    def replace(self, **overrides) -> "Preset":
        """A copy with the non-None ``overrides`` applied, each checked.

        Raises
        ------
        ValueError
            Unknown field, or a value out of its range (named in the message).
        """
        fields = {f.name for f in dataclasses.fields(self)}
        unknown = set(overrides) - fields
        if unknown:
            raise ValueError(f"unknown preset field(s) {sorted(unknown)}; known: {sorted(fields)}")
        new = dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})
        new.check()
        return new

    def check(self) -> None:
        """Raise ValueError naming the first field out of range."""
        rules = {
            "dropout": 0 <= self.dropout < 1,
            "lr": self.lr > 0,
            "weight_decay": self.weight_decay >= 0,
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "jitter": self.jitter >= 0,
            "noise_sigma": self.noise_sigma >= 0,
            "image_size": self.image_size >= 8,
            "representation": self.representation in REPRESENTATION_CHANNELS,
            "channels": len(self.channels) == 3 and all(int(c) >= 1 for c in self.channels),
            "arch": self.arch in ARCHITECTURES,
        }
        for name, ok in rules.items():
            if not ok:
                raise ValueError(f"preset {self.name!r}: {name}={getattr(self, name)!r} is out of range")


#: The seed study's model, unchanged (see README: "Presets").
SEED = Preset(name="seed")

#: The phase-aware model (issue 3): SNR maps of the transit, secondary and shoulder bins plus a
#: brightness proxy (representation ``phase``) into a small CNN, and the six vetting scalars into
#: the head. Fixed schedule, last epoch kept. The values are common small-data defaults (AdamW
#: lr 1e-3 with cosine decay, Loshchilov & Hutter 2019) and were not searched on the benchmark.
PHASE = Preset(
    name="phase", representation="phase", arch="phase", image_size=16, channels=(16, 32, 32),
    hidden=32, dropout=0.3, lr=1e-3, weight_decay=1e-2, epochs=60, batch_size=16, jitter=1,
    noise_sigma=0.05,
)

#: ``phase`` with the 14 aperture / centroid vetting statistics added to the scalar head
#: (representation ``phase2``, 20 scalars) and a direct linear path from the scalars to the
#: logit (arch ``hybrid``, :class:`HybridCNN`). Same schedule as ``phase``, not searched.
PHASE2 = dataclasses.replace(PHASE, name="phase2", representation="phase2", arch="hybrid")

PRESETS: dict[str, Preset] = {p.name: p for p in (SEED, PHASE, PHASE2)}
DEFAULT_PRESET = "phase2"


def channels_from_base(base_channels: int) -> tuple[int, int, int]:
    """Conv widths ``(b, 2b, 4b)`` of the three blocks for base width ``b``.

    The doubling per block is the seed model's rule (16 -> 32 -> 64 = base 16).

    Raises
    ------
    ValueError
        ``base_channels`` is not a whole number >= 1.
    """
    if int(base_channels) != base_channels or base_channels < 1:
        raise ValueError(f"base_channels={base_channels!r}; need a whole number >= 1")
    b = int(base_channels)
    return (b, 2 * b, 4 * b)


def get_preset(name: str, base_channels: int | None = None, **overrides) -> Preset:
    """Look up a preset by name and apply overrides (None = keep the preset's value).

    ``base_channels`` (optional, int) is shorthand for ``channels=(b, 2b, 4b)``
    (see :func:`channels_from_base`); it cannot be combined with ``channels``.

    Raises
    ------
    ValueError
        Unknown name (the message lists the known ones) or bad override.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {sorted(PRESETS)}")
    if base_channels is not None:
        if overrides.get("channels") is not None:
            raise ValueError("give base_channels or channels, not both")
        overrides["channels"] = channels_from_base(base_channels)
    return PRESETS[name].replace(**overrides)


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]


class PixelCNN(nn.Module):
    """Compact 2-D CNN: three conv blocks and a small dense head, one logit out.

    Conv 3x3 + BatchNorm + ReLU blocks (channels from the preset), max-pool after
    blocks 1 and 2, adaptive average pool after block 3; head Dropout -> Linear
    -> ReLU -> Dropout -> Linear. With the ``seed`` preset (1 -> 16 -> 32 -> 64,
    hidden 32) it has 25,633 parameters, the seed study's model.

    Input ``(B, C, S, S)`` float32, output ``(B,)`` logits (apply sigmoid for
    the probability of CONFIRMED).
    """

    def __init__(self, preset: Preset):
        super().__init__()
        c1, c2, c3 = preset.channels
        self.features = nn.Sequential(
            *_conv_block(preset.in_channels, c1), nn.MaxPool2d(2),
            *_conv_block(c1, c2), nn.MaxPool2d(2),
            *_conv_block(c2, c3), nn.AdaptiveAvgPool2d(1),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Dropout(preset.dropout), nn.Linear(c3, preset.hidden), nn.ReLU(),
            nn.Dropout(preset.dropout), nn.Linear(preset.hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, C, S, S) -> features (B, c3, 1, 1) -> logits (B,)
        return self.head(self.features(x)).squeeze(-1)


class PhaseCNN(nn.Module):
    """Hybrid network for the ``phase`` representation: a CNN on the maps, a head that also reads scalars.

    The input's last ``preset.n_scalars`` channels are constant planes (see
    :func:`pixel_cnn.representation.phase_image`); their spatial mean is the
    scalar vector, batch-normalized and concatenated to the pooled image
    features. Image branch: three Conv 3x3 + BatchNorm + ReLU blocks (channels
    from the preset), max-pool after blocks 1 and 2, then global average *and*
    max pooling (the max keeps a single deep pixel, which an average over the
    stamp would dilute). Head: Dropout -> Linear -> ReLU -> Dropout -> Linear.
    With the ``phase`` preset (4 maps + 6 scalars, 16 -> 32 -> 32, hidden 32)
    it has 16,957 parameters.

    Input ``(B, C, S, S)`` float32, output ``(B,)`` logits.
    """

    def __init__(self, preset: Preset):
        super().__init__()
        c1, c2, c3 = preset.channels
        self.n_scalars = preset.n_scalars
        n_maps = preset.in_channels - self.n_scalars
        self.features = nn.Sequential(
            *_conv_block(n_maps, c1), nn.MaxPool2d(2),
            *_conv_block(c1, c2), nn.MaxPool2d(2),
            *_conv_block(c2, c3),
        )
        self.scalar_norm = nn.BatchNorm1d(self.n_scalars) if self.n_scalars else nn.Identity()
        self.head = nn.Sequential(
            nn.Dropout(preset.dropout), nn.Linear(2 * c3 + self.n_scalars, preset.hidden), nn.ReLU(),
            nn.Dropout(preset.dropout), nn.Linear(preset.hidden, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_maps = x.shape[1] - self.n_scalars
        maps, planes = x[:, :n_maps], x[:, n_maps:]                      # (B, M, S, S), (B, K, S, S)
        f = self.features(maps)                                          # (B, c3, S/4, S/4)
        pooled = torch.cat([f.mean((2, 3)), f.amax((2, 3))], dim=1)      # (B, 2 c3)
        scalars = self.scalar_norm(planes.mean((2, 3)))                  # (B, K)
        return self.head(torch.cat([pooled, scalars], dim=1)).squeeze(-1)  # (B,)


class HybridCNN(PhaseCNN):
    """:class:`PhaseCNN` plus a direct linear path from the normalized scalars to the logit.

    ``logit = head(pooled image features, scalars) + w . scalars`` ("wide & deep",
    Cheng et al. 2016, arXiv:1606.07792): the wide part is a logistic regression
    on the batch-normalized scalar features, so when the image adds nothing the
    network can still fall back on it. With the ``phase2`` preset (4 maps + 20
    scalars, 16 -> 32 -> 32, hidden 32) it has 17,454 parameters.

    Input ``(B, C, S, S)`` float32, output ``(B,)`` logits.
    """

    def __init__(self, preset: Preset):
        super().__init__(preset)
        self.wide = nn.Linear(self.n_scalars, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_maps = x.shape[1] - self.n_scalars
        maps, planes = x[:, :n_maps], x[:, n_maps:]                      # (B, M, S, S), (B, K, S, S)
        f = self.features(maps)                                          # (B, c3, S/4, S/4)
        pooled = torch.cat([f.mean((2, 3)), f.amax((2, 3))], dim=1)      # (B, 2 c3)
        scalars = self.scalar_norm(planes.mean((2, 3)))                  # (B, K)
        deep = self.head(torch.cat([pooled, scalars], dim=1)).squeeze(-1)  # (B,)
        return deep + self.wide(scalars).squeeze(-1)                     # (B,)


class ScalarLogit(nn.Module):
    """A logistic regression on the scalar planes only (the maps are ignored): the ``linear`` arch.

    ``logit = w . BatchNorm(scalars) + b``, trained by the same loop as the
    networks, so it runs through cv, the ensemble and serving unchanged. The
    reference that tells whether the image branch adds anything. With
    ``phase2`` (20 scalars): 61 parameters (40 of them the BatchNorm affine).

    Input ``(B, C, S, S)`` float32 with ``preset.n_scalars >= 1``, output ``(B,)`` logits.
    """

    def __init__(self, preset: Preset):
        super().__init__()
        if preset.n_scalars < 1:
            raise ValueError(f"preset {preset.name!r}: arch linear needs a representation with scalars")
        self.n_scalars = preset.n_scalars
        self.scalar_norm = nn.BatchNorm1d(self.n_scalars)
        self.wide = nn.Linear(self.n_scalars, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scalars = self.scalar_norm(x[:, -self.n_scalars:].mean((2, 3)))  # (B, K)
        return self.wide(scalars).squeeze(-1)                            # (B,)


#: Preset ``arch`` -> network class.
ARCHITECTURES = {"pixel": PixelCNN, "phase": PhaseCNN, "hybrid": HybridCNN, "linear": ScalarLogit}


def build_model(preset: Preset) -> nn.Module:
    """The network for a preset (untrained): ``ARCHITECTURES[preset.arch](preset)``."""
    return ARCHITECTURES[preset.arch](preset)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
