"""PIRL: Pretext-Invariant Representation Learning (Misra & van der Maaten 2020).

Instead of *predicting* the jigsaw permutation (chapter 2), learn a representation that is **invariant**
to it: the image I and its jigsaw-transformed version I_t (3×3 tiles, shuffled) should map to the same
point. Two heads: f(v_I) projects the image's features; g(v_It) encodes each tile with the same backbone,
projects it, concatenates the 9 tile codes in their (shuffled) order and projects again. A **memory
bank** keeps m_I, a moving average of f(v_I) over training; negatives are drawn from it. The loss is the
paper's convex combination (eq. 5, λ = 0.5), each term a contrastive loss against m_I:

    L = λ·L_NCE(m_I, g(v_It)) + (1 − λ)·L_NCE(m_I, f(v_I))

(we use the InfoNCE form of each term, τ = 0.07). The bank is indexed by the image's position in the
training set, so ``make_views`` takes ``indices``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslbook.augment import ViewRecipe
from sslbook.losses import info_nce
from sslbook.methods.base import Method
from sslbook.methods.momentum import MemoryBank, check_temperature
from sslbook.methods.patches import cut_patches, grid_geometry
from sslbook.models.heads import head


def jigsaw_tiles(
    x: torch.Tensor, grid: int = 3, gap: int = 0, jitter: int = 0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Cut each image into grid×grid tiles and shuffle them, with a random permutation per image.

    The tiles are cut by chapter 2's :func:`~sslbook.methods.patches.cut_patches` (a grid of cells of
    side S // grid, each tile ``gap`` pixels from its neighbours and shifted by up to ``jitter``), taking
    the cells in a random order. PIRL draws any permutation (there is nothing to classify, so no fixed
    set as in chapter 2's jigsaw). x: N×3×S×S → N×grid²×3×p×p, tiles in shuffled order.
    """
    n = x.shape[0]
    cell, patch = grid_geometry(x.shape[-1], grid, gap, jitter, "pirl's jigsaw")
    cells = torch.rand(n, grid * grid, device=x.device, generator=generator).argsort(
        1
    )  # N×g²: a random permutation per image
    return cut_patches(x, cells, grid, cell, patch, gap, jitter, generator=generator)


class PIRL(Method):
    name = "pirl"
    needs_indices = True  # make_views(images, labels, indices=...): the dataset index of every image

    def __init__(
        self,
        backbone,
        info,
        image_size,
        bank_size=50000,
        num_negatives=4096,
        temperature=0.07,
        bank_momentum=0.5,
        dim=128,
        lam=0.5,
        grid=3,
        gap=0,
        jitter=0,
        crop_scale=(0.2, 1.0),
    ):
        super().__init__(backbone, info, image_size)
        self.temperature = check_temperature(self.name, temperature)
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"pirl's λ weighs two losses and must be in [0, 1], got {lam}")
        self.lam, self.grid, self.num_negatives = float(lam), int(grid), int(num_negatives)
        self.gap, self.jitter = int(gap), int(jitter)
        grid_geometry(
            image_size, self.grid, self.gap, self.jitter, "pirl's jigsaw"
        )  # a clear error if the image is too small
        d = backbone.out_dim
        self.f = head([(d, dim, False, False)])  # f: image features → 128
        self.g_tile = head([(d, dim, False, False)])  # g, first part: each tile → 128
        self.g = head([(grid * grid * dim, dim, False, False)])  # g, second part: 9 concatenated codes → 128
        self.bank = MemoryBank(int(bank_size), dim, bank_momentum)
        self.image_recipe = ViewRecipe(size=image_size, scale=tuple(crop_scale))
        self.jigsaw_recipe = ViewRecipe(size=image_size, scale=(0.6, 1.0))

    @torch.no_grad()
    def make_views(self, images, labels, indices=None):
        indices = self.bank.check_index(indices, self.name)
        return {
            "image": self.image_recipe(images),  # N×3×s×s
            "tiles": jigsaw_tiles(self.jigsaw_recipe(images), self.grid, self.gap, self.jitter),  # N×9×3×p×p
            "index": indices.to(images.device),
        }

    def forward(self, views, labels):
        if not isinstance(views, dict) or not {"image", "tiles", "index"} <= set(views):
            raise ValueError(f"{self.name} needs the views made by its make_views(images, labels, indices=...)")
        x, tiles, index = views["image"], views["tiles"], self.bank.check_index(views["index"], self.name)
        n, t = tiles.shape[:2]
        if x.shape[0] != n:
            raise ValueError(f"pirl: {x.shape[0]} images but {n} jigsaw views")
        f_img = self.f(self.backbone(x))  # N×D
        g_tiles = self.g_tile(self.backbone(tiles.flatten(0, 1)))  # (N·9)×D
        g_jig = self.g(g_tiles.reshape(n, t * g_tiles.shape[1]))  # N×D
        m = self.bank.get(index)  # N×D: m_I
        negatives = self.bank.sample(self.num_negatives)  # K×D
        loss_jig = info_nce(g_jig, m, negatives, self.temperature)
        loss_img = info_nce(f_img, m, negatives, self.temperature)
        loss = self.lam * loss_jig + (1 - self.lam) * loss_img
        if self.training:
            self.bank.update(index, f_img)  # m_I ← normalise(0.5 m_I + 0.5 f(v_I))
        with torch.no_grad():
            agree = (F.normalize(g_jig.float(), dim=1) * F.normalize(f_img.float(), dim=1)).sum(1).mean()
        return {"loss": loss, "loss_jigsaw": loss_jig.detach(), "loss_image": loss_img.detach(), "f_g_sim": agree}
