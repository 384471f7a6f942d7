"""Jigsaw puzzles (Noroozi & Favaro, ECCV 2016): put shuffled tiles back in order.

The image is cut into a 3×3 grid of tiles (with gaps and jitter, as in relative position), the tiles
are shuffled by one permutation from a fixed set, and the network classifies *which* permutation it
was. The set is chosen so its permutations are far apart in Hamming distance (the number of tiles in a
different place): "the minimum distance between permutations [...] defines how difficult the pretext
task is", and near-duplicates would only add confusion. :func:`permutation_set` builds it greedily,
each new permutation maximising its minimum distance to those already chosen.

Every tile goes through the *same* backbone (a "context-free network": shared weights, no tile sees
another before the head), the nine feature vectors are concatenated in the shuffled order, and a head
classifies the permutation. Tiles are resized to ``tile_size`` pixels before the backbone, which ends
with global pooling, so the backbone evaluated later on whole images is exactly the tile encoder.
"""

from __future__ import annotations

import functools
import itertools

import torch

from sslbook.augment import color_jitter, random_grayscale
from sslbook.losses import pretext_cross_entropy
from sslbook.methods.base import Method
from sslbook.methods.patches import cut_patches, grid_geometry, resize_patches
from sslbook.models.heads import head


def hamming_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a: M×T, b: K×T permutations → M×K number of positions where they differ."""
    return (a.unsqueeze(1) != b.unsqueeze(0)).sum(-1)


@functools.lru_cache(maxsize=16)
def _greedy_set(n: int, tiles: int, seed: int) -> torch.Tensor:
    every = torch.tensor(list(itertools.permutations(range(tiles))), dtype=torch.int8)  # T!×T
    if n > len(every):
        raise ValueError(f"a set of {n} permutations of {tiles} tiles is impossible: there are only {len(every)}")
    g = torch.Generator().manual_seed(seed)
    chosen = [int(torch.randint(len(every), (1,), generator=g))]
    min_dist = (every != every[chosen[0]]).sum(1)  # T!: distance to the nearest chosen permutation
    for _ in range(n - 1):
        best = int(min_dist.max())
        candidates = (min_dist == best).nonzero().flatten()  # ties broken at random
        j = int(candidates[torch.randint(len(candidates), (1,), generator=g)])
        chosen.append(j)
        min_dist = torch.minimum(min_dist, (every != every[j]).sum(1))
    return every[chosen].long()


def permutation_set(n: int = 100, tiles: int = 9, min_distance: int | None = None, seed: int = 0) -> torch.Tensor:
    """``n`` permutations of ``tiles`` tiles (n×tiles, long), chosen greedily for maximal Hamming distance.

    With ``min_distance``, raise a ValueError if the set's smallest pairwise distance is lower.
    """
    if n < 2:
        raise ValueError(f"a permutation set needs at least 2 permutations, got {n}")
    perms = _greedy_set(n, tiles, seed).clone()
    if min_distance is not None:
        d = hamming_distances(perms, perms)
        d.fill_diagonal_(tiles + 1)
        got = int(d.min())
        if got < min_distance:
            raise ValueError(
                f"the greedy set of {n} permutations has minimum Hamming distance {got} < {min_distance}; ask for fewer permutations"
            )
    return perms


class Jigsaw(Method):
    name = "jigsaw"

    def __init__(
        self,
        backbone,
        info,
        image_size,
        num_permutations=100,
        gap=2,
        jitter=1,
        tile_size=16,
        tile_dim=128,
        hidden=512,
        gray_p=0.3,
        seed=0,
    ):
        super().__init__(backbone, info, image_size)
        self.gap, self.jitter, self.tile_size, self.gray_p = gap, jitter, tile_size, gray_p
        self.cell, self.tile = grid_geometry(image_size, 3, gap, jitter, "jigsaw")
        self.register_buffer("permutations", permutation_set(num_permutations, 9, seed=seed), persistent=False)
        d = backbone.out_dim
        # per-tile projection (shared), then the permutation classifier on the 9 concatenated tiles
        self.tile_head = head([(d, tile_dim, True, True)])
        self.classifier = head([(9 * tile_dim, hidden, True, True), (hidden, num_permutations, False, False)])

    @torch.no_grad()
    def make_views(self, images, labels):
        n, dev = images.shape[0], images.device
        cells = torch.arange(9, device=dev).expand(n, 9)
        tiles = cut_patches(images, cells, 3, self.cell, self.tile, self.gap, self.jitter)  # N×9×3×t×t, in grid order
        targets = torch.randint(0, len(self.permutations), (n,), device=dev)  # N
        perm = self.permutations[targets]  # N×9: slot i shows the tile of grid cell perm[i]
        shuffled = tiles[torch.arange(n, device=dev).unsqueeze(1), perm]  # N×9×3×t×t
        shuffled = resize_patches(shuffled, self.tile_size)
        flat = shuffled.flatten(0, 1)  # (9N)×3×s×s
        flat = color_jitter(flat, 0.4, 0.4, 0.4, 0.0, p=0.5)  # per tile: no shared colour statistics to match
        if self.gray_p > 0:
            flat = random_grayscale(flat, self.gray_p)
        return {"tiles": flat.view_as(shuffled), "targets": targets}

    def logits(self, tiles: torch.Tensor) -> torch.Tensor:
        """tiles: N×9×3×s×s (shuffled) → N×P permutation logits."""
        n = tiles.shape[0]
        f = self.tile_head(self.backbone(tiles.flatten(0, 1)))  # (9N)×d, one shared encoder for all tiles
        return self.classifier(f.view(n, -1))  # N×9d → N×P

    def forward(self, views, labels):
        logits = self.logits(views["tiles"])
        loss = pretext_cross_entropy(logits, views["targets"])
        acc = (logits.argmax(1) == views["targets"]).float().mean()
        return {"loss": loss, "pretext_acc": acc}
