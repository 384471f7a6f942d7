"""Context encoders: feature learning by inpainting (Pathak et al. 2016).

"We train a convolutional neural network to generate the contents of an arbitrary image region
conditioned on its surroundings." An encoder (the evaluated backbone) reads the image with a square
region blanked out; a decoder paints the region back. The loss is a masked L2 reconstruction plus an
adversarial term from a discriminator trained at the same time:

    L = λ_rec · ‖M ⊙ (x − G(x ⊙ (1 − M)))‖² + λ_adv · L_adv(G)         (the paper: λ_rec = 0.999, λ_adv = 0.001)

L2 alone gives the blurry mean of all plausible fillings; the adversarial term pushes toward *one*
sharp, plausible filling.

**One optimiser, one backward, two players.** The trainer gives every parameter of the method to one
optimiser and calls ``loss.backward()`` once. We make that single loss train both players with the
right signs by choosing which tensors each term can reach:

- the discriminator loss ``BCE(D(x), 1) + BCE(D(x̂.detach()), 0)`` sees the generated image through
  ``detach()``: its gradient reaches D only;
- the generator's adversarial loss ``BCE(D̄(x̂), 1)`` (the non-saturating GAN loss) is computed with a
  *frozen copy* D̄ of the discriminator: the same weights, detached (``torch.func.functional_call``), so
  its gradient reaches the generator (decoder and encoder) only.

Summing the terms is then exactly one step of each player. (A gradient-reversal layer between G and
D is the other classic trick; it gives the saturating minimax loss, whose gradient vanishes when D
wins, which is why we prefer the detach trick.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from sslbook.losses import masked_pixel_mse
from sslbook.methods._spatial import feature_map_shape, nearest_sizes, up_block
from sslbook.methods.base import Method


def random_square_masks(
    n: int, image_size: int, mask_size: int, device=None, generator=None, holes: int = 1
) -> torch.Tensor:
    """``holes`` square holes of side ``mask_size`` at random places per image (they may overlap):
    N×1×S×S float, 1 inside a hole. Pathak et al. compare one central square with random blocks and
    random regions; random holes learn the better features."""
    if not 0 < mask_size < image_size:
        raise ValueError(
            f"context_encoder needs 0 < mask_size < image size, got mask_size={mask_size}, image size {image_size}"
        )
    if holes > 1:
        masks = [random_square_masks(n, image_size, mask_size, device, generator) for _ in range(holes)]
        return torch.stack(masks).amax(0)
    top = torch.randint(0, image_size - mask_size + 1, (n,), device=device, generator=generator)
    left = torch.randint(0, image_size - mask_size + 1, (n,), device=device, generator=generator)
    r = torch.arange(image_size, device=device)
    rows = (r.view(1, -1) >= top.view(-1, 1)) & (r.view(1, -1) < (top + mask_size).view(-1, 1))  # N×S
    cols = (r.view(1, -1) >= left.view(-1, 1)) & (r.view(1, -1) < (left + mask_size).view(-1, 1))  # N×S
    return (rows.unsqueeze(2) & cols.unsqueeze(1)).unsqueeze(1).float()


def _decodable(side: int, image_size: int) -> bool:
    """True when ×2 upsampling blocks take a side×side feature map to exactly half the image size
    (the decoder's last step is a bilinear ×2 to the full size)."""
    if side < 1:
        return False
    while side < image_size // 2:
        side *= 2
    return side * 2 == image_size


class Discriminator(nn.Module):
    """A small DCGAN-style critic: strided convs with LeakyReLU (no BatchNorm, so its frozen copy is exact)."""

    def __init__(self, image_size: int, width: int = 16):
        super().__init__()
        layers, c, s = [], 3, image_size
        for c_out in (width, 2 * width, 4 * width):
            layers += [nn.Conv2d(c, c_out, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            c, s = c_out, s // 2
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * s * s, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1).squeeze(1)  # N logits: "this image is real"


class ContextEncoder(Method):
    name = "context_encoder"

    def __init__(
        self,
        backbone,
        info,
        image_size,
        mask_size: int | None = None,
        rec_weight: float = 0.999,
        adv_weight: float = 0.001,
        disc_width: int = 16,
        holes: int = 1,
    ):
        super().__init__(backbone, info, image_size)
        self.mask_size = mask_size or image_size // 2
        random_square_masks(1, image_size, self.mask_size)  # validates the size now, with a clear message
        self.rec_weight, self.adv_weight, self.holes = float(rec_weight), float(adv_weight), int(holes)
        c, side = feature_map_shape(backbone, image_size)
        if not _decodable(side, image_size):
            below, above = nearest_sizes(lambda s: _decodable(feature_map_shape(backbone, s)[1], s), image_size)
            sizes = " or ".join(f"{s}×{s}" for s in (below, above) if s is not None) or "another size"
            raise ValueError(
                f"context_encoder cannot paint back a {image_size}×{image_size} image with this backbone: the decoder doubles "
                f"the backbone's {side}×{side} feature map up to the image size, so the image side must be the feature-map "
                f"side times a power of 2; use image size {sizes}"
            )
        blocks, width = [], c
        while side < image_size // 2:  # ×2 upsampling blocks up to half the image size …
            c_out = max(width // 4 if not blocks else width // 2, 16)
            blocks.append(up_block(width, c_out))
            width, side = c_out, side * 2
        # … then RGB, and a bilinear ×2 to full size (the last full-resolution conv would cost as much as the encoder)
        self.decoder = nn.Sequential(
            *blocks,
            nn.Conv2d(width, 3, 3, 1, 1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Sigmoid(),
        )
        self.discriminator = Discriminator(image_size, disc_width) if self.adv_weight > 0 else None
        self.register_buffer("fill", torch.tensor(info.mean, dtype=torch.float32).view(1, 3, 1, 1))

    @torch.no_grad()
    def make_views(self, images, labels):
        masks = random_square_masks(
            images.shape[0], self.image_size, self.mask_size, device=images.device, holes=self.holes
        )
        return [images, masks]  # x: N×3×S×S, M: N×1×S×S

    def inpaint(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the decoder's full output, the image with the hole filled by it). images N×3×S×S, masks N×1×S×S."""
        context = images * (1 - masks) + self.fill.to(images.dtype) * masks  # the hole holds the data set's mean colour
        pred = self.decoder(self.backbone.feature_maps(context)).float()  # N×3×S×S
        return pred, images * (1 - masks) + pred * masks

    def forward(self, views, labels):
        images, masks = views
        pred, filled = self.inpaint(images, masks)
        rec = masked_pixel_mse(pred, images, masks)
        out = {"rec": rec.detach()}
        loss = self.rec_weight * rec
        if self.discriminator is not None:
            real_logit = self.discriminator(images)
            fake_logit = self.discriminator(filled.detach())  # D's view of the fake: no gradient to G
            ones, zeros = torch.ones_like(real_logit), torch.zeros_like(real_logit)
            d_loss = F.binary_cross_entropy_with_logits(
                real_logit.float(), ones.float()
            ) + F.binary_cross_entropy_with_logits(fake_logit.float(), zeros.float())
            frozen = {k: v.detach() for k, v in self.discriminator.named_parameters()}
            g_logit = functional_call(self.discriminator, frozen, (filled,))  # D̄(x̂): gradient to G only
            g_adv = F.binary_cross_entropy_with_logits(g_logit.float(), ones.float())  # non-saturating: G wants "real"
            loss = loss + self.adv_weight * g_adv + d_loss
            d_acc = 0.5 * ((real_logit > 0).float().mean() + (fake_logit < 0).float().mean())
            out.update(adv=g_adv.detach(), d_loss=d_loss.detach(), d_acc=d_acc.detach())
        out["loss"] = loss
        return out
