"""Batched augmentations: shapes, ranges, per-sample randomness, reproducibility."""

import torch

from sslbook import augment as A


def _batch(n=8, size=32):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size, generator=g)


def test_random_resized_crop_identity_and_shape():
    x = _batch()
    same = A.random_resized_crop(x, 32, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(same, x, atol=1e-5)  # full-image crop with no flip is the identity
    flipped = A.random_resized_crop(x, 32, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip_p=1.0)
    assert torch.allclose(flipped, x.flip(-1), atol=1e-5)
    out = A.random_resized_crop(x, 16, scale=(0.2, 0.5))
    assert out.shape == (8, 3, 16, 16)


def test_per_sample_parameters_and_seed():
    x = _batch(1).expand(16, -1, -1, -1).contiguous()  # the same image 16 times
    recipe = A.ViewRecipe(size=32, blur_p=0.5, solarize_p=0.2)
    out = recipe(x, generator=torch.Generator().manual_seed(1))
    distinct = {tuple(v.flatten()[:50].tolist()) for v in out}
    assert len(distinct) == 16  # each copy got its own crop, jitter, ...
    again = recipe(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again)
    assert out.min() >= 0 and out.max() <= 1


def test_colour_ops():
    x = _batch()
    gray = A.grayscale(x)
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])
    assert torch.equal(A.random_grayscale(x, p=0.0), x)
    assert torch.equal(A.color_jitter(x, p=0.0), x)
    grey_img = torch.full((2, 3, 8, 8), 0.5)
    assert torch.allclose(A.color_jitter(grey_img, 0, 0, 0, 0.5, p=1.0), grey_img, atol=1e-6)  # hue leaves grey alone
    sol = A.solarize(x, p=1.0)
    assert torch.equal(sol[x >= 0.5], 1 - x[x >= 0.5]) and torch.equal(sol[x < 0.5], x[x < 0.5])


def test_blur_and_crop():
    x = _batch()
    blurred = A.gaussian_blur(x, sigma=(1.5, 1.5), p=1.0)
    assert blurred.shape == x.shape and blurred.var() < x.var()
    const = torch.full((2, 3, 16, 16), 0.3)
    assert torch.allclose(A.gaussian_blur(const, p=1.0), const, atol=1e-6)
    cropped = A.random_crop(x, padding=4)
    assert cropped.shape == x.shape
    assert torch.equal(A.random_crop(x, padding=0), x)
    assert torch.equal(A.horizontal_flip(x, p=1.0), x.flip(-1))
