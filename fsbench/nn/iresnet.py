"""IResNet face-recognition backbones, laid out like insightface's arcface_torch.

Parameter names and shapes match arcface_torch so that its published ``backbone.pth`` files
load with ``strict=True`` (REFERENCE.md, "Backbones"). The standard models are r18, r34, r50,
r100 and r200 at 112x112 input. Two knobs exist only for fast CPU tests and the ``tiny``
training preset and make a model NON-STANDARD (no published weights fit it): ``width`` (planes
of layer1, 64 in every published model) and ``input_size`` other than 112; the name ``r4``
(one block per stage) is non-standard too.

Input: (N, 3, S, S) float in [-1, 1], i.e. (x / 255 - 0.5) / 0.5.  Output: (N, num_features),
not normalised (callers L2-normalise).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

__all__ = ["ARCHS", "STANDARD", "IBasicBlock", "IResNet", "get_model", "is_standard", "map_size"]

# Blocks per stage (layer1..layer4). Also the CLI's list of choices.
ARCHS: dict[str, tuple[int, int, int, int]] = {
    "r4": (1, 1, 1, 1),  # non-standard: tests and the CPU `tiny` preset only
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
    "r200": (6, 26, 60, 6),
}
STANDARD = ("r18", "r34", "r50", "r100", "r200")

_EPS = 1e-5


def map_size(input_size: int) -> int:
    """Side of the last feature map: four stride-2 3x3 convs with padding 1 (ceil halving)."""
    side = input_size
    for _ in range(4):
        side = (side + 1) // 2
    return side


def is_standard(name: str, width: int = 64, input_size: int = 112) -> bool:
    """True when published arcface_torch weights can fit this configuration."""
    return name in STANDARD and width == 64 and input_size == 112


# --------------------------------------------------------------------------- block


class IBasicBlock(nn.Module):
    """Pre-activation-style residual block: BN -> conv -> BN -> PReLU -> conv(stride) -> BN.

    No activation after the residual sum (the "improved" ResNet of ArcFace).
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=_EPS)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=_EPS)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=_EPS)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + identity


# --------------------------------------------------------------------------- network


class IResNet(nn.Module):
    """Stem, four stages of IBasicBlocks (each halving the map), then the embedding head.

    `forward_features` and `head` split the network where SER-FIQ needs it: the backbone runs
    once, the stochastic head (dropout + fc + features) many times.
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        num_features: int = 512,
        dropout: float = 0.0,
        input_size: int = 112,
        width: int = 64,
    ):
        super().__init__()
        planes = [width, width * 2, width * 4, width * 8]
        self.input_size = input_size
        self.num_features = num_features
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=_EPS)
        self.prelu = nn.PReLU(width)
        inplanes = width
        stages = []
        for n_blocks, p in zip(layers, planes):
            stages.append(self._make_layer(inplanes, p, n_blocks, stride=2))
            inplanes = p
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn2 = nn.BatchNorm2d(inplanes, eps=_EPS)
        # Not in-place (arcface_torch's is): SER-FIQ reuses the same flat tensor many times.
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(inplanes * map_size(input_size) ** 2, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=_EPS)
        self._init_weights()

    @staticmethod
    def _make_layer(inplanes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes, eps=_EPS),
            )
        first = IBasicBlock(inplanes, planes, stride, downsample)
        return nn.Sequential(first, *(IBasicBlock(planes, planes) for _ in range(1, blocks)))

    def _init_weights(self) -> None:
        # arcface_torch's initialisation: N(0, 0.1) convs, unit BN; `features` scale is fixed
        # at 1 and never trained (it only standardises the embedding), but stays in state_dict.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0, 0.1)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        nn.init.constant_(self.features.weight, 1.0)
        self.features.weight.requires_grad = False

    def forward_features(self, x: Tensor) -> Tensor:
        """(N, 3, S, S) -> (N, C * s * s): the flattened map that enters dropout + fc.

        On CPU the input is made NCHW-contiguous: a batch permuted from (N, S, S, 3) pixels
        has channels-last strides, torch then runs every conv channels-last, and oneDNN's
        1x1 stride-2 backward-weights kernel for channels-last input with fewer input
        channels than its block (16 on AVX-512) writes past its workspace: a segfault on
        AVX-512 machines for the `tiny` preset's width-8 shortcut (oneDNN issue 6035).
        """
        if x.device.type == "cpu":
            x = x.contiguous()
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (N, 8w, s, s)
        return torch.flatten(self.bn2(x), 1)

    def head(self, flat: Tensor, dropout: float | None = None) -> Tensor:
        """(N, C * s * s) -> (N, num_features).

        `dropout` overrides the module's rate and applies it even in eval mode (SER-FIQ's
        stochastic passes with p = 0.5 while BatchNorm keeps its running statistics).
        """
        if dropout is None:
            flat = self.dropout(flat)
        else:
            flat = nn.functional.dropout(flat, p=dropout, training=True)
        return self.features(self.fc(flat))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))


def get_model(
    name: str,
    num_features: int = 512,
    dropout: float = 0.0,
    input_size: int = 112,
    width: int = 64,
) -> IResNet:
    """The IResNet called `name` (r18, r34, r50, r100, r200; r4 is a non-standard test size).

    `width` != 64 or `input_size` != 112 give a non-standard model for CPU tests: fine to
    train, but no published checkpoint matches it.
    """
    from fsbench.errors import UsageError

    if name not in ARCHS:
        raise UsageError(f"unknown IResNet {name!r} (known: {', '.join(ARCHS)})")
    if input_size < 16:
        raise UsageError(f"IResNet input_size={input_size} is too small (at least 16 pixels)")
    if width < 1 or num_features < 1:
        raise UsageError(f"IResNet width={width} and num_features={num_features} must be positive")
    return IResNet(ARCHS[name], num_features=num_features, dropout=dropout, input_size=input_size, width=width)
