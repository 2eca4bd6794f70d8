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
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .representation import REPRESENTATION_CHANNELS, REPRESENTATION_SCALARS


@dataclass(frozen=True)
class Preset:
    """A complete model + training configuration.

    Attributes
    ----------
    name : str
    representation : str
        Key of :data:`pixel_cnn.vetter.representation.REPRESENTATIONS`.
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

#: The phase-aware model: SNR maps of the transit, secondary and shoulder bins plus a
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

#: The pixel branch of the fusion vetter (:data:`pixel_cnn.branches.vetters.VETTERS`):
#: ``phase2``'s network, unchanged, under the vetter's name.
FUSION = dataclasses.replace(PHASE2, name="fusion")

PRESETS: dict[str, Preset] = {p.name: p for p in (SEED, PHASE, PHASE2, FUSION)}
#: The default pixel network (tuning, the speed benchmark, the pixel branch of ``fusion``).
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
    :func:`pixel_cnn.vetter.representation.phase_image`); their spatial mean is the
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

    def deep(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's logit ``(B,)`` and the normalized scalars ``(B, K)`` for inputs ``(B, C, S, S)``."""
        n_maps = x.shape[1] - self.n_scalars
        maps, planes = x[:, :n_maps], x[:, n_maps:]                      # (B, M, S, S), (B, K, S, S)
        f = self.features(maps)                                          # (B, c3, S/4, S/4)
        pooled = torch.cat([f.mean((2, 3)), f.amax((2, 3))], dim=1)      # (B, 2 c3)
        scalars = self.scalar_norm(planes.mean((2, 3)))                  # (B, K)
        return self.head(torch.cat([pooled, scalars], dim=1)).squeeze(-1), scalars

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deep(x)[0]                                           # (B,)


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
        deep, scalars = self.deep(x)
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

class FusedPhaseEnsemble(nn.Module):
    """Trained :class:`PhaseCNN` (or :class:`HybridCNN`) members run as one grouped network (inference only).

    Scoring a fold ensemble member by member costs about 17 small torch calls
    per member; for one served stack that per-call overhead, not arithmetic,
    dominates. Here each Conv + BatchNorm pair is folded into one convolution
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``, the eval-mode identity
    ``w' = w * g / sqrt(v + eps)``, ``b' = (b - m) * g / sqrt(v + eps) + beta``)
    and the members' layers are stacked: the first convolution concatenates
    their filters, the later ones are grouped convolutions with one group per
    member, and the two dense layers of the heads run as one batched matrix
    product (as does the linear path of :class:`HybridCNN`). The result equals
    the members' mean probability up to float32 rounding (about 1e-7; checked
    in the tests). Dropout is the identity at inference and is left out.

    Parameters
    ----------
    members : list of PhaseCNN, or list of HybridCNN
        Trained networks of one preset (same shapes), in eval mode. Their
        weights are copied: the fused network does not change when they do.

    Input ``(B, C, S, S)`` float32 -> ``(B,)`` float32: the mean over members
    of ``sigmoid(logit)``, the probability of CONFIRMED.

    Raises
    ------
    ValueError
        No members, members not all exactly PhaseCNN or all exactly HybridCNN
        (a subclass could compute something this class does not), or one still
        in training mode.
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        kinds = {type(m) for m in members}
        if len(kinds) != 1 or kinds.pop() not in (PhaseCNN, HybridCNN):
            raise ValueError("FusedPhaseEnsemble needs one or more members, all PhaseCNN or all HybridCNN")
        if any(m.training for m in members):
            raise ValueError("FusedPhaseEnsemble is for inference: put the members in eval mode")
        k, first = len(members), members[0]
        self.k, self.n_scalars = k, first.n_scalars
        layers, modules = [], [list(m.features) for m in members]
        i = 0
        while i < len(modules[0]):
            layer = modules[0][i]
            if isinstance(layer, nn.Conv2d):  # always followed by its BatchNorm2d (_conv_block)
                fused = [fuse_conv_bn_eval(mods[i], mods[i + 1]) for mods in modules]
                groups = 1 if not layers else k
                conv = nn.Conv2d(layer.in_channels * groups, layer.out_channels * k, layer.kernel_size,
                                 padding=layer.padding, groups=groups)
                conv.weight.data = torch.cat([f.weight.data for f in fused])
                conv.bias.data = torch.cat([f.bias.data for f in fused])
                layers.append(conv)
                i += 2
            else:  # ReLU and MaxPool2d act channel by channel: shared as they are
                layers.append(layer)
                i += 1
        self.features = nn.Sequential(*layers)
        if self.n_scalars:
            norms = [m.scalar_norm for m in members]
            scale = torch.stack([n.weight / torch.sqrt(n.running_var + n.eps) for n in norms])
            self.register_buffer("scalar_scale", scale.detach())                      # (k, K)
            self.register_buffer("scalar_shift", torch.stack(
                [n.bias - n.running_mean * s for n, s in zip(norms, scale)]).detach())  # (k, K)
        linears = [[layer for layer in m.head if isinstance(layer, nn.Linear)] for m in members]
        self.register_buffer("w1", torch.stack([lin[0].weight for lin in linears]).detach())  # (k, H, F)
        self.register_buffer("b1", torch.stack([lin[0].bias for lin in linears]).detach())    # (k, H)
        self.register_buffer("w2", torch.stack([lin[1].weight[0] for lin in linears]).detach())  # (k, H)
        self.register_buffer("b2", torch.stack([lin[1].bias[0] for lin in linears]).detach())    # (k,)
        self.wide = isinstance(first, HybridCNN)
        if self.wide:
            self.register_buffer("w_wide", torch.stack([m.wide.weight[0] for m in members]).detach())  # (k, K)
            self.register_buffer("b_wide", torch.stack([m.wide.bias[0] for m in members]).detach())    # (k,)
        # channels-last: torch's CPU max-pooling is faster on it (docs/benchmarks.md)
        self.to(memory_format=torch.channels_last).eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n_maps = x.shape[1] - self.n_scalars
        batch = x.shape[0]
        f = self.features(x[:, :n_maps].contiguous(memory_format=torch.channels_last))  # (B, k c3, s, s)
        f = f.reshape(batch, self.k, -1, f.shape[-2] * f.shape[-1])             # (B, k, c3, s*s)
        feats = [f.mean(-1), f.amax(-1)]                                        # (B, k, c3) each
        if self.n_scalars:
            scalars = x[:, n_maps:].mean((2, 3))                                # (B, K)
            scalars = scalars[:, None, :] * self.scalar_scale + self.scalar_shift  # (B, k, K)
            feats.append(scalars)
        h = torch.relu(torch.einsum("bkf,khf->bkh", torch.cat(feats, -1), self.w1) + self.b1)
        logits = torch.einsum("bkh,kh->bk", h, self.w2) + self.b2                # (B, k)
        if self.wide:
            logits = logits + torch.einsum("bkf,kf->bk", scalars, self.w_wide) + self.b_wide
        return torch.sigmoid(logits).mean(1)


#: Preset ``arch`` -> network class.
ARCHITECTURES = {"pixel": PixelCNN, "phase": PhaseCNN, "hybrid": HybridCNN, "linear": ScalarLogit}


def build_model(preset: Preset) -> nn.Module:
    """The network for a preset (untrained): ``ARCHITECTURES[preset.arch](preset)``."""
    return ARCHITECTURES[preset.arch](preset)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
