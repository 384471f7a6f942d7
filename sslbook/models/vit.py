"""A Vision Transformer written from scratch (Dosovitskiy et al. 2021, "An image is worth 16×16 words").

The image is cut into non-overlapping p×p patches, each patch is flattened and projected linearly to a
D-dimensional token, a learnable [CLS] token is prepended, position embeddings are added (fixed 2-D
sin-cos, as MAE uses, or learned), and a stack of pre-norm Transformer blocks mixes the tokens:

    x: N×3×H×W → patchify → N×L×(p·p·3) → linear → N×L×D   (L = H/p · W/p)
    tokens = [CLS; patches] + pos                            N×(1+L)×D
    for each block: t = t + MHSA(LN(t)); t = t + MLP(LN(t))
    features = LN(t)[:, 0] ([CLS]) or mean over the patch tokens

API used by MAE, MoCo v3 and DINO:

- ``forward(x) -> N×D`` features (``pool="cls"`` or ``"mean"``), ``out_dim = D``, ``patch_size = p``;
- ``forward_tokens(x, ids_keep=None, mask=None, mask_token=None) -> N×(1+L')×D``: all tokens after the
  final norm, optionally only the kept patches ``ids_keep`` (N×L', MAE's encoder on visible tokens),
  or with the patches where ``mask`` is True replaced by ``mask_token`` (the "mask token in the
  encoder" ablation, BEiT/iBOT style);
- ``get_attention_maps(x) -> [N×heads×T×T per layer]``, T = 1 + L;
- ``feature_maps(x) -> N×D×h×w``: the patch tokens on their grid (dense protocols, :mod:`sslbook.dense`).

Attention uses ``torch.nn.functional.scaled_dot_product_attention`` (a fused kernel on GPU); a second,
explicit path (softmax(QKᵀ/√d)·V) returns the attention weights for pictures.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from sslbook.models.normalize import Normalize


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Images N×C×H×W → patches N×L×(p·p·C), row-major over the grid (L = H/p · W/p)."""
    if x.shape[-1] % p or x.shape[-2] % p:
        raise ValueError(f"patchify needs an image size divisible by the patch size {p}; got {tuple(x.shape[-2:])}")
    return rearrange(x, "n c (h p1) (w p2) -> n (h w) (p1 p2 c)", p1=p, p2=p)


def unpatchify(
    patches: torch.Tensor, p: int, h: int | None = None, w: int | None = None, channels: int = 3
) -> torch.Tensor:
    """Patches N×L×(p·p·C) → images N×C×H×W; the grid is h×w (square by default)."""
    L = patches.shape[1]
    if h is None or w is None:
        h = w = int(round(math.sqrt(L)))
    if h * w != L or patches.shape[2] != p * p * channels:
        raise ValueError(
            f"unpatchify: {L} patches of {patches.shape[2]} values do not form a {h}×{w} grid of {p}×{p}×{channels}"
        )
    return rearrange(patches, "n (h w) (p1 p2 c) -> n c (h p1) (w p2)", h=h, w=w, p1=p, p2=p, c=channels)


def sincos_pos_embed_2d(dim: int, h: int, w: int, cls_token: bool = True) -> torch.Tensor:
    """Fixed 2-D sin-cos position embeddings (MAE, after "Attention is all you need"), (cls + h·w)×dim.

    Half the channels encode the row, half the column; each half is [sin(pos·ω_k), cos(pos·ω_k)]
    with ω_k = 1 / 10000^(k / (dim/4)). The [CLS] position gets zeros."""
    if dim % 4:
        raise ValueError(f"2-D sin-cos position embeddings need a dimension divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))  # dim/4
    rows, cols = torch.meshgrid(
        torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij"
    )

    def encode(pos):  # (h·w) → (h·w)×dim/2
        angles = pos.flatten()[:, None] * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    emb = torch.cat([encode(rows), encode(cols)], dim=1).float()  # (h·w)×dim
    if cls_token:
        emb = torch.cat([torch.zeros(1, dim), emb], dim=0)
    return emb


class Attention(nn.Module):
    """Multi-head self-attention: softmax(Q Kᵀ / √d) V per head."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"the width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        # x: N×T×D → q, k, v: N×heads×T×d
        q, k, v = rearrange(self.qkv(x), "n t (three h d) -> three n h t d", three=3, h=self.heads)
        if return_attention:
            attn = torch.einsum("nhtd,nhsd->nhts", q, k).mul(self.scale).float().softmax(dim=-1)  # N×heads×T×T
            out = torch.einsum("nhts,nhsd->nhtd", attn.to(v.dtype), v)
        else:
            attn = None
            out = F.scaled_dot_product_attention(q, k, v)  # fused (flash / memory-efficient) on GPU
        return self.proj(rearrange(out, "n h t d -> n t (h d)")), attn


class Block(nn.Module):
    """Pre-norm Transformer block: t + MHSA(LN(t)), then t + MLP(LN(t)) with a GELU MLP of width ratio·D."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        y, attn = self.attn(self.norm1(x), return_attention)
        x = x + y
        x = x + self.mlp(self.norm2(x))
        return (x, attn) if return_attention else x


def init_transformer_weights(module: nn.Module) -> None:
    """MAE's initialisation: Xavier-uniform linear layers with zero bias, LayerNorm (1, 0)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class PatchConvStem(nn.Module):
    """A small convolutional network applied to each p×p patch on its own, in place of the linear patch
    embedding: 3×3 convolutions with BatchNorm and ReLU (the first at stride 1, then stride 2 until the patch
    is 2×2 or 1×1), flattened and projected to D. It gives every token a non-linear description of its patch, as
    the convolutional stems of Xiao et al. 2021 ("Early convolutions help transformers see better") do, but a
    token never sees another patch's pixels, so MAE's masked patches stay hidden from the visible ones.

    Input: patchify's flattened patches N×L×(p·p·3); output N×L×D."""

    def __init__(self, patch_size: int, dim: int, width: int = 32):
        super().__init__()
        self.patch_size = patch_size
        layers, c_in, size, c = [], 3, patch_size, width
        layers += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        while size > 2:
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * c), nn.ReLU(True)]
            c, size = 2 * c, (size + 1) // 2
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Linear(c * size * size, dim)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        n, L, _ = patches.shape
        p = self.patch_size
        x = rearrange(patches, "n l (p1 p2 c) -> (n l) c p1 p2", p1=p, p2=p)
        return self.proj(self.convs(x).flatten(1)).view(n, L, -1)


class VisionTransformer(nn.Module):
    """ViT backbone: images in [0, 1] N×3×H×W → features N×D (see the module docstring).

    ``image_size`` only sets the grid of learned position embeddings (interpolated for other sizes);
    sin-cos embeddings are computed for any grid.
    """

    def __init__(
        self,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        image_size: int = 224,
        patch_size: int = 16,
        dim: int = 768,
        depth: int = 12,
        heads: int = 12,
        mlp_ratio: float = 4.0,
        pos_embed: str = "sincos",
        pool: str = "cls",
        stem: str = "linear",
        stem_width: int = 32,
    ):
        super().__init__()
        if pos_embed not in ("sincos", "learned"):
            raise ValueError(f"pos_embed must be 'sincos' or 'learned', got {pos_embed!r}")
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        if stem not in ("linear", "conv"):
            raise ValueError(f"stem must be 'linear' or 'conv', got {stem!r}")
        if image_size % patch_size:
            raise ValueError(f"the image size {image_size} is not divisible by the patch size {patch_size}")
        self.normalize = Normalize(mean, std)
        self.patch_size, self.out_dim, self.depth, self.heads = patch_size, dim, depth, heads
        self.image_size, self.pool, self.pos_embed_kind = image_size, pool, pos_embed
        self.stem = stem
        if stem == "linear":  # on patchify's flattened patches
            self.patch_embed = nn.Linear(patch_size * patch_size * 3, dim)
        else:
            self.patch_embed = PatchConvStem(patch_size, dim, stem_width)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        grid = image_size // patch_size
        if pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        else:  # fixed: a buffer (not saved; recomputed for any grid)
            self.register_buffer("pos_embed", sincos_pos_embed_2d(dim, grid, grid)[None], persistent=False)
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        init_transformer_weights(self)
        nn.init.normal_(self.cls_token, std=0.02)
        if pos_embed == "learned":
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def grid(self, x: torch.Tensor) -> tuple[int, int]:
        p = self.patch_size
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"the ViT needs image sides divisible by its patch size {p}; got {tuple(x.shape[-2:])}")
        return x.shape[-2] // p, x.shape[-1] // p

    def position_embeddings(self, h: int, w: int) -> torch.Tensor:
        """1×(1+h·w)×D position embeddings for an h×w grid of patches."""
        pos = self.pos_embed
        if pos.shape[1] == 1 + h * w and h == w:
            return pos
        if self.pos_embed_kind == "sincos":
            return sincos_pos_embed_2d(self.out_dim, h, w)[None].to(pos)
        g = int(math.sqrt(pos.shape[1] - 1))  # learned: bicubic interpolation of the patch grid
        patch_pos = rearrange(pos[:, 1:], "1 (h w) d -> 1 d h w", h=g, w=g)
        patch_pos = F.interpolate(patch_pos, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([pos[:, :1], rearrange(patch_pos, "1 d h w -> 1 (h w) d")], dim=1)

    def embed(self, x: torch.Tensor, ids_keep=None, mask=None, mask_token=None) -> torch.Tensor:
        """Patch tokens with [CLS] and positions: N×(1+L')×D."""
        h, w = self.grid(x)
        pos = self.position_embeddings(h, w)
        t = self.patch_embed(patchify(self.normalize(x), self.patch_size))  # N×L×D
        if mask is not None:  # masked patches replaced by a (learned) mask token before the positions
            if mask_token is None:
                raise ValueError("forward_tokens: mask needs a mask_token (1×1×D)")
            t = torch.where(mask.bool()[..., None], mask_token.to(t.dtype).expand_as(t), t)
        t = t + pos[:, 1:]
        if ids_keep is not None:  # keep only the visible patches: N×L'×D
            t = torch.gather(t, 1, ids_keep[..., None].expand(-1, -1, t.shape[-1]))
        cls = (self.cls_token + pos[:, :1]).expand(t.shape[0], -1, -1)
        return torch.cat([cls, t], dim=1)

    def forward_tokens(self, x: torch.Tensor, ids_keep=None, mask=None, mask_token=None) -> torch.Tensor:
        """All tokens after the last block and norm: N×(1+L')×D ([CLS] first).

        ids_keep: N×L' indices of the patches to encode (others are dropped: the cost scales with L');
        mask: N×L bool, patches to replace by ``mask_token`` (1×1×D)."""
        t = self.embed(x, ids_keep, mask, mask_token)
        for block in self.blocks:
            t = block(t)
        return self.norm(t)

    def pool_tokens(self, t: torch.Tensor) -> torch.Tensor:
        return t[:, 0] if self.pool == "cls" else t[:, 1:].mean(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool_tokens(self.forward_tokens(x))  # N×D

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The patch tokens after the last block and norm as a spatial map N×D×h×w (h×w the patch grid;
        [CLS] left out), what dense protocols read, like a CNN's last map before pooling."""
        h, w = self.grid(x)
        return rearrange(self.forward_tokens(x)[:, 1:], "n (h w) d -> n d h w", h=h, w=w)

    @torch.no_grad()
    def get_attention_maps(self, x: torch.Tensor, ids_keep=None) -> list[torch.Tensor]:
        """Attention weights of every layer: a list of ``depth`` tensors N×heads×T×T (T = 1 + L');
        row i is where token i looks; token 0 is [CLS]."""
        t = self.embed(x, ids_keep)
        maps = []
        for block in self.blocks:
            t, attn = block(t, return_attention=True)
            maps.append(attn)
        return maps


def vit(mean, std, size: str = "tiny", **kwargs) -> VisionTransformer:
    """A ViT by size name; ``kwargs`` override the preset widths (e.g. ``patch_size``)."""
    sizes = {
        # tiny: for 32×32 inputs on a CPU: 16 patches of 8×8, width 96, 4 blocks, 3 heads (0.45 M parameters;
        # patch 4 (64 patches) costs 3–4× more per step on 2 CPU cores, width 128/192 and 6 blocks more still)
        "tiny": dict(image_size=32, patch_size=8, dim=96, depth=4, heads=3),
        "small": dict(image_size=224, patch_size=16, dim=384, depth=12, heads=6),  # ViT-S/16 (DeiT-S)
        "base": dict(image_size=224, patch_size=16, dim=768, depth=12, heads=12),  # ViT-B/16
    }
    if size not in sizes:
        raise ValueError(f"unknown ViT size {size!r}; choose one of {sorted(sizes)}")
    return VisionTransformer(mean, std, **{**sizes[size], **kwargs})
