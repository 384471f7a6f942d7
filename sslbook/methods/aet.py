"""AET: Auto-Encoding Transformations (Zhang, Qi, Wang & Luo, CVPR 2019, "AET vs. AED: Unsupervised
Representation Learning by Auto-Encoding Transformations rather than Data").

An autoencoder of *data* reconstructs the image from its code; AET reconstructs the *transformation*
instead: draw a random transformation t, apply it to an image x, encode both x and t(x) with the same
encoder E, and ask a small decoder to recover t's parameters from the pair of codes [E(x), E(t(x))].
To say how the image was warped the code must keep where things are and how they are oriented, so the
representation becomes equivariant to the transformations rather than invariant to them. Loss: half
the squared distance between the true and the predicted parameters (:func:`sslbook.losses.transformation_mse`).

Transformations (the paper's CIFAR-10 settings, also the defaults of its official code, maple-research-lab/AET
``cifar/affine/main.py``):

- ``affine``: rotation in [−180°, 180°], translation by up to ±0.2 of the width and height, isotropic
  scale in [0.7, 1.3] and shear in [−30°, 30°]; the target is the 2×3 matrix [A | b] that moves an
  image point p (normalised coordinates, x right and y down, in [−1, 1]) to A·p + b: 6 parameters.
- ``projective``: each corner moved by up to ±0.125 of the image size, then a scale in [0.8, 1.2] and a
  rotation by 0°, 90°, 180° or 270°; the target is the homography H (3×3 with H₃₃ = 1): 8 parameters.

Both are applied with ``grid_sample`` (bilinear, zero padding: black where the warp leaves the image; the
official code fills with mid-grey), whose grid is the *inverse* map (each output pixel reads the input at
M⁻¹·p). Before the warp each image is randomly cropped (padding 4) and flipped, as there. The official
code's loss is PyTorch's ``MSELoss`` (the mean over the P parameters), ½‖·‖² up to the constant factor P / 2. ``transforms=("affine", "projective")`` trains one decoder per
family on the same encoder and sums their losses: the ensemble of transformations of EnAET (Wang,
Kihara, Luo & Qi 2019, "EnAET: A Self-Trained Framework for Semi-Supervised and Supervised Learning
with Ensemble Transformations"), without its semi-supervised part.

``variational=True``: the decoder outputs a mean and a log-variance per parameter and the loss is the
Gaussian negative log-likelihood of the true parameters (:func:`sslbook.losses.gaussian_nll`), the
transformation decoder of AVT (Qi, Zhang, Chen & Tian 2019, "AVT: Unsupervised Learning of
Transformation Equivariant Representations by Autoencoding Variational Transformations"), which maximises
a variational lower bound of the mutual information between the transformation and the representation.
The bound's other term, the entropy of the transformation distribution, is a constant here (the
transformations are drawn from a fixed distribution), so it adds nothing. AVT's *probabilistic*
representation of t(x) (a Gaussian code sampled with the reparameterisation trick) is not implemented:
the codes here are deterministic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslbook.augment import horizontal_flip, random_crop
from sslbook.losses import gaussian_nll, transformation_mse
from sslbook.methods.base import Method
from sslbook.models.heads import head

N_PARAMS = {"affine": 6, "projective": 8}


def _uniform(n: int, low: float, high: float, device) -> torch.Tensor:
    return torch.rand(n, device=device) * (high - low) + low


def affine_matrix(
    angle: torch.Tensor, translate: torch.Tensor, scale: torch.Tensor, shear: torch.Tensor
) -> torch.Tensor:
    """The forward map [A | b] (N×2×3) of rotation ``angle`` (degrees, counter-clockwise as displayed),
    shear ``shear`` (degrees, along x), isotropic ``scale`` and translation ``translate`` (N×2, in
    normalised units: 2 = the whole image). A = R(angle) · Shear · scale; a point p moves to A·p + b."""
    a, s = torch.deg2rad(angle.float()), torch.deg2rad(shear.float())
    cos, sin = torch.cos(a), torch.sin(a)
    rot = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)  # y points down
    sh = torch.zeros_like(rot)
    sh[:, 0, 0], sh[:, 0, 1], sh[:, 1, 1] = 1.0, torch.tan(s), 1.0
    A = rot @ sh * scale.float().view(-1, 1, 1)
    return torch.cat([A, translate.float().view(-1, 2, 1)], dim=2)


def sample_affine(n: int, device=None) -> torch.Tensor:
    """N×2×3 random affine maps with the paper's CIFAR-10 ranges."""
    angle = _uniform(n, -180.0, 180.0, device)
    translate = torch.stack([_uniform(n, -0.2, 0.2, device), _uniform(n, -0.2, 0.2, device)], 1) * 2.0
    return affine_matrix(angle, translate, _uniform(n, 0.7, 1.3, device), _uniform(n, -30.0, 30.0, device))


PADDINGS = ("zeros", "border", "reflection")


def warp_affine(x: torch.Tensor, M: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Apply the forward affine maps M (N×2×3) to the images x (N×C×H×W): output(p) = x(A⁻¹(p − b)).
    ``padding``: what fills the output where the warp reads outside the image (``grid_sample``'s
    ``padding_mode``: black, the edge pixels repeated, or the image mirrored)."""
    A, b = M[:, :, :2].float(), M[:, :, 2:].float()
    A_inv = torch.linalg.inv(A)
    theta = torch.cat([A_inv, -A_inv @ b], dim=2)  # output → input, what affine_grid takes
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def homography_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The homographies H (N×3×3, H₃₃ = 1) that map the four points src (N×4×2) onto dst (N×4×2)."""
    x, y, u, v = src[..., 0], src[..., 1], dst[..., 0], dst[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], -1)  # N×4×8
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], -1)
    system = torch.cat([rows_u, rows_v], 1)  # N×8×8
    h = torch.linalg.solve(system, torch.cat([u, v], 1).unsqueeze(-1)).squeeze(-1)  # N×8
    return torch.cat([h, torch.ones_like(h[:, :1])], 1).view(-1, 3, 3)


CORNERS = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


def sample_projective(n: int, device=None) -> torch.Tensor:
    """N×3×3 random homographies (H₃₃ = 1): corners moved by up to ±0.125 of the image size, a scale in
    [0.8, 1.2] and a rotation by a multiple of 90°."""
    corners = CORNERS.to(device).expand(n, 4, 2)
    moved = corners + (torch.rand(n, 4, 2, device=device) * 2 - 1) * 0.125 * 2.0
    H = homography_from_points(corners, moved)
    scale = _uniform(n, 0.8, 1.2, device)
    angle = torch.randint(0, 4, (n,), device=device).float() * 90.0
    A = affine_matrix(angle, torch.zeros(n, 2, device=device), scale, torch.zeros(n, device=device))
    S = torch.eye(3, device=device).repeat(n, 1, 1)
    S[:, :2, :] = A
    H = S @ H
    return H / H[:, 2:3, 2:3]


def warp_projective(x: torch.Tensor, H: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Apply the forward homographies H (N×3×3) to the images x (N×C×H×W): output(p) = x(H⁻¹ p);
    ``padding`` as in :func:`warp_affine`."""
    n = x.shape[0]
    identity = torch.eye(2, 3, device=x.device).expand(n, 2, 3)
    grid = F.affine_grid(identity, list(x.shape), align_corners=False).float()  # N×h×w×2, output coordinates
    pts = torch.cat([grid, torch.ones_like(grid[..., :1])], -1)  # homogeneous
    src = pts @ torch.linalg.inv(H.float()).transpose(1, 2).unsqueeze(1)  # N×h×w×3
    src = src[..., :2] / src[..., 2:].clamp_min(1e-6)  # in front of the camera for these ranges
    return F.grid_sample(x, src.to(x.dtype), mode="bilinear", padding_mode=padding, align_corners=False)


def transformation_params(M: torch.Tensor) -> torch.Tensor:
    """The regression target of a transformation: an affine map's 6 entries (N×2×3 → N×6) or a
    homography's first 8 (N×3×3 with H₃₃ = 1 → N×8)."""
    return M.flatten(1)[:, :8] if M.shape[1] == 3 else M.flatten(1)


class AET(Method):
    name = "aet"

    def __init__(
        self,
        backbone,
        info,
        image_size,
        transforms=("affine",),
        variational=False,
        hidden=512,
        crop_padding=4,
        padding="zeros",
    ):
        super().__init__(backbone, info, image_size)
        self.transforms = (transforms,) if isinstance(transforms, str) else tuple(transforms)
        unknown = [t for t in self.transforms if t not in N_PARAMS]
        if not self.transforms or unknown or len(set(self.transforms)) != len(self.transforms):
            raise ValueError(f"aet: transforms must be distinct names among {sorted(N_PARAMS)}, got {transforms!r}")
        if padding not in PADDINGS:
            raise ValueError(f"aet: padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
        self.padding = padding
        self.variational = bool(variational)
        self.crop_padding = crop_padding
        d = backbone.out_dim
        out = 2 if self.variational else 1
        # one transformation decoder per family, on the concatenated codes [E(x), E(t(x))]
        self.decoders = torch.nn.ModuleDict(
            {t: head([(2 * d, hidden, True, True), (hidden, out * N_PARAMS[t], False, False)]) for t in self.transforms}
        )

    @torch.no_grad()
    def make_views(self, images, labels):
        x = horizontal_flip(random_crop(images, self.crop_padding), 0.5)  # N×3×H×W
        views = {"x": x}
        for t in self.transforms:
            if t == "affine":
                M = sample_affine(x.shape[0], x.device)
                views[t] = (warp_affine(x, M, self.padding), transformation_params(M))
            else:
                H = sample_projective(x.shape[0], x.device)
                views[t] = (warp_projective(x, H, self.padding), transformation_params(H))
        return views

    def decode(self, family: str, f_x: torch.Tensor, f_tx: torch.Tensor):
        """The decoder's prediction from the two codes: N×P, or (mean, log-variance) if variational."""
        out = self.decoders[family](torch.cat([f_x, f_tx], dim=1))
        return out.chunk(2, dim=1) if self.variational else out

    def forward(self, views, labels):
        x = views["x"]
        n = x.shape[0]
        # one pass over the original and every transformed batch (the same encoder, shared BN statistics)
        feats = self.backbone(torch.cat([x] + [views[t][0] for t in self.transforms])).split(n)
        out, loss = {}, 0.0
        for f_tx, t in zip(feats[1:], self.transforms):
            target = views[t][1]
            pred = self.decode(t, feats[0], f_tx)
            if self.variational:
                mean, log_var = pred
                term = gaussian_nll(mean, log_var, target)
                err = transformation_mse(mean.detach(), target)
            else:
                term = transformation_mse(pred, target)
                err = term.detach()
            loss = loss + term
            out[f"{t}_error"] = err  # ½‖t̂ − t‖² of the (mean) prediction
        out["loss"] = loss
        return out


def rotation_matrix(angle_deg: float, n: int = 1) -> torch.Tensor:
    """N×2×3: the rotation by ``angle_deg`` alone (counter-clockwise as displayed; 90° is ``torch.rot90(k=1)``)."""
    z = torch.zeros(n)
    return affine_matrix(torch.full((n,), float(angle_deg)), torch.zeros(n, 2), torch.ones(n), z)


__all__ = [
    "AET",
    "affine_matrix",
    "homography_from_points",
    "rotation_matrix",
    "sample_affine",
    "sample_projective",
    "transformation_params",
    "warp_affine",
    "warp_projective",
]
