"""Tracking emerges by colorizing videos (Vondrick, Shrivastava, Fathi, Guadarrama & Murphy 2018).

"We use large amounts of unlabeled video to learn models for visual tracking without manual human
supervision. We leverage the natural temporal coherency of color to create a model that learns to
colorize gray-scale videos by copying colors from a reference frame." The network never predicts a
colour itself: it embeds every location of a grayscale reference frame and of a grayscale target frame,
and each target location j *points* at reference locations i through

    A_ij = exp(f_iᵀ f_j) / Σ_k exp(f_kᵀ f_j),        y_j = Σ_i A_ij c_i,

so the only way to get the colours right is to find, for each target location, where the same stuff
was in the reference frame: tracking. At test time the same pointer copies a *segmentation mask*
instead of colours: give the first frame's mask, and it propagates through the video, with no label
ever used in training.

Training data: clips from :class:`sslbook.data.video.MovingShapes`, generated inside ``make_views``
(the image batch only sets how many clips and where they live; the clip indices come from the
trainer's seeded RNG, so runs and resumptions are deterministic), or frames from a folder of real
videos (``video_folder=``). The backbone, evaluated on the image data set like every method, sees the
frames in grayscale. Here f = the backbone's feature map → a 1×1 embedding, L2-normalised and divided
by √T (``temperature`` T), which is the formula above with a bounded scale. Colours c are the Lab ab
channels averaged over each feature-map cell, quantised into bins (``loss="classification"``: the copied
distribution is scored by cross-entropy, as in the paper) or kept as values (``"regression"``).

:meth:`VideoColorization.evaluate_extra` returns the mean IoU of masks propagated through generated
clips against the generator's true masks (key ``mask_iou``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sslbook.augment import grayscale
from sslbook.color import AB_RANGE, quantize_ab, require_colour, rgb_to_lab
from sslbook.data.video import FrameFolder, MovingShapes
from sslbook.losses import copy_colours
from sslbook.methods._spatial import feature_map_shape, nearest_sizes
from sslbook.methods.base import Method


def propagate_masks(
    embed,
    frames: torch.Tensor,
    first_mask: torch.Tensor,
    num_labels: int,
    temperature: float = 0.05,
    use_previous: bool = True,
) -> torch.Tensor:
    """Propagate the first frame's labels through a clip with the attention pointer.

    embed: frames N×3×S×S → normalised features N×C×h×w. frames: N×T×3×S×S; first_mask: N×S×S (long,
    labels < num_labels). Each frame t ≥ 1 copies labels from frame 0 (true mask) and, if
    ``use_previous``, from frame t−1 (its own earlier prediction). Returns predicted masks N×T×S×S
    (frame 0 is the given mask).
    """
    n, t, _, s, _ = frames.shape
    with torch.no_grad():
        feats = embed(frames.flatten(0, 1)).float()  # (N·T)×C×h×w
        h = feats.shape[-1]
        feats = feats.view(n, t, feats.shape[1], h * h)  # N×T×C×M
        first = F.one_hot(first_mask, num_labels).permute(0, 3, 1, 2).float()  # N×K×S×S
        labels = [F.adaptive_avg_pool2d(first, h).flatten(2)]  # soft labels per cell: N×K×M
        masks = [first_mask]
        for j in range(1, t):
            refs = [feats[:, 0]] + ([feats[:, j - 1]] if use_previous and j > 1 else [])
            lbls = [labels[0]] + ([labels[-1]] if use_previous and j > 1 else [])
            y = copy_colours(torch.cat(refs, 2), feats[:, j], torch.cat(lbls, 2), temperature)  # N×K×M
            labels.append(y)
            up = F.interpolate(y.view(n, num_labels, h, h), size=(s, s), mode="bilinear", align_corners=False)
            masks.append(up.argmax(1))
        return torch.stack(masks, 1)


def mask_iou(pred: torch.Tensor, true: torch.Tensor, skip_first: bool = True) -> float:
    """Mean IoU over every (clip, frame, object) whose object is visible; background (label 0) excluded.

    pred, true: N×T×S×S label maps. Frame 0 (the given mask) is skipped by default.
    """
    if skip_first:
        pred, true = pred[:, 1:], true[:, 1:]
    scores = []
    for k in range(1, int(true.max()) + 1):
        p, q = pred == k, true == k
        inter = (p & q).flatten(2).sum(-1).float()
        union = (p | q).flatten(2).sum(-1).float()
        visible = q.flatten(2).sum(-1) > 0
        scores.append((inter / union.clamp_min(1))[visible])
    return float(torch.cat(scores).mean()) if scores else float("nan")


def backbone_embedding(backbone: nn.Module):
    """The plain embedding of any backbone for mask propagation: its grayscale-frame feature map, L2-normalised."""
    return lambda frames: F.normalize(backbone.feature_maps(grayscale(frames)).float(), dim=1)


class VideoColorization(Method):
    name = "video_colorization"

    def __init__(
        self,
        backbone,
        info,
        image_size,
        video_size: int = 64,
        clip_batch: int | None = 64,
        max_gap: int = 4,
        n_objects: int = 3,
        embed_dim: int = 64,
        temperature: float = 0.05,
        loss: str = "classification",
        ab_bins: int = 16,
        video_seed: int = 0,
        video_folder: str | None = None,
        eval_clips: int = 32,
        eval_frames: int = 8,
    ):
        super().__init__(backbone, info, image_size)
        if loss not in ("classification", "regression"):
            raise ValueError(f"video_colorization loss must be 'classification' or 'regression', got {loss!r}")
        c, side = feature_map_shape(backbone, video_size)
        if side < 2:
            _, need = nearest_sizes(lambda s: feature_map_shape(backbone, s)[1] >= 2, video_size)
            raise ValueError(
                f"video_colorization needs a feature map of at least 2×2 locations; at video_size={video_size} "
                f"the backbone gives {side}×{side}: raise video_size"
                + (f" to at least {need}" if need is not None else "")
            )
        self.video_size, self.clip_batch, self.max_gap = int(video_size), clip_batch, int(max_gap)
        self.temperature, self.loss_kind, self.ab_bins = float(temperature), loss, int(ab_bins)
        self.eval_clips, self.eval_frames = int(eval_clips), int(eval_frames)
        self.video_seed, self.n_objects = int(video_seed), int(n_objects)
        self.video = (
            FrameFolder(video_folder, video_size)
            if video_folder
            else MovingShapes(video_size, n_objects, seed=video_seed)
        )
        self.embed = nn.Conv2d(c, embed_dim, 1)  # f: the pointer's embedding of each feature-map location

    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """RGB frames N×3×S×S → grayscale → backbone map → 1×1 embedding, L2-normalised: N×D×h×w."""
        return F.normalize(self.embed(self.backbone.feature_maps(grayscale(frames))).float(), dim=1)

    @torch.no_grad()
    def make_views(self, images, labels):
        n = self.clip_batch or images.shape[0]
        index = torch.randint(0, 2**31 - 1, (n,))  # the trainer's seeded RNG: deterministic and resumable
        gap = int(torch.randint(1, self.max_gap + 1, ()))
        frames, _ = self.video.batch(index.tolist(), times=[0, gap])  # N×2×3×S×S: reference, target
        frames = frames.to(images.device)
        require_colour(frames[:, 0], "video_colorization")
        return [frames]

    def colour_targets(self, frames: torch.Tensor, side: int) -> torch.Tensor:
        """ab channels averaged over each feature-map cell: frames N×3×S×S → N×2×side²."""
        return F.adaptive_avg_pool2d(rgb_to_lab(frames)[:, 1:], side).flatten(2)

    def forward(self, views, labels):
        frames = views[0]
        n = frames.shape[0]
        f = self.embed_frames(frames.flatten(0, 1))  # (2N)×D×h×w, reference and target frames together
        side = f.shape[-1]
        f = f.view(n, 2, f.shape[1], side * side)  # N×2×D×M
        f_ref, f_tgt = f[:, 0] / self.temperature**0.5, f[:, 1] / self.temperature**0.5
        ab = self.colour_targets(frames.flatten(0, 1), side).view(n, 2, 2, side * side)  # N×2×2×M
        if self.loss_kind == "classification":
            bins = quantize_ab(ab.flatten(0, 1).view(2 * n, 2, side, side), self.ab_bins).view(
                n, 2, side * side
            )  # N×2×M
            c_ref = F.one_hot(bins[:, 0], self.ab_bins**2).transpose(1, 2).float()  # N×K×M
            y = copy_colours(f_ref, f_tgt, c_ref)  # N×K×M: copied colour distribution
            loss = F.nll_loss(torch.log(y.clamp_min(1e-6)), bins[:, 1])
            acc = (y.argmax(1) == bins[:, 1]).float().mean()
        else:
            y = copy_colours(f_ref, f_tgt, ab[:, 0] / AB_RANGE)  # N×2×M
            loss = F.mse_loss(y, ab[:, 1] / AB_RANGE)
            acc = ((y - ab[:, 1] / AB_RANGE).abs().amax(1) < 0.05).float().mean()
        return {"loss": loss, "copy_acc": acc.detach()}

    @torch.no_grad()
    def propagate(self, frames: torch.Tensor, first_mask: torch.Tensor, embed=None) -> torch.Tensor:
        """Masks N×T×S×S propagated from ``first_mask`` with this method's embedding (or ``embed``)."""
        return propagate_masks(embed or self.embed_frames, frames, first_mask, self.n_objects + 1, self.temperature)

    def eval_clips_and_masks(self, device=None):
        """The fixed evaluation clips (a different seed than training): frames N×T×3×S×S, masks N×T×S×S."""
        video = MovingShapes(self.video_size, self.n_objects, seed=self.video_seed + 10_000)
        frames, masks = video.batch(range(self.eval_clips), times=range(self.eval_frames))
        return frames.to(device), masks.to(device)

    @torch.no_grad()
    def evaluate_extra(self) -> dict[str, float]:
        """Mean mask IoU of first-frame masks propagated through generated evaluation clips (labels unused in training)."""
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        try:
            frames, masks = self.eval_clips_and_masks(device)
            pred = self.propagate(frames, masks[:, 0])
        finally:
            self.train(was_training)
        return {"mask_iou": mask_iou(pred.cpu(), masks.cpu())}
