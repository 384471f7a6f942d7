"""Context prediction by relative patch position (Doersch, Gupta & Efros, ICCV 2015).

"Given only a pair of patches from an image, predict where the second lies relative to the first":
the image is cut into a 3×3 grid, the centre patch and one of its eight neighbours are shown to the
network, which answers with an 8-way classification of the neighbour's position. Two shortcuts are
taken away so that only *what is in the patches* can solve it:

- **gaps and jitter** between patches (``gap``, ``jitter`` pixels; see :mod:`sslbook.methods.patches`):
  without them, lines and textures running across the patch border would give the answer;
- **chromatic aberration**: camera lenses shift green relative to magenta by an amount that grows
  towards the image border, so the colour fringes of a patch tell where in the frame it was taken.
  Doersch et al. removed it by projecting out the green–magenta axis ("projection") or by dropping two
  of the three colour channels ("colour dropping"); ``colour="project" | "drop" | "none"``.

Both patches go through the *same* backbone (shared weights, "late fusion"); the two pooled feature
vectors are concatenated and a small head classifies. Patches are resized to ``patch_size`` pixels
before the backbone, so the backbone sees objects at a scale closer to the one of whole images at
evaluation time; it ends with global pooling, so any input size works.
"""

from __future__ import annotations

import torch

from sslbook.augment import color_jitter, random_grayscale
from sslbook.losses import pretext_cross_entropy
from sslbook.methods.base import Method
from sslbook.methods.patches import (
    cut_patches,
    drop_colour_channels,
    grid_geometry,
    project_out_green_magenta,
    resize_patches,
)
from sslbook.models.heads import head

# The eight neighbours of the centre cell (index 4 of the row-major 3×3 grid), in reading order;
# label k means "the second patch is at NEIGHBOURS[k]".
NEIGHBOURS = (0, 1, 2, 3, 5, 6, 7, 8)
# (row, col) offset of each label from the centre patch: label 0 = up-left, 1 = up, 2 = up-right, …
OFFSETS = tuple(((c // 3) - 1, (c % 3) - 1) for c in NEIGHBOURS)


class RelativePosition(Method):
    name = "relative_position"

    def __init__(
        self,
        backbone,
        info,
        image_size,
        gap=2,
        jitter=1,
        patch_size=16,
        colour="project",
        gray_p=0.3,
        jitter_p=0.0,
        hidden=256,
    ):
        super().__init__(backbone, info, image_size)
        if colour not in ("project", "drop", "none"):
            raise ValueError(f"colour must be 'project', 'drop' or 'none', got {colour!r}")
        self.gap, self.jitter, self.patch_size, self.colour, self.gray_p = gap, jitter, patch_size, colour, gray_p
        self.jitter_p = jitter_p  # probability of an independent colour jitter per patch
        self.cell, self.patch = grid_geometry(image_size, 3, gap, jitter, "relative_position")
        d = backbone.out_dim
        self.classifier = head([(2 * d, hidden, True, True), (hidden, 8, False, False)])

    @torch.no_grad()
    def make_views(self, images, labels, return_corners=False):
        n = images.shape[0]
        dev = images.device
        targets = torch.randint(0, 8, (n,), device=dev)  # which neighbour: N
        neighbour_cell = torch.tensor(NEIGHBOURS, device=dev)[targets]
        cells = torch.stack([torch.full_like(neighbour_cell, 4), neighbour_cell], 1)  # N×2: centre, neighbour
        patches, corners = cut_patches(
            images, cells, 3, self.cell, self.patch, self.gap, self.jitter, return_corners=True
        )
        patches = resize_patches(patches, self.patch_size)  # N×2×3×s×s
        flat = patches.flatten(0, 1)  # (2N)×3×s×s
        if self.colour == "project":
            flat = project_out_green_magenta(flat)
        elif self.colour == "drop":
            flat = drop_colour_channels(flat)
        if self.jitter_p > 0:  # each patch its own colours: no colour statistics to match between the two
            flat = color_jitter(flat, 0.4, 0.4, 0.4, 0.1, p=self.jitter_p)
        if self.gray_p > 0:
            flat = random_grayscale(flat, self.gray_p)
        patches = flat.view_as(patches)
        views = {"center": patches[:, 0], "neighbour": patches[:, 1], "targets": targets}
        if return_corners:
            views["corners"] = corners  # N×2×2: (row, col) of each patch's top-left pixel
        return views

    def logits(self, center: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
        """center, neighbour: N×3×s×s → N×8 position logits (one backbone for both: shared weights)."""
        n = center.shape[0]
        f = self.backbone(torch.cat([center, neighbour]))  # (2N)×D
        return self.classifier(torch.cat([f[:n], f[n:]], 1))  # N×2D → N×8

    def forward(self, views, labels):
        logits = self.logits(views["center"], views["neighbour"])
        loss = pretext_cross_entropy(logits, views["targets"])
        acc = (logits.argmax(1) == views["targets"]).float().mean()
        return {"loss": loss, "pretext_acc": acc}
