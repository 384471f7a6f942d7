"""Split-brain autoencoders: cross-channel prediction (Zhang, Isola & Efros 2017).

"We modify the autoencoder architecture by adding a split, resulting in two disjoint sub-networks.
Each sub-network is trained to perform a difficult task — predicting one subset of the data
channels from another." In Lab colour space one half sees the lightness L and predicts the colour
ab (colorization); the other sees ab and predicts L. Each prediction is a per-pixel classification
over quantised bins (the paper's choice: a multimodal distribution, not the blurry mean of a
regression) or, as an option, a regression. The representation is the two halves' features,
concatenated.

:class:`SplitBrainBackbone` is what the evaluation protocols see: a module whose forward takes RGB
images in [0, 1], converts them to Lab itself and returns ``[F_L(L), F_ab(ab)]`` with ``out_dim``
features. Each half has the architecture of the preset's backbone, with its first convolution taking
1 (L) or 2 (ab) channels instead of 3.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from sslbook.augment import random_resized_crop
from sslbook.color import AB_RANGE, ab_bin_centres, quantize_ab, quantize_l, require_colour, rgb_to_lab
from sslbook.methods._spatial import feature_map_shape
from sslbook.methods.base import Method


def _with_input_channels(backbone: nn.Module, channels: int) -> nn.Module:
    """A copy of ``backbone`` whose first 3-channel convolution takes ``channels`` inputs, without RGB normalisation."""
    net = copy.deepcopy(backbone)
    if hasattr(net, "normalize"):
        net.normalize = nn.Identity()  # Lab inputs are scaled by SplitBrainBackbone itself
    for module in net.modules():
        for name, child in module.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                setattr(
                    module,
                    name,
                    nn.Conv2d(
                        channels,
                        child.out_channels,
                        child.kernel_size,
                        child.stride,
                        child.padding,
                        bias=child.bias is not None,
                    ),
                )
                return net
    raise ValueError(f"split_brain could not find the first 3-channel convolution of {type(backbone).__name__}")


class SplitBrainBackbone(nn.Module):
    """RGB in [0, 1] → Lab → [F_L(L) ‖ F_ab(ab)]: N×3×H×W → N×out_dim (out_dim = 2 × the half's width)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        feature_map_shape(backbone, 8)  # the halves need feature maps: a clear error otherwise
        self.half_l = _with_input_channels(backbone, 1)  # sees lightness, predicts colour
        self.half_ab = _with_input_channels(backbone, 2)  # sees colour, predicts lightness
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.half_dim = backbone.out_dim
        self.out_dim = 2 * backbone.out_dim

    @staticmethod
    def lab_inputs(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Lab N×3×H×W, L scaled to [−1, 1] N×1×H×W, ab scaled to about [−1, 1] N×2×H×W)."""
        lab = rgb_to_lab(rgb)
        return lab, lab[:, :1] / 50 - 1, lab[:, 1:] / AB_RANGE

    def feature_maps(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _, l, ab = self.lab_inputs(rgb)
        return self.half_l.feature_maps(l), self.half_ab.feature_maps(ab)  # each N×C×h×w

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        f_l, f_ab = self.feature_maps(rgb)
        return torch.cat([self.pool(f_l), self.pool(f_ab)], dim=1)  # N×2C


class SplitBrain(Method):
    name = "split_brain"

    def __init__(
        self,
        backbone,
        info,
        image_size,
        loss: str = "classification",
        ab_bins: int = 16,
        l_bins: int = 20,
        target_size: int | None = None,
        crop_scale=(0.6, 1.0),
    ):
        if loss not in ("classification", "regression"):
            raise ValueError(f"split_brain loss must be 'classification' or 'regression', got {loss!r}")
        super().__init__(SplitBrainBackbone(backbone), info, image_size)
        self.loss_kind, self.ab_bins, self.l_bins = loss, int(ab_bins), int(l_bins)
        self.target_size = int(target_size or max(image_size // 4, 1))
        self.crop_scale = tuple(crop_scale)
        c = self.backbone.half_dim
        classes = loss == "classification"
        # 1×1 convolutions on each half's feature map: per-location predictions of the other channels
        self.head_ab = nn.Conv2d(c, self.ab_bins**2 if classes else 2, 1)  # L → ab
        self.head_l = nn.Conv2d(c, self.l_bins if classes else 1, 1)  # ab → L

    @torch.no_grad()
    def make_views(self, images, labels):
        require_colour(images, "split_brain")
        return [random_resized_crop(images, self.image_size, self.crop_scale, flip_p=0.5)]

    def predict(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(ab prediction from L, L prediction from ab) at target_size²: logits or values."""
        f_l, f_ab = self.backbone.feature_maps(rgb)
        size = (self.target_size, self.target_size)
        ab = F.interpolate(self.head_ab(f_l).float(), size=size, mode="bilinear", align_corners=False)
        l = F.interpolate(self.head_l(f_ab).float(), size=size, mode="bilinear", align_corners=False)
        return ab, l

    @torch.no_grad()
    def predict_lab(self, rgb: torch.Tensor, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """The predictions in Lab units at target_size²: (ab N×2×t×t, L N×1×t×t). For regression, the values
        rescaled. For the classification loss, the *annealed mean* of each predicted distribution p over the bin
        centres (Zhang, Isola & Efros 2016): the mean under p^(1/T), renormalised. T = 1 is the mean (dull where
        p has several modes), T → 0 the mode (vivid but noisy); their colorization paper uses T = 0.38."""
        if temperature <= 0:
            raise ValueError(f"predict_lab needs a temperature > 0, got {temperature}")
        pred_ab, pred_l = self.predict(rgb)
        if self.loss_kind == "regression":
            return pred_ab * AB_RANGE, (pred_l + 1) * 50
        p_ab, p_l = (pred_ab / temperature).softmax(1), (pred_l / temperature).softmax(1)  # p^(1/T), renormalised
        ab = torch.einsum("nkhw,kc->nchw", p_ab, ab_bin_centres(self.ab_bins, device=pred_ab.device))
        l_centres = (torch.arange(self.l_bins, device=pred_l.device, dtype=torch.float32) + 0.5) / self.l_bins * 100
        return ab, torch.einsum("nkhw,k->nhw", p_l, l_centres).unsqueeze(1)

    def targets(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The Lab channels of ``rgb`` averaged down to target_size²: (ab N×2×t×t, L N×1×t×t)."""
        lab = F.adaptive_avg_pool2d(rgb_to_lab(rgb), self.target_size)
        return lab[:, 1:], lab[:, :1]

    def forward(self, views, labels):
        x = views[0]
        pred_ab, pred_l = self.predict(x)
        ab, l = self.targets(x)
        if self.loss_kind == "classification":
            loss_ab = F.cross_entropy(pred_ab, quantize_ab(ab, self.ab_bins))  # ab_bins² classes per pixel
            loss_l = F.cross_entropy(pred_l, quantize_l(l, self.l_bins))
        else:
            loss_ab = F.mse_loss(pred_ab, ab / AB_RANGE)
            loss_l = F.mse_loss(pred_l, l / 50 - 1)
        return {"loss": loss_ab + loss_l, "loss_ab": loss_ab.detach(), "loss_l": loss_l.detach()}
