"""A generated video data set for "tracking emerges by colorizing videos" (Vondrick et al. 2018).

Each clip shows a few coloured shapes (discs, squares, diamonds) moving in straight lines over a
textured background, bouncing off the borders and passing in front of one another (a fixed depth
order, so they occlude). Frames are rendered on the fly at any time ``t`` and are a pure function of
``(seed, clip index, t)``: the same call always gives the same pixels. Every frame comes with its
true segmentation: ``masks[t][y, x]`` is 0 for background and ``k`` for the ``k``-th object (the one
in front where objects overlap). Training never looks at the masks; evaluation propagates the first
frame's mask and scores it against them.

    >>> video = MovingShapes(image_size=64, seed=0)
    >>> frames, masks = video.clip(7, times=range(8))   # T×3×64×64 in [0, 1], T×64×64 (long)

A real video can be used instead: :class:`FrameFolder` reads ``root/<video>/<frame files>`` (frames
sorted by name); it has no masks.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from sslbook.data.base import DataError
from sslbook.data.synthetic import hsv_to_rgb


class MovingShapes:
    """Clips of ``n_objects`` moving, occluding coloured shapes; deterministic from ``seed``."""

    SHAPES = ("disc", "square", "diamond")

    def __init__(self, image_size: int = 64, n_objects: int = 3, seed: int = 0, speed=(0.02, 0.06), radius=(0.12, 0.2)):
        if n_objects < 1:
            raise ValueError("MovingShapes needs at least one object per clip")
        self.image_size, self.n_objects, self.seed = image_size, n_objects, seed
        self.speed, self.radius = tuple(speed), tuple(radius)

    def _params(self, index: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(index))
        k = self.n_objects
        u = lambda *shape: torch.rand(*shape, generator=g)  # noqa: E731
        hue = (u(1) + torch.arange(k) / k + 0.1 * u(k)) % 1.0  # well-separated hues per clip
        colours = hsv_to_rgb(hue, 0.6 + 0.4 * u(k), 0.55 + 0.45 * u(k))  # k×3
        bg = hsv_to_rgb(u(2), 0.1 + 0.3 * u(2), 0.2 + 0.6 * u(2))  # 2×3: a gradient between two dull colours
        angle = u(k) * 2 * math.pi
        speed = self.speed[0] + (self.speed[1] - self.speed[0]) * u(k)
        radius = self.radius[0] + (self.radius[1] - self.radius[0]) * u(k)
        return dict(
            colours=colours,
            bg=bg,
            bg_phase=u(2) * 2 * math.pi,
            shape=torch.randint(0, len(self.SHAPES), (k,), generator=g),
            radius=radius,
            start=radius.unsqueeze(1) + (1 - 2 * radius.unsqueeze(1)) * u(k, 2),
            velocity=torch.stack([torch.cos(angle), torch.sin(angle)], 1) * speed.unsqueeze(1),
        )

    @staticmethod
    def _bounce(p: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """Position after reflecting off the walls [low, high] (a triangle wave)."""
        span = high - low
        q = torch.remainder(p - low, 2 * span)
        return low + torch.where(q > span, 2 * span - q, q)

    def clip(self, index: int, times=range(8)) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames T×3×S×S (float in [0, 1]) and true masks T×S×S (0 = background, k = object k)."""
        frames, masks = self.batch([index], times)
        return frames[0], masks[0]

    def batch(self, indices, times=range(8)) -> tuple[torch.Tensor, torch.Tensor]:
        """Many clips, rendered together: frames N×T×3×S×S in [0, 1] and masks N×T×S×S (long)."""
        ps = [self._params(int(i)) for i in indices]
        p = {key: torch.stack([q[key] for q in ps]) for key in ps[0]}  # each: N×…
        t = torch.as_tensor(list(times), dtype=torch.float32)  # T
        n, s = len(ps), self.image_size
        coords = (torch.arange(s, dtype=torch.float32) + 0.5) / s
        yy, xx = torch.meshgrid(coords, coords, indexing="ij")  # S×S, in [0, 1]
        ph = p["bg_phase"].view(n, 2, 1, 1)
        wave = 0.5 + 0.5 * torch.sin(6 * xx + 4 * yy + ph[:, 0]) * torch.cos(5 * yy - 3 * xx + ph[:, 1])  # N×S×S
        wave = wave.unsqueeze(1)  # N×1×S×S
        background = p["bg"][:, 0].view(n, 3, 1, 1) * wave + p["bg"][:, 1].view(n, 3, 1, 1) * (1 - wave)  # N×3×S×S
        frames = background.unsqueeze(1).repeat(1, len(t), 1, 1, 1)  # N×T×3×S×S (the background is static)
        masks = torch.zeros(n, len(t), s, s, dtype=torch.long)
        xx, yy = xx.view(1, 1, s, s), yy.view(1, 1, s, s)
        for k in range(self.n_objects):  # painted back to front: object k occludes objects < k
            r = p["radius"][:, k].view(n, 1)  # N×1
            pos = self._bounce(
                p["start"][:, k].unsqueeze(1) + t.view(1, -1, 1) * p["velocity"][:, k].unsqueeze(1),
                r.unsqueeze(2),
                1 - r.unsqueeze(2),
            )  # N×T×2 (x, y)
            r = r.view(n, 1, 1, 1)
            dx = xx - pos[..., 0].view(n, -1, 1, 1)  # N×T×S×S
            dy = yy - pos[..., 1].view(n, -1, 1, 1)
            kind = p["shape"][:, k].view(n, 1, 1, 1)
            disc = dx**2 + dy**2 <= r**2
            square = (dx.abs() <= 0.8 * r) & (dy.abs() <= 0.8 * r)
            diamond = dx.abs() + dy.abs() <= 1.1 * r
            inside = torch.where(kind == 0, disc, torch.where(kind == 1, square, diamond))  # N×T×S×S
            shade = 1.0 - 0.25 * (dy / r).clamp(-1, 1)  # lit from above: a little lighter at the top
            colour = (p["colours"][:, k].view(n, 1, 3, 1, 1) * (0.85 + 0.15 * shade.unsqueeze(2))).clamp(0, 1)
            frames = torch.where(inside.unsqueeze(2), colour, frames)
            masks[inside] = k + 1
        return frames, masks


class FrameFolder:
    """Real videos as folders of frames: ``root/<video name>/<frame images>`` sorted by file name.

    ``clip(index, times)`` returns frames T×3×S×S of video ``index % len(videos)`` (times taken modulo
    its length) and ``None`` for the masks: a real video has no true segmentation here.
    """

    EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")

    def __init__(self, root, image_size: int = 64):
        root = Path(root)
        self.image_size = image_size
        self.videos = sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []
        self.frames = [sorted(f for f in d.iterdir() if f.suffix.lower() in self.EXTENSIONS) for d in self.videos]
        self.videos = [v for v, f in zip(self.videos, self.frames) if len(f) >= 2]
        self.frames = [f for f in self.frames if len(f) >= 2]
        if not self.videos:
            raise DataError(
                f"{root} holds no video: expected {root}/<video name>/<frame images> with at least 2 frames each"
            )

    def _load(self, path: Path) -> torch.Tensor:
        from PIL import Image

        try:
            with Image.open(path) as im:
                im = im.convert("RGB").resize((self.image_size, self.image_size), Image.BILINEAR)
                data = bytearray(im.tobytes())
        except Exception as e:  # a corrupt or unreadable frame: name the file, not PIL's internals
            raise DataError(f"cannot read video frame {path}: {type(e).__name__}: {e}") from e
        return (
            torch.frombuffer(data, dtype=torch.uint8).view(self.image_size, self.image_size, 3).permute(2, 0, 1).float()
            / 255
        )

    def clip(self, index: int, times=range(8)):
        files = self.frames[int(index) % len(self.frames)]
        start = (int(index) // len(self.frames)) % len(files)
        return torch.stack([self._load(files[(start + int(t)) % len(files)]) for t in times]), None

    def batch(self, indices, times=range(8)):
        return torch.stack([self.clip(int(i), times)[0] for i in indices]), None
