"""BigBiGAN (Donahue & Simonyan, NeurIPS 2019, "Large Scale Adversarial Representation Learning").

A GAN's generator G maps a latent z to an image; it learns nothing about the image → z direction that
a representation needs. BiGAN (Donahue, Krähenbühl & Darrell, ICLR 2017, "Adversarial Feature
Learning") and ALI (Dumoulin et al., ICLR 2017, "Adversarially Learned Inference") add an **encoder**
E: x → z and let the discriminator judge *pairs*: real pairs (x, E(x)) against fake pairs (G(z), z).
At the optimum the two joint distributions match, so E inverts G; E's features are the representation
(here E = the backbone followed by a small head to z; the evaluation protocols read the backbone).

BigBiGAN's discriminator has three parts: F on x, H on z and J on both, giving three scores: a unary
score on x alone, s_x, one on z alone, s_z, and the joint s_xz = J(F(x), H(z)). The unary terms tell
the generator and the encoder whether their images and latents look right on their own, beside whether
the pairs fit. Losses (the paper's eq. for ℓ_D and ℓ_EG, y = +1 for real and −1 for fake pairs)::

    L_D  = E[ h(y·s_x) + h(y·s_z) + h(y·s_xz) ],   h(t) = max(0, 1 − t)   (the hinge)
    L_EG = E[ y·(s_x + s_z + s_xz) ]

(:func:`sslbook.losses.hinge_discriminator` and :func:`sslbook.losses.hinge_generator`).

**One optimiser, one backward.** The trainer takes one ``loss.backward()`` per step, so the two players'
losses are summed, and each player must receive the gradient of its own loss only. The discriminator's
loss is computed on *detached* images and latents (no gradient reaches G or E); the encoder's and
generator's loss reads the discriminator through a copy of its parameters cut from the graph
(``torch.func.functional_call`` with detached tensors: no gradient reaches D). The discriminator's
parameters thus get exactly ∇L_D, G's and E's exactly ∇L_EG (tests check it against separate
``torch.autograd.grad`` calls). ``disc_lr_scale`` sets D's learning rate as a multiple of E's and G's.

Simplifications at this scale, all in the small networks around the backbone: a DCGAN-style generator
(transposed convolutions, BN, ReLU; Radford, Metz & Chintala 2016) instead of BigGAN's, no spectral
normalisation, a deterministic encoder (the paper's E outputs a Gaussian and samples from it), one
discriminator step per encoder/generator step. Images are in [0, 1] (the generator ends in a sigmoid).

``latent_regression`` (0, the paper's game, by default) adds w·‖E(G(z)) − z‖² to the encoder's loss, G held
fixed: BiGAN's "latent regressor" (Donahue et al. 2017 train it after or jointly with a GAN, as a baseline),
which asks E to invert G on its own samples; it can teach E only what G's samples show of z. E reads the fakes
with its BatchNorm running statistics held (:func:`bn_statistics_held`): they stay those of real images, which
the evaluation normalises with.

:meth:`BigBiGAN.generate` draws images G(z); :meth:`BigBiGAN.reconstruct` gives G(E(x)), the
"reconstructions" the paper shows: they keep what E captured of x (the objects, roughly) and nothing else.
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
from torch.func import functional_call

from sslbook.augment import horizontal_flip
from sslbook.losses import hinge_discriminator, hinge_generator
from sslbook.methods.base import Method
from sslbook.models.heads import head
from sslbook.models.normalize import batchnorm_layers


@contextlib.contextmanager
def bn_statistics_held(module: nn.Module):
    """Within the block, ``module``'s BatchNorm layers normalise with the batch as usual but leave their running
    statistics as they are (momentum 0), so images of another distribution (a generator's) do not enter them."""
    layers = batchnorm_layers(module)
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in layers]
    for m in layers:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(layers, saved):
            m.momentum = momentum
            m.num_batches_tracked.copy_(tracked)


class Generator(nn.Module):
    """z (N×z_dim) → N×3×S×S images in [0, 1]: a linear layer to a 4×4 map, then transposed convolutions
    each doubling the size (BN + ReLU), the last to 3 channels and a sigmoid."""

    def __init__(self, z_dim: int, image_size: int, width: int = 64):
        super().__init__()
        ups = int(round(math.log2(image_size / 4)))
        if ups < 1 or 4 * 2**ups != image_size:
            raise ValueError(f"bigbigan's generator needs an image size 4·2^k (k ≥ 1), got {image_size}")
        chans = [width * 2 ** (ups - 1 - i) for i in range(ups)]  # e.g. 256, 128, 64 for 32 px
        self.fc = nn.Sequential(nn.Linear(z_dim, chans[0] * 16, bias=False), nn.BatchNorm1d(chans[0] * 16), nn.ReLU())
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans, chans[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
        layers += [nn.ConvTranspose2d(chans[-1], 3, 4, 2, 1), nn.Sigmoid()]
        self.net = nn.Sequential(*layers)
        self.c0 = chans[0]

    def forward(self, z):
        return self.net(self.fc(z).view(z.shape[0], self.c0, 4, 4))


class Discriminator(nn.Module):
    """F on x (strided convolutions, LeakyReLU), H on z (an MLP), J on [F(x), H(z)]; three linear scores.
    ``spectral_norm``: every convolution and linear layer divided by its largest singular value (Miyato et al.
    2018), as in BigGAN's and BigBiGAN's discriminators, which bounds how fast D can separate the pairs."""

    def __init__(self, z_dim: int, image_size: int, width: int = 64, hidden: int = 256, spectral_norm: bool = False):
        super().__init__()
        act = nn.LeakyReLU(0.2)
        self.F = nn.Sequential(
            nn.Conv2d(3, width, 4, 2, 1), act,
            nn.Conv2d(width, 2 * width, 4, 2, 1), act,
            nn.Conv2d(2 * width, 4 * width, 4, 2, 1), act,
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(4 * width, hidden), act,
        )  # fmt: skip
        self.H = nn.Sequential(nn.Linear(z_dim, hidden), act, nn.Linear(hidden, hidden), act)
        self.J = nn.Sequential(nn.Linear(2 * hidden, hidden), act, nn.Linear(hidden, hidden), act)
        self.s_x, self.s_z, self.s_xz = nn.Linear(hidden, 1), nn.Linear(hidden, 1), nn.Linear(hidden, 1)
        if spectral_norm:
            for m in list(self.modules()):
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.utils.parametrizations.spectral_norm(m)

    def forward(self, x, z) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fx, hz = self.F(x), self.H(z)
        return self.s_x(fx).squeeze(1), self.s_z(hz).squeeze(1), self.s_xz(self.J(torch.cat([fx, hz], 1))).squeeze(1)


class BigBiGAN(Method):
    name = "bigbigan"
    # Adam's β1 = 0, β2 = 0.999: BigGAN's (Brock, Donahue & Simonyan 2019), which BigBiGAN trains with
    adamw_betas = (0.0, 0.999)

    def __init__(
        self,
        backbone,
        info,
        image_size,
        z_dim=120,
        gen_width=64,
        disc_width=64,
        disc_hidden=256,
        enc_hidden=512,
        disc_lr_scale=1.0,
        spectral_norm=False,
        latent_regression=0.0,
    ):
        super().__init__(backbone, info, image_size)
        if not latent_regression >= 0:
            raise ValueError(f"bigbigan needs latent_regression >= 0, got {latent_regression}")
        self.latent_regression = float(latent_regression)
        self.z_dim = int(z_dim)
        self.encoder_head = head([(backbone.out_dim, enc_hidden, True, True), (enc_hidden, self.z_dim, False, False)])
        self.generator = Generator(self.z_dim, image_size, gen_width)
        self.discriminator = Discriminator(self.z_dim, image_size, disc_width, disc_hidden, spectral_norm)
        if disc_lr_scale != 1.0:
            self.set_lr(self.discriminator, lr_scale=disc_lr_scale)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """E(x): N×3×S×S → N×z_dim."""
        return self.encoder_head(self.backbone(x))

    def sample_z(self, n: int, device=None) -> torch.Tensor:
        return torch.randn(n, self.z_dim, device=device)

    @torch.no_grad()
    def make_views(self, images, labels):
        return {"x": horizontal_flip(images, 0.5), "z": self.sample_z(images.shape[0], images.device)}

    def _frozen_discriminator(self, x, z):
        """The discriminator with its parameters cut from the graph: gradients reach x and z only."""
        params = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        return functional_call(self.discriminator, params, (x, z))

    def scores(self, x, z, e_x, g_z):
        """(real, fake) scores of the pairs (x, E(x)) and (G(z), z), each a tuple (s_x, s_z, s_xz)."""
        n = x.shape[0]
        s = self.discriminator(torch.cat([x, g_z]), torch.cat([e_x, z]))
        return tuple(t[:n] for t in s), tuple(t[n:] for t in s)

    def forward(self, views, labels):
        x, z = views["x"], views["z"]
        e_x, g_z = self.encode(x), self.generator(z)
        n = x.shape[0]
        # the discriminator's loss: on detached pairs, so only D's parameters get its gradient
        s = self.discriminator(torch.cat([x, g_z.detach()]), torch.cat([e_x.detach(), z]))
        loss_d = hinge_discriminator(tuple(t[:n] for t in s), tuple(t[n:] for t in s))
        # the encoder's and generator's loss: through a frozen D, so only E and G get its gradient
        s_eg = self._frozen_discriminator(torch.cat([x, g_z]), torch.cat([e_x, z]))
        loss_eg = hinge_generator(tuple(t[:n] for t in s_eg), tuple(t[n:] for t in s_eg))
        out = {}
        if self.latent_regression > 0:  # E inverts G on its samples: ‖E(G(z)) − z‖², G held fixed
            with bn_statistics_held(self.backbone), bn_statistics_held(self.encoder_head):
                e_g = self.encode(g_z.detach())
            latent = (e_g - z).pow(2).sum(1).mean()
            loss_eg = loss_eg + self.latent_regression * latent
            out["latent_mse"] = latent.detach()
        with torch.no_grad():
            real_acc = torch.stack([(t[:n] > 0).float().mean() for t in s]).mean()
            fake_acc = torch.stack([(t[n:] < 0).float().mean() for t in s]).mean()
        return {
            "loss": loss_d + loss_eg,
            "loss_d": loss_d.detach(),
            "loss_eg": loss_eg.detach(),
            "d_real_acc": real_acc,
            "d_fake_acc": fake_acc,
            **out,
        }

    @torch.no_grad()
    def generate(self, n: int, z: torch.Tensor | None = None) -> torch.Tensor:
        """n images G(z) (N×3×S×S in [0, 1]) for z ~ N(0, I), or for the given z."""
        device = next(self.generator.parameters()).device
        return self.generator(self.sample_z(n, device) if z is None else z.to(device))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """G(E(x)): the generator's image of what the encoder kept of x."""
        return self.generator(self.encode(x))
