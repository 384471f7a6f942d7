"""Chapter 3: Lab colour, masked reconstruction, the attention pointer, the video generator and the three methods."""

import math

import pytest
import torch
import torch.nn.functional as F

from sslbook.color import ab_bin_centres, lab_to_rgb, quantize_ab, require_colour, rgb_to_lab
from sslbook.config import resolve
from sslbook.data.base import DataInfo
from sslbook.data.video import MovingShapes
from sslbook.losses import attention_pointer, copy_colours, masked_pixel_mse
from sslbook.methods import get_method
from sslbook.models import build_backbone

INFO = DataInfo("test", [str(i) for i in range(10)], 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def _px(*rgb):
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1)


def test_lab_known_values():
    assert torch.allclose(rgb_to_lab(_px(1, 1, 1)).flatten(), torch.tensor([100.0, 0, 0]), atol=1e-3)
    assert torch.allclose(rgb_to_lab(_px(0, 0, 0)).flatten(), torch.zeros(3), atol=1e-3)
    assert torch.allclose(rgb_to_lab(_px(1, 0, 0)).flatten(), torch.tensor([53.24, 80.09, 67.20]), atol=0.02)
    assert torch.allclose(rgb_to_lab(_px(0, 0, 1)).flatten(), torch.tensor([32.30, 79.19, -107.86]), atol=0.02)
    grey = rgb_to_lab(_px(0.5, 0.5, 0.5)).flatten()
    assert abs(grey[1]) < 1e-3 and abs(grey[2]) < 1e-3 and abs(grey[0] - 53.39) < 0.02


def test_lab_round_trip():
    x = torch.rand(4, 3, 9, 7, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(lab_to_rgb(rgb_to_lab(x)), x, atol=1e-4)
    lab = rgb_to_lab(x)
    assert torch.allclose(rgb_to_lab(lab_to_rgb(lab)), lab, atol=2e-2)


def test_ab_bins_cover_the_gamut_and_centres_quantise_to_themselves():
    centres = ab_bin_centres(16)  # 256×2
    ab = centres.T.reshape(1, 2, 16, 16)
    assert torch.equal(quantize_ab(ab, 16).flatten(), torch.arange(256))


def test_grayscale_is_refused():
    gray = torch.rand(2, 1, 8, 8).expand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="grayscale"):
        require_colour(gray, "split_brain")
    method = get_method("split_brain")(build_backbone("convnet_small", INFO), INFO, 32)
    with pytest.raises(ValueError, match="colour images"):
        method.make_views(torch.rand(2, 1, 32, 32).expand(2, 3, 32, 32), torch.zeros(2))
    method.make_views(torch.rand(2, 3, 32, 32), torch.zeros(2))  # colour is fine


def test_masked_mse_ignores_unmasked_pixels():
    g = torch.Generator().manual_seed(1)
    target = torch.rand(3, 3, 8, 8, generator=g)
    mask = torch.zeros(3, 1, 8, 8)
    mask[:, :, 2:5, 3:6] = 1
    pred = target + 0.1 * mask  # right outside, off by 0.1 inside
    assert torch.allclose(masked_pixel_mse(pred, target, mask), torch.tensor(0.01), atol=1e-6)
    garbage = pred + 5 * (1 - mask) * torch.randn(3, 3, 8, 8, generator=g)
    assert torch.allclose(masked_pixel_mse(garbage, target, mask), torch.tensor(0.01), atol=1e-6)


def test_attention_pointer_copies_colours_exactly_with_one_hot_features():
    n, m = 2, 6
    perm = torch.stack([torch.randperm(m, generator=torch.Generator().manual_seed(s)) for s in range(n)])
    f_ref = torch.eye(m).expand(n, m, m)  # N×C×M: location i has feature e_i
    f_tgt = torch.stack([torch.eye(m)[:, perm[b]] for b in range(n)])  # target j has the feature of reference perm[j]
    colours = torch.rand(n, 3, m)
    a = attention_pointer(f_ref, f_tgt, temperature=0.01)
    assert torch.allclose(a.sum(1), torch.ones(n, m))
    y = copy_colours(f_ref, f_tgt, colours, temperature=0.01)
    want = torch.stack([colours[b][:, perm[b]] for b in range(n)])
    assert torch.allclose(y, want, atol=1e-6)
    # at temperature 1, one-hot features only lean towards the match: e / (e + M − 1)
    a1 = attention_pointer(f_ref, f_tgt, temperature=1.0)
    assert torch.allclose(a1.amax(1), torch.full((n, m), math.e / (math.e + m - 1)), atol=1e-5)


def test_video_generator_is_deterministic_with_correct_masks():
    video = MovingShapes(image_size=32, n_objects=3, seed=5)
    f1, m1 = video.batch([3, 11], times=range(4))
    f2, m2 = video.batch([3, 11], times=range(4))
    assert torch.equal(f1, f2) and torch.equal(m1, m2)
    assert f1.shape == (2, 4, 3, 32, 32) and m1.shape == (2, 4, 32, 32) and 0 <= f1.min() and f1.max() <= 1
    single, single_m = video.clip(11, times=range(4))
    assert torch.equal(single, f1[1]) and torch.equal(single_m, m1[1])
    other, _ = MovingShapes(image_size=32, n_objects=3, seed=6).batch([3], times=range(4))
    assert not torch.equal(other[0], f1[0])
    assert f1[0, 0].ne(f1[0, 3]).any(), "objects move"
    # every object's mask pixels carry that object's colour (up to its shading), background pixels do not change over time
    for b in range(2):
        colours = video._params([3, 11][b])["colours"]
        for k in range(1, 4):
            inside = m1[b] == k  # T×S×S
            if inside.any():
                pix = f1[b].permute(0, 2, 3, 1)[inside]  # P×3
                ratio = pix / colours[k - 1].clamp_min(1e-3)
                assert ((ratio > 0.8) & (ratio < 1.05) | (colours[k - 1] < 1e-3)).all()
        bg = (m1[b] == 0).all(0)  # pixels that are background in every frame
        assert torch.allclose(f1[b, 0][:, bg], f1[b, 3][:, bg])


def test_mask_propagation_with_oracle_features_and_iou():
    from sslbook.methods.video_colorization import mask_iou, propagate_masks

    video = MovingShapes(image_size=32, n_objects=2, seed=0)
    frames, masks = video.batch(range(3), times=range(4))
    assert mask_iou(masks, masks) == 1.0
    lookup = {}

    def oracle(x):  # features = the one-hot true label of each pixel (the best possible tracker)
        key = x.flatten(1).sum(1)
        return F.one_hot(torch.stack([lookup[round(float(k), 3)] for k in key]), 3).permute(0, 3, 1, 2).float() * 10

    for b in range(3):
        for t in range(4):
            lookup[round(float(frames[b, t].sum()), 3)] = masks[b, t]
    pred = propagate_masks(oracle, frames, masks[:, 0], 3, temperature=0.01)
    assert mask_iou(pred, masks) > 0.95


def _small_method(name, **kwargs):
    torch.manual_seed(0)
    return get_method(name)(build_backbone("convnet_small", INFO), INFO, 32, **kwargs)


@pytest.mark.parametrize(
    "name,kwargs",
    [
        ("context_encoder", {}),
        ("context_encoder", dict(adv_weight=0.0, holes=3, mask_size=8)),
        ("split_brain", {}),
        ("split_brain", dict(loss="regression")),
        ("video_colorization", dict(video_size=32, clip_batch=4, eval_clips=2, eval_frames=3)),
        ("video_colorization", dict(video_size=32, clip_batch=4, loss="regression")),
    ],
)
def test_forward_backward(name, kwargs):
    method = _small_method(name, **kwargs)
    images = torch.rand(6, 3, 32, 32)
    views = method.make_views(images, torch.zeros(6, dtype=torch.long))
    out = method(views, torch.zeros(6, dtype=torch.long))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    missing = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    feats = method.backbone(images)
    assert feats.shape == (6, method.backbone.out_dim)
    if name == "split_brain":
        assert method.backbone.out_dim == 2 * build_backbone("convnet_small", INFO).out_dim
    if name == "video_colorization" and "eval_clips" in kwargs:
        iou = method.evaluate_extra()["mask_iou"]
        assert 0.0 <= iou <= 1.0


def test_context_encoder_adversarial_game_has_the_right_signs():
    """One backward trains D on its loss only and G on the adversarial loss only (the detach trick)."""
    method = _small_method("context_encoder", rec_weight=0.0, adv_weight=0.5)
    images = torch.rand(4, 3, 32, 32)
    images, masks = method.make_views(images, None)
    method(views=[images, masks], labels=None)["loss"].backward()
    got_d = [p.grad.clone() for p in method.discriminator.parameters()]
    got_dec = [p.grad.clone() for p in method.decoder.parameters()]
    # the same step by hand, each player separately
    method.zero_grad()
    _, filled = method.inpaint(images, masks)
    real, fake = method.discriminator(images), method.discriminator(filled.detach())
    d_loss = F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + F.binary_cross_entropy_with_logits(
        fake, torch.zeros_like(fake)
    )
    want_d = torch.autograd.grad(d_loss, list(method.discriminator.parameters()))
    method.zero_grad()
    _, filled = method.inpaint(images, masks)
    g = F.binary_cross_entropy_with_logits(method.discriminator(filled), torch.ones(4))
    want_dec = torch.autograd.grad(0.5 * g, list(method.decoder.parameters()))
    for a, b in zip(got_d, want_d):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(got_dec, want_dec):
        assert torch.allclose(a, b, atol=1e-6)


def test_bad_settings_are_refused_clearly():
    with pytest.raises(ValueError, match="mask_size"):
        _small_method("context_encoder", mask_size=40)
    with pytest.raises(ValueError, match="classification"):
        _small_method("split_brain", loss="huber")
    with pytest.raises(ValueError, match="video_size"):
        _small_method("video_colorization", video_size=8)


@pytest.mark.parametrize("name", ["context_encoder", "split_brain", "video_colorization"])
def test_trains_through_the_trainer(name, small):
    from sslbook.trainer import train

    kwargs = dict(video_size=32, clip_batch=8) if name == "video_colorization" else {}
    result = train(name, **{**small, "max_steps": 2, "epochs": 1, "method_kwargs": kwargs})
    assert all(math.isfinite(v) for v in result.metrics.values()) and "knn_top1" in result.metrics
    assert resolve(name, "full").method_kwargs  # a full-scale recipe exists


@pytest.mark.parametrize("loss", ["classification", "regression"])
def test_split_brain_predictions_in_lab_units(loss):
    """predict_lab decodes either loss's outputs into Lab: a distribution peaked on one bin gives that bin's
    centre; a regression output of 0 is the grey ab = 0 and lightness 50."""
    method = _small_method("split_brain", loss=loss, ab_bins=4, l_bins=5)
    images = torch.rand(2, 3, 32, 32)
    t = method.target_size
    if loss == "classification":
        ab_logits = torch.full((2, 16, t, t), -1e4)
        ab_logits[:, 6] = 0.0  # row 1, column 2 of the 4×4 grid over [−110, 110]²: a = −27.5, b = 27.5
        l_logits = torch.full((2, 5, t, t), -1e4)
        l_logits[:, 3] = 0.0  # the fourth of five L bins: centre 70
        want_ab, want_l = torch.tensor([-27.5, 27.5]), 70.0
    else:
        ab_logits, l_logits = torch.zeros(2, 2, t, t), torch.zeros(2, 1, t, t)
        want_ab, want_l = torch.zeros(2), 50.0
    method.predict = lambda rgb: (ab_logits, l_logits)
    ab, lightness = method.predict_lab(images)
    assert ab.shape == (2, 2, t, t) and lightness.shape == (2, 1, t, t)
    assert torch.allclose(ab, want_ab.view(1, 2, 1, 1).expand_as(ab), atol=1e-4)
    assert torch.allclose(lightness, torch.full_like(lightness, want_l), atol=1e-4)


def test_split_brain_annealed_mean_goes_from_the_mean_to_the_mode():
    """Two equally likely colours: T = 1 gives their (dull) average, a small T the more likely one."""
    method = _small_method("split_brain", ab_bins=4, l_bins=5)
    t = method.target_size
    ab_logits = torch.full((1, 16, t, t), -1e4)
    ab_logits[:, 0], ab_logits[:, 15] = 0.0, 0.1  # corners (−82.5, −82.5) and (82.5, 82.5), almost tied
    method.predict = lambda rgb: (ab_logits, torch.zeros(1, 5, t, t))
    mean_ab, _ = method.predict_lab(torch.rand(1, 3, 32, 32))
    mode_ab, _ = method.predict_lab(torch.rand(1, 3, 32, 32), temperature=0.01)
    assert mean_ab.abs().max() < 10  # near grey: the average of two opposite colours
    assert torch.allclose(mode_ab, torch.full_like(mode_ab, 82.5), atol=1e-2)
    with pytest.raises(ValueError, match="temperature"):
        method.predict_lab(torch.rand(1, 3, 32, 32), temperature=0.0)
