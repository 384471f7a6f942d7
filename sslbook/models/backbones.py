"""Backbones: networks from images to a feature vector, written from scratch.

Every backbone takes float images in [0, 1] of shape N×3×H×W, normalises them with the data set's
channel mean and std (a buffer, so checkpoints carry it), and returns features N×D with
``D = backbone.out_dim``. The representation a chapter evaluates is this output.

Every backbone also has ``feature_maps(x) -> N×C×h×w``, its spatial map before the global pooling
(the last stage of a CNN; the patch tokens of a ViT), which the dense protocols of :mod:`sslbook.dense`
read; ``forward`` is the global average of it (for a ViT, of its tokens or its [CLS] token).

- ``convnet``: a four-stage CNN for the tiny preset (32×32 inputs, hundreds of images/s on 2 CPU cores).
  Its stages are called ``conv1`` … ``conv4`` so that protocols such as "freeze conv1–conv2" can name them.
- ``resnet18_cifar``, ``resnet18``, ``resnet50``: ResNets (He et al. 2016). The CIFAR variant uses a 3×3
  stem without max-pooling, as every CIFAR self-supervised recipe does.
"""

from __future__ import annotations

import torch
from torch import nn

from sslbook.data.base import DataInfo
from sslbook.models.normalize import Normalize
from sslbook.models.vit import vit


def cpu_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in the channels-last memory layout on a CPU (the values are unchanged).

    PyTorch's CPU convolutions (oneDNN) run natively on channels-last tensors; on a contiguous N×C×H×W
    input they reorder it at every layer. Measured on 2 cores with the tiny ``convnet`` (batch 256 of
    32-px images): the forward pass in eval mode 1.7× faster, a training step (forward and backward) 1.3×
    faster. The weights keep their layout. On a GPU the input is left as it is."""
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" and x.dim() == 4 else x


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ConvNet(nn.Module):
    """Tiny CNN: four conv–BN–ReLU stages (max-pool after the first three), global average pool.

    x: N×3×H×W → conv1 (H) → conv2 (H/2) → conv3 (H/4) → conv4 (H/8) → pool → N×widths[-1]
    """

    def __init__(self, mean=(0.5,) * 3, std=(0.25,) * 3, widths=(32, 64, 128, 256)):
        super().__init__()
        self.normalize = Normalize(mean, std)
        chans = (3, *widths)
        self.conv1 = conv_bn_relu(chans[0], chans[1])
        self.conv2 = nn.Sequential(nn.MaxPool2d(2), conv_bn_relu(chans[1], chans[2]))
        self.conv3 = nn.Sequential(nn.MaxPool2d(2), conv_bn_relu(chans[2], chans[3]))
        self.conv4 = nn.Sequential(nn.MaxPool2d(2), conv_bn_relu(chans[3], chans[4]))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = widths[-1]

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map, N×C×h×w, for methods that need spatial features."""
        x = cpu_channels_last(self.normalize(x))
        return self.conv4(self.conv3(self.conv2(self.conv1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.feature_maps(x))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, c: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c, 1, stride, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, c: int, stride: int = 1):
        super().__init__()
        out = c * self.expansion
        self.conv1 = nn.Conv2d(c_in, c, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.conv3 = nn.Conv2d(c, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return torch.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with a CIFAR stem (3×3 conv, no max-pool) or the ImageNet stem (7×7/2 conv + max-pool)."""

    def __init__(self, block, layers, mean=(0.5,) * 3, std=(0.25,) * 3, cifar_stem=False):
        super().__init__()
        self.normalize = Normalize(mean, std)
        if cifar_stem:
            self.stem = conv_bn_relu(3, 64)
        else:
            self.stem = nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        c_in, stages = 64, []
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(n):
                blocks.append(block(c_in, width, stride=2 if (j == 0 and i > 0) else 1))
                c_in = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.out_dim = c_in
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(cpu_channels_last(self.normalize(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.feature_maps(x))


def _vit(mean, std, size, **kwargs):
    return vit(mean, std, size, **kwargs)


BACKBONES = {
    "convnet": lambda m, s: ConvNet(m, s),
    "convnet_small": lambda m, s: ConvNet(m, s, widths=(16, 32, 64, 128)),
    "resnet18_cifar": lambda m, s: ResNet(BasicBlock, (2, 2, 2, 2), m, s, cifar_stem=True),
    "resnet18": lambda m, s: ResNet(BasicBlock, (2, 2, 2, 2), m, s),
    "resnet50": lambda m, s: ResNet(Bottleneck, (3, 4, 6, 3), m, s),
    "vit_tiny": lambda m, s: _vit(m, s, "tiny"),  # 32 px, patch 8, width 96, 4 blocks (CPU)
    "vit_tiny_p4": lambda m, s: _vit(m, s, "tiny", patch_size=4),  # the same with 4×4 patches: 64 tokens
    # 4×4 patches (an 8×8 grid), each embedded by a small per-patch conv stack instead of one linear map. Measured on
    # shapes at the tiny preset (supervised recipe, 10 epochs, seed 0, kNN / linear top-1; random init, then supervised):
    #   convnet        40.5% / 68.7%   98.7% / 98.5%
    #   vit_tiny       17.5% / 22.8%   54.8% / 57.4%   (16 tokens; ~1 CPU-minute for the 190 steps)
    #   vit_tiny_p4    19.7% / 25.2%   72.9% / 74.4%   (64 tokens; ~3.5 CPU-minutes)
    #   vit_tiny_conv  18.0% / 30.3%   85.2% / 85.2%   (64 tokens; ~4 CPU-minutes)
    # The chapters' ViT methods still use vit_tiny: moving them costs about four times their CPU time.
    "vit_tiny_conv": lambda m, s: _vit(m, s, "tiny", patch_size=4, stem="conv"),
    "vit_small": lambda m, s: _vit(m, s, "small"),  # ViT-S/16, 224 px
    "vit_base": lambda m, s: _vit(m, s, "base"),  # ViT-B/16, 224 px
    "vit_small_p4": lambda m, s: _vit(m, s, "small", image_size=32, patch_size=4),  # ViT-S on 32-px CIFAR
}


def build_backbone(name: str, info: DataInfo) -> nn.Module:
    """A backbone by name, normalising inputs with the data set's statistics."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name](tuple(info.mean), tuple(info.std))


def readout(backbone: nn.Module) -> str | None:
    """How a backbone pools its features when that is a setting of the instance: a ViT's token pooling
    (``"cls"`` or ``"mean"``: DINO reads the [CLS] token, MAE the patch tokens' mean), None otherwise (a CNN's
    ``pool`` is a module, the same in every copy). Two backbones of one class, weights and read-out give the
    same features."""
    pool = getattr(backbone, "pool", None)
    return pool if isinstance(pool, str) else None
