"""Masked autoencoders (MAE, He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners").

"We mask random patches of the input image and reconstruct the missing pixels." The design is
asymmetric:

1. cut the image into patches and **mask a random 75%** of them (uniform sampling without
   replacement, done by sorting random noise);
2. the **encoder** (the ViT backbone) sees the **visible patches only**, so its cost scales with
   25% of the tokens;
3. a **lighter decoder** gets the encoded visible tokens plus one shared, learned **mask token** at
   every masked position, all with (its own) position embeddings, and predicts each patch's pixels;
4. the loss is the **MSE on the masked patches only**, optionally against per-patch normalised
   pixels (``norm_pix_loss``).

After pre-training the decoder is thrown away; ``self.backbone`` (the encoder) is the representation.
"""

from __future__ import annotations

import torch
from torch import nn

from sslbook.augment import random_resized_crop
from sslbook.losses import masked_mse
from sslbook.methods.base import Method
from sslbook.models.vit import Block, init_transformer_weights, patchify, sincos_pos_embed_2d, unpatchify


def random_masking(n: int, num_patches: int, mask_ratio: float, device=None, generator: torch.Generator | None = None):
    """MAE's per-sample random masking by shuffling noise.

    Each image draws uniform noise for its L patches; sorting it gives a random permutation
    ``ids_shuffle``; the first ``keep = int(L·(1 − ratio))`` entries are the visible patches.

    Returns (ids_keep N×keep, ids_restore N×L, mask N×L float with 1 = masked, 0 = visible), where
    ``ids_restore`` is the inverse permutation: gathering the shuffled sequence [visible; masked] with
    it restores the original patch order.
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"the mask ratio must be in [0, 1) so that at least one patch stays visible, got {mask_ratio}")
    keep = int(num_patches * (1 - mask_ratio))
    if keep < 1:
        raise ValueError(f"a mask ratio of {mask_ratio} leaves no visible patch out of {num_patches}")
    noise = torch.rand(n, num_patches, device=device, generator=generator)  # N×L
    ids_shuffle = noise.argsort(dim=1)  # ascending: the smallest noise is kept
    ids_restore = ids_shuffle.argsort(dim=1)  # the inverse permutation
    ids_keep = ids_shuffle[:, :keep]
    mask = torch.ones(n, num_patches, device=device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)  # back to the original order
    return ids_keep, ids_restore, mask


def unshuffle(tokens: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
    """tokens N×L×D in shuffled order ([visible; masked]) → the original patch order."""
    return torch.gather(tokens, 1, ids_restore[..., None].expand(-1, -1, tokens.shape[-1]))


class MAE(Method):
    """Masked autoencoder around a ViT backbone (see the module docstring).

    method_kwargs: mask_ratio (0.75), decoder_dim, decoder_depth, decoder_heads, norm_pix_loss
    (True, the paper's default), mask_token_in_encoder (False; True = the ablation where the encoder
    sees every position with mask tokens at the masked ones, and the decoder gets no extra tokens),
    crop_scale (MAE uses random resized crops of scale 0.2–1 and flips, nothing else), pool: what the
    backbone's features (the representation every protocol reads) are: ``mean``, the average of the patch
    tokens, as MAE fine-tunes ("global pooling"; the paper finds it works as well as the class token), or
    ``cls``, the [CLS] token, which the reconstruction trains only through the decoder's attention.
    """

    name = "mae"
    adamw_betas = (0.9, 0.95)  # MAE pre-training, Appendix A.1

    def __init__(
        self,
        backbone,
        info,
        image_size,
        mask_ratio=0.75,
        decoder_dim=128,
        decoder_depth=2,
        decoder_heads=4,
        norm_pix_loss=True,
        mask_token_in_encoder=False,
        crop_scale=(0.2, 1.0),
        pool="mean",
    ):
        super().__init__(backbone, info, image_size)
        if not hasattr(backbone, "forward_tokens") or not hasattr(backbone, "patch_size"):
            raise ValueError(
                "mae needs a ViT backbone (forward_tokens, patch_size): use backbone=vit_tiny, vit_small or vit_base"
            )
        if pool not in ("mean", "cls"):
            raise ValueError(f"mae's pool must be 'mean' (the patch tokens' average) or 'cls', got {pool!r}")
        backbone.pool = pool
        p = backbone.patch_size
        if image_size % p:
            raise ValueError(f"mae needs an image size divisible by the patch size {p}; got {image_size}")
        random_masking(1, (image_size // p) ** 2, mask_ratio)  # validates the ratio early
        self.mask_ratio, self.norm_pix_loss = float(mask_ratio), bool(norm_pix_loss)
        self.mask_token_in_encoder = bool(mask_token_in_encoder)
        self.crop_scale = tuple(crop_scale)
        self.grid = image_size // p
        dim = backbone.out_dim
        # one learned mask token, where the masked positions enter the network (every parameter is used,
        # as DistributedDataParallel wants)
        if self.mask_token_in_encoder:
            self.encoder_mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        else:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.register_buffer(
            "decoder_pos", sincos_pos_embed_2d(decoder_dim, self.grid, self.grid)[None], persistent=False
        )
        self.decoder_blocks = nn.ModuleList([Block(decoder_dim, decoder_heads) for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_dim, p * p * 3)  # pixels of one patch
        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            init_transformer_weights(module)
        nn.init.normal_(self.encoder_mask_token if self.mask_token_in_encoder else self.mask_token, std=0.02)

    @torch.no_grad()
    def make_views(self, images, labels):
        return [random_resized_crop(images, self.image_size, self.crop_scale, flip_p=0.5)]

    def encode(self, x, mask_ratio=None, generator=None):
        """Mask and encode: returns (latent N×(1+L')×D, mask N×L, ids_restore N×L)."""
        ratio = self.mask_ratio if mask_ratio is None else mask_ratio
        ids_keep, ids_restore, mask = random_masking(x.shape[0], self.grid**2, ratio, x.device, generator)
        if self.mask_token_in_encoder:  # every position enters the encoder; masked ones as a mask token
            latent = self.backbone.forward_tokens(x, mask=mask, mask_token=self.encoder_mask_token)  # N×(1+L)×D
        else:  # only the visible patches: the encoder's cost scales with (1 − ratio)·L
            latent = self.backbone.forward_tokens(x, ids_keep=ids_keep)  # N×(1+keep)×D
        return latent, mask, ids_restore

    def decode(self, latent, ids_restore):
        """latent N×(1+L')×D → predicted patches N×L×(p·p·3)."""
        y = self.decoder_embed(latent)  # N×(1+L')×d
        if not self.mask_token_in_encoder:
            n, L = ids_restore.shape
            masks = self.mask_token.to(y.dtype).expand(n, L + 1 - y.shape[1], -1)  # N×(L−keep)×d
            patches = unshuffle(torch.cat([y[:, 1:], masks], dim=1), ids_restore)  # N×L×d, original order
            y = torch.cat([y[:, :1], patches], dim=1)
        y = y + self.decoder_pos
        for block in self.decoder_blocks:
            y = block(y)
        return self.decoder_pred(self.decoder_norm(y))[:, 1:]  # drop [CLS]: N×L×(p·p·3)

    def forward(self, views, labels):
        x = views[0]  # N×3×H×W in [0, 1]
        latent, mask, ids_restore = self.encode(x)
        pred = self.decode(latent, ids_restore)
        target = patchify(x, self.backbone.patch_size)  # N×L×(p·p·3), pixels in [0, 1]
        loss = masked_mse(pred, target, mask, normalize_target=self.norm_pix_loss)
        return {"loss": loss}

    @torch.no_grad()
    def reconstruct(self, x, mask_ratio=None, generator=None) -> dict:
        """For pictures: x N×3×H×W → dict of images N×3×H×W (``masked``: visible patches only,
        ``reconstruction``: prediction, ``pasted``: prediction with the visible patches pasted back),
        ``mask`` N×L and ``mask_pixels`` (N×H×W bool: the pixels of the masked patches). With normalised
        targets the prediction is mapped back to pixels with each true patch's mean and std, as the MAE
        paper's figures do (a decoder that predicts 0 then gives each masked patch its flat mean)."""
        p = self.backbone.patch_size
        latent, mask, ids_restore = self.encode(x, mask_ratio, generator)
        pred = self.decode(latent, ids_restore).float()
        target = patchify(x, p)
        if self.norm_pix_loss:
            mean, var = target.mean(-1, keepdim=True), target.var(-1, keepdim=True)
            pred = pred * (var + 1e-6).sqrt() + mean
        m = mask[..., None]
        return {
            "mask": mask,
            "mask_pixels": unpatchify(m.expand_as(target), p)[:, 0] > 0.5,  # the patch layout of unpatchify itself
            "masked": unpatchify(target * (1 - m) + 0.5 * m, p).clamp(0, 1),  # masked patches grey
            "reconstruction": unpatchify(pred, p).clamp(0, 1),
            "pasted": unpatchify(target * (1 - m) + pred * m, p).clamp(0, 1),
        }
