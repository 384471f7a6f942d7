"""RotNet (Gidaris, Singh & Komodakis, ICLR 2018): predict which rotation was applied to an image.

"We propose to learn image features by training ConvNets to recognize the 2d rotation that is applied
to the image that it gets as input" — a 4-way classification of 0°, 90°, 180°, 270°. The paper's
argument: to say which way is up, the network must know what the objects in the image look like and
where they usually stand. Rotations by multiples of 90° are exact (no interpolation artefacts the
network could read instead), and the paper found it best to feed all four rotations of each image in
the same batch.

Views: a lightly augmented copy of each image (random crop with reflection padding and a horizontal
flip, which does not change which way is up), rotated by every angle of ``angles``. The backbone is
applied to whole images, exactly as at evaluation time; a small head classifies the angle.
"""

from __future__ import annotations

import torch

from sslbook.augment import color_jitter, horizontal_flip, random_crop, random_grayscale, random_resized_crop
from sslbook.losses import pretext_cross_entropy
from sslbook.methods.base import Method
from sslbook.models.heads import head

ANGLES = (0, 90, 180, 270)


def rotate_batch(x: torch.Tensor, angles=ANGLES) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image under every angle (multiples of 90°, counter-clockwise).

    x: N×3×H×W → (K·N)×3×H×W, grouped by angle (rows k·N … k·N+N−1 are rotated by angles[k]), and the
    targets (K·N,) with values 0…K−1 (the index into ``angles``).
    """
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"rotation needs square images, got {x.shape[-2]}×{x.shape[-1]}")
    rotated, targets = [], []
    for k, angle in enumerate(angles):
        if angle % 90:
            raise ValueError(f"rotations must be multiples of 90 degrees, got {angle}")
        rotated.append(torch.rot90(x, angle // 90, dims=(2, 3)))
        targets.append(torch.full((x.shape[0],), k, dtype=torch.long, device=x.device))
    return torch.cat(rotated), torch.cat(targets)


class RotNet(Method):
    name = "rotnet"

    def __init__(
        self,
        backbone,
        info,
        image_size,
        angles=ANGLES,
        hidden=256,
        all_rotations=True,
        crop_padding=4,
        crop_scale=None,
        jitter_p=0.0,
        gray_p=0.0,
    ):
        super().__init__(backbone, info, image_size)
        self.angles = tuple(int(a) for a in angles)
        if len(self.angles) < 2 or len(set(a % 360 for a in self.angles)) != len(self.angles):
            raise ValueError(f"rotnet needs at least two distinct angles, got {self.angles}")
        self.all_rotations = all_rotations
        self.crop_padding = crop_padding
        self.crop_scale = tuple(crop_scale) if crop_scale is not None else None
        self.jitter_p, self.gray_p = jitter_p, gray_p
        d = backbone.out_dim
        # the rotation classifier: one hidden layer on the pooled features
        self.classifier = head([(d, hidden, True, True), (hidden, len(self.angles), False, False)])

    @torch.no_grad()
    def make_views(self, images, labels):
        if self.crop_scale is not None:  # a random part of the scene, resized back to full size
            x = random_resized_crop(images, self.image_size, self.crop_scale, flip_p=0.5)
        else:
            x = horizontal_flip(random_crop(images, self.crop_padding), 0.5)  # N×3×H×W
        if self.jitter_p > 0:
            x = color_jitter(x, 0.4, 0.4, 0.4, 0.1, p=self.jitter_p)
        if self.gray_p > 0:
            x = random_grayscale(x, self.gray_p)
        rotated, targets = rotate_batch(x, self.angles)  # (K·N)×3×H×W, (K·N,)
        if not self.all_rotations:  # one random angle per image: K× cheaper, noisier
            n, k = x.shape[0], len(self.angles)
            pick = torch.randint(0, k, (n,), device=x.device) * n + torch.arange(n, device=x.device)
            rotated, targets = rotated[pick], targets[pick]
        return {"images": rotated, "targets": targets}

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Rotation logits (M×K) for a batch of (rotated) images M×3×H×W."""
        return self.classifier(self.backbone(images))

    def forward(self, views, labels):
        logits = self.logits(views["images"])  # M×K
        loss = pretext_cross_entropy(logits, views["targets"])
        acc = (logits.argmax(1) == views["targets"]).float().mean()
        return {"loss": loss, "pretext_acc": acc}
