"""AdCo, AET and BigBiGAN: their losses against hand computations, the two-player games' gradients, the
transformations' parameters, and a few steps of each through the trainer."""

import math

import pytest
import torch
import torch.nn.functional as F

from sslbook.data.base import DataInfo
from sslbook.losses import (
    adversarial_contrast,
    gaussian_nll,
    hinge_discriminator,
    hinge_generator,
    info_nce,
    transformation_mse,
)
from sslbook.methods import bigbigan as bigbigan_module
from sslbook.methods import get_method
from sslbook.methods.aet import (
    CORNERS,
    affine_matrix,
    homography_from_points,
    rotation_matrix,
    sample_affine,
    sample_projective,
    transformation_params,
    warp_affine,
    warp_projective,
)
from sslbook.models import build_backbone
from sslbook.optim import build_optimizer
from sslbook.trainer import train

INFO = DataInfo("t", [str(i) for i in range(4)], 32, (0.5,) * 3, (0.25,) * 3)
LABELS = torch.zeros(8, dtype=torch.long)


def _make(name, **kw):
    torch.manual_seed(0)
    return get_method(name)(build_backbone("convnet_small", INFO), INFO, 32, **kw)


# ---------------------------------------------------------------- AdCo


def _loop_info_nce(q, k, neg, tau):
    q, k, neg = F.normalize(q, dim=1), F.normalize(k, dim=1), F.normalize(neg, dim=1)
    total = 0.0
    for i in range(q.shape[0]):
        pos = torch.exp(q[i] @ k[i] / tau)
        negs = sum(torch.exp(q[i] @ neg[m] / tau) for m in range(neg.shape[0]))
        total = total - torch.log(pos / (pos + negs))
    return total / q.shape[0]


def test_adco_loss_is_infonce_against_the_negatives_and_the_ascent_is_the_adversaries_gradient():
    torch.manual_seed(0)
    q, k = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    w = 1.7 * torch.randn(7, 8, dtype=torch.float64)  # not unit: the closed form goes through the normalisation
    q.requires_grad_(True)
    w.requires_grad_(True)
    loss, adv, ascent = adversarial_contrast(
        q.float(), k.float(), w.float(), temperature=0.12, negative_temperature=0.02
    )
    ref_enc, ref_adv = _loop_info_nce(q, k, w, 0.12), _loop_info_nce(q, k, w, 0.02)
    assert loss.item() == pytest.approx(ref_enc.item(), rel=1e-5)
    assert adv.item() == pytest.approx(ref_adv.item(), rel=1e-5)
    assert loss.item() == pytest.approx(info_nce(q, k, w, 0.12).item(), rel=1e-5)
    g_q, g_w = torch.autograd.grad(loss, (q, w), allow_unused=True)
    torch.testing.assert_close(g_q, torch.autograd.grad(ref_enc, q)[0], rtol=1e-4, atol=1e-6)  # the encoder's
    assert g_w is None  # the encoder's loss holds the negatives fixed
    assert not ascent.requires_grad
    # the adversaries' direction: the gradient of InfoNCE at τ_n with respect to them, through the normalisation
    torch.testing.assert_close(ascent.double(), torch.autograd.grad(ref_adv, w)[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="negatives must be M×8"):
        adversarial_contrast(q, k, torch.randn(7, 4))


def test_one_step_moves_the_negatives_up_the_loss_by_their_own_sgd_and_the_encoder_down():
    m = _make("adco", num_negatives=32, mlp_hidden=32, dim=16, bn_splits=1, momentum=0.99, negatives_lr=0.05)
    assert "negatives" not in dict(m.named_parameters())  # the run's optimiser never sees them
    m.filled.fill_(32)  # skip the initial writing of keys: the game from the first step
    with torch.no_grad():  # negatives near the queries, so both players have a gradient at τ_n = 0.02
        x = torch.rand(8, 3, 32, 32)
        m.negatives.copy_(F.normalize(m.projector(m.backbone(x)).repeat(4, 1) + 0.3 * torch.randn(32, 16), dim=1))
    torch.manual_seed(1)
    views = m.make_views(x, LABELS)
    with torch.no_grad():
        q0 = m.projector(m.backbone(views[0]))
        k = m.encoder_k(views[1])
    w0 = m.negatives.detach().clone()
    opt = build_optimizer("sgd", m, lr=0.01, weight_decay=0.0, momentum=0.0)
    out = m(views, LABELS)
    assert out["loss"].item() == pytest.approx(info_nce(q0, k, w0, 0.12).item(), rel=1e-4)
    assert out["adversary_loss"].item() == pytest.approx(info_nce(q0, k, w0, 0.02).item(), rel=1e-4)
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    assert torch.equal(m.negatives, w0)  # the encoder's optimiser did not move them
    m.on_step_end(0, 10)
    w1 = m.negatives.detach().clone()
    assert torch.allclose(w1.norm(dim=1), torch.ones(32), atol=1e-5)  # renormalised
    # their step: w + lr·g (the momentum buffer starts at zero), back on the sphere
    _, _, g = adversarial_contrast(q0, k, w0, 0.12, 0.02)
    torch.testing.assert_close(w1, F.normalize(w0 + 0.05 * g, dim=1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(m.velocity, g, rtol=1e-4, atol=1e-5)
    # the adversaries ascended their loss on the very same queries and keys ...
    assert info_nce(q0, k, w1, 0.02) > info_nce(q0, k, w0, 0.02)
    # ... while the encoder's step descended the contrastive loss against the negatives it saw
    with torch.no_grad():
        q1 = m.projector(m.backbone(views[0]))
    assert info_nce(q1, k, w0, 0.12) < info_nce(q0, k, w0, 0.12)
    # a second step keeps the velocity: v ← 0.9 v + g
    m(views, LABELS)
    v_before = m.velocity.clone()
    g2 = m._ascent.clone()
    m.on_step_end(1, 10)
    torch.testing.assert_close(m.velocity, 0.9 * v_before + g2)
    # an evaluation forward pass moves nothing
    m.eval()
    w2 = m.negatives.clone()
    m(views, LABELS)
    m.on_step_end(2, 10)
    assert torch.equal(m.negatives, w2)


def test_adco_writes_the_first_keys_into_the_negatives_after_the_step():
    m = _make("adco", num_negatives=12, mlp_hidden=32, dim=16, bn_splits=1)
    w0 = m.negatives.detach().clone()
    views = m.make_views(torch.rand(8, 3, 32, 32), LABELS)
    with torch.no_grad():
        k = F.normalize(m.encoder_k(views[1]), dim=1)
    m(views, LABELS)
    assert torch.equal(m.negatives.detach(), w0)  # nothing written during the forward pass
    m.on_step_end(0, 10)
    torch.testing.assert_close(m.negatives.detach()[:8], k, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m.negatives.detach()[8:], w0[8:])
    assert int(m.filled) == 8
    m(m.make_views(torch.rand(8, 3, 32, 32), LABELS), LABELS)
    m.on_step_end(1, 10)
    assert int(m.filled) == 12  # only the 4 rows left were written
    m(m.make_views(torch.rand(8, 3, 32, 32), LABELS), LABELS)
    before = m.negatives.detach().clone()
    m.on_step_end(2, 10)
    assert not torch.equal(m.negatives.detach(), before)  # full: only their ascent moves them now
    assert int(m.filled) == 12


# ---------------------------------------------------------------- AET


def test_known_transformations_give_the_parameters_and_the_images_they_should():
    x = torch.rand(2, 3, 8, 8)
    ident = rotation_matrix(0.0, 2)
    assert transformation_params(ident).tolist() == [[1.0, 0.0, 0.0, 0.0, 1.0, 0.0]] * 2
    assert torch.equal(warp_affine(x, ident), x)
    assert torch.equal(warp_projective(x, torch.eye(3).repeat(2, 1, 1)), x)
    for k in (1, 2, 3):
        M = rotation_matrix(90.0 * k, 2)
        c, s = round(math.cos(math.pi / 2 * k)), round(math.sin(math.pi / 2 * k))
        torch.testing.assert_close(
            transformation_params(M)[0], torch.tensor([c, s, 0.0, -s, c, 0.0]), atol=1e-6, rtol=0
        )
        torch.testing.assert_close(warp_affine(x, M), torch.rot90(x, k, dims=(2, 3)), atol=1e-5, rtol=0)
        H = torch.eye(3).repeat(2, 1, 1)
        H[:, :2] = M
        torch.testing.assert_close(warp_projective(x, H), torch.rot90(x, k, dims=(2, 3)), atol=1e-5, rtol=0)
    # a translation by 2 pixels to the right (2 normalised units = the whole width of 8 px)
    shift = affine_matrix(torch.zeros(2), torch.tensor([[0.5, 0.0]] * 2), torch.ones(2), torch.zeros(2))
    out = warp_affine(x, shift)
    torch.testing.assert_close(out[..., 2:], x[..., :-2], atol=1e-6, rtol=0)
    assert out[..., :2].abs().max() == 0  # zero padding where nothing came from
    edge = warp_affine(x, shift, padding="border")  # the first column repeated instead: no black frame
    torch.testing.assert_close(edge[..., 2:], x[..., :-2], atol=1e-6, rtol=0)
    torch.testing.assert_close(edge[..., :2], x[..., :1].expand(-1, -1, -1, 2), atol=1e-6, rtol=0)
    white = torch.ones(4, 1, 8, 8)
    M = sample_affine(4)
    assert warp_affine(white, M).min() < 0.5  # the black frame shows where the warp left the image...
    torch.testing.assert_close(warp_affine(white, M, "border"), white)  # ...which edge padding does not
    torch.testing.assert_close(warp_projective(white, sample_projective(4), "reflection"), white)
    # the homography of four point pairs maps them onto each other
    src = CORNERS.expand(3, 4, 2)
    dst = src + 0.2 * torch.randn(3, 4, 2)
    H = homography_from_points(src, dst)
    p = torch.cat([src, torch.ones(3, 4, 1)], -1) @ H.transpose(1, 2)
    torch.testing.assert_close(p[..., :2] / p[..., 2:], dst, atol=1e-4, rtol=0)
    assert transformation_params(sample_projective(4)).shape == (4, 8)
    A = sample_affine(1000)[:, :, :2]
    det = torch.linalg.det(A)  # scale² for a rotation and a shear: within [0.7², 1.3²]
    assert det.min() >= 0.49 - 1e-4 and det.max() <= 1.69 + 1e-4


def test_aet_views_are_the_images_warped_by_the_transformations_their_targets_name():
    m = _make("aet", transforms=("affine", "projective"))
    views = m.make_views(torch.rand(8, 3, 32, 32), LABELS)
    x = views["x"]
    tx, target = views["affine"]
    torch.testing.assert_close(warp_affine(x, target.view(-1, 2, 3)), tx)
    tx, target = views["projective"]
    H = torch.cat([target, torch.ones(8, 1)], 1).view(-1, 3, 3)
    torch.testing.assert_close(warp_projective(x, H), tx)
    m = _make("aet", padding="border")  # the method warps with the padding it was given
    views = m.make_views(torch.rand(8, 3, 32, 32), LABELS)
    tx, target = views["affine"]
    torch.testing.assert_close(warp_affine(views["x"], target.view(-1, 2, 3), "border"), tx)
    with pytest.raises(ValueError, match="padding must be one of zeros, border, reflection"):
        _make("aet", padding="grey")


def test_aet_losses_are_the_hand_computed_mse_and_gaussian_nll():
    pred, target = torch.tensor([[1.0, 2.0], [0.0, -1.0]]), torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    # ½‖·‖² per sample: ½(1 + 4) and ½(1 + 4), averaged
    assert transformation_mse(pred, target).item() == pytest.approx(2.5)
    mean, log_var = pred, torch.tensor([[0.0, math.log(4.0)], [math.log(0.25), 0.0]])
    hand = 0.0
    for n in range(2):
        for p in range(2):
            var = math.exp(log_var[n, p])
            hand += 0.5 * (math.log(2 * math.pi) + math.log(var) + (target[n, p] - mean[n, p]).item() ** 2 / var)
    assert gaussian_nll(mean, log_var, target).item() == pytest.approx(hand / 2, rel=1e-6)
    normal = torch.distributions.Normal(mean, torch.exp(0.5 * log_var))
    assert gaussian_nll(mean, log_var, target).item() == pytest.approx(-normal.log_prob(target).sum(1).mean().item())


@pytest.mark.parametrize("variational", [False, True])
def test_aet_loss_is_its_decoders_loss_on_the_pair_of_codes(variational):
    m = _make("aet", variational=variational)
    views = m.make_views(torch.rand(8, 3, 32, 32), LABELS)
    m.eval()  # BN with running statistics: the codes do not depend on what else is in the batch
    out = m(views, LABELS)
    f_x, f_tx = m.backbone(views["x"]), m.backbone(views["affine"][0])
    pred = m.decode("affine", f_x, f_tx)
    target = views["affine"][1]
    ref = gaussian_nll(*pred, target) if variational else transformation_mse(pred, target)
    assert out["loss"].item() == pytest.approx(ref.item(), rel=1e-5)


# ---------------------------------------------------------------- BigBiGAN


def test_bigbigan_unary_scores_read_only_their_own_input():
    m = _make("bigbigan", z_dim=16, gen_width=16, disc_width=16, disc_hidden=32)
    D = m.discriminator
    x, z = torch.rand(4, 3, 32, 32), torch.randn(4, 16)
    s_x, s_z, s_xz = D(x, z)
    s_x2, s_z2, s_xz2 = D(x, z + 1.0)  # another z: s_x unchanged
    assert torch.equal(s_x, s_x2) and not torch.allclose(s_z, s_z2) and not torch.allclose(s_xz, s_xz2)
    s_x3, s_z3, s_xz3 = D(torch.rand(4, 3, 32, 32), z)  # another x: s_z unchanged
    assert torch.equal(s_z, s_z3) and not torch.allclose(s_x, s_x3) and not torch.allclose(s_xz, s_xz3)


def test_hinge_losses_match_a_hand_computation():
    real = (torch.tensor([2.0, 0.5]), torch.tensor([-1.0, 0.0]), torch.tensor([0.3, 3.0]))
    fake = (torch.tensor([-2.0, 0.5]), torch.tensor([1.0, -0.5]), torch.tensor([0.0, -3.0]))
    # D: mean max(0, 1 − s) on real + mean max(0, 1 + s) on fake, per score
    d = (0 + 0.5) / 2 + (0 + 1.5) / 2  # s_x
    d += (2.0 + 1.0) / 2 + (2.0 + 0.5) / 2  # s_z
    d += (0.7 + 0) / 2 + (1.0 + 0) / 2  # s_xz
    assert hinge_discriminator(real, fake).item() == pytest.approx(d)
    # EG: mean y·(s_x + s_z + s_xz): real sums 1.3 and 3.5, fake sums −1.0 and −3.0
    assert hinge_generator(real, fake).item() == pytest.approx((1.3 + 3.5) / 2 - (-1.0 - 3.0) / 2)


@pytest.mark.parametrize("spectral_norm", [False, True])
def test_one_backward_gives_d_the_d_loss_gradient_and_e_g_the_eg_loss_gradient(spectral_norm):
    m = _make(
        "bigbigan", z_dim=16, gen_width=16, disc_width=16, disc_hidden=32, enc_hidden=32, spectral_norm=spectral_norm
    )
    if spectral_norm:  # fixed power-iteration vectors, so that the reference and the step see the same weights
        m.eval()
        assert sum("parametrizations" in n for n, _ in m.discriminator.named_parameters()) > 0
    torch.manual_seed(3)
    views = m.make_views(torch.rand(8, 3, 32, 32), LABELS)
    d_params = list(m.discriminator.parameters())
    eg_params = list(m.backbone.parameters()) + list(m.encoder_head.parameters()) + list(m.generator.parameters())
    assert len(d_params) + len(eg_params) == len(list(m.parameters()))
    # the reference: plain scores, two separate gradients
    real, fake = m.scores(views["x"], views["z"], m.encode(views["x"]), m.generator(views["z"]))
    loss_d, loss_eg = hinge_discriminator(real, fake), hinge_generator(real, fake)
    ref_d = torch.autograd.grad(loss_d, d_params, retain_graph=True)
    ref_eg = torch.autograd.grad(loss_eg, eg_params, allow_unused=True)
    out = m(views, LABELS)
    assert out["loss_d"].item() == pytest.approx(loss_d.item(), rel=1e-6)
    assert out["loss_eg"].item() == pytest.approx(loss_eg.item(), rel=1e-6, abs=1e-7)
    m.zero_grad()
    out["loss"].backward()
    for p, g in zip(d_params, ref_d):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)
    for p, g in zip(eg_params, ref_eg):
        torch.testing.assert_close(p.grad, torch.zeros_like(p) if g is None else g, rtol=1e-5, atol=1e-7)
    assert any(g is not None and g.abs().sum() > 0 for g in ref_eg)


def test_bigbigan_latent_regression_trains_the_encoder_to_invert_the_generator_and_nothing_else():
    kw = dict(z_dim=16, gen_width=16, disc_width=16, disc_hidden=32, enc_hidden=32)
    plain, lat = _make("bigbigan", **kw), _make("bigbigan", latent_regression=0.5, **kw)
    lat.load_state_dict(plain.state_dict())
    plain.eval(), lat.eval()  # BN with running statistics: E(G(z)) does not change the other passes' outputs
    torch.manual_seed(3)
    views = plain.make_views(torch.rand(8, 3, 32, 32), LABELS)
    out_p, out_l = plain(views, LABELS), lat(views, LABELS)
    with torch.no_grad():
        ref = (lat.encode(lat.generator(views["z"])) - views["z"]).pow(2).sum(1).mean()
    assert out_l["latent_mse"].item() == pytest.approx(ref.item(), rel=1e-5)
    assert out_l["loss"].item() == pytest.approx(out_p["loss"].item() + 0.5 * ref.item(), rel=1e-5)
    assert "latent_mse" not in out_p
    plain.zero_grad(), lat.zero_grad()
    out_p["loss"].backward()
    out_l["loss"].backward()
    grads = lambda m, mod: [p.grad for p in getattr(m, mod).parameters()]  # noqa: E731
    for mod in ("discriminator", "generator"):  # the generator is held fixed in the latent term
        for a, b in zip(grads(plain, mod), grads(lat, mod)):
            torch.testing.assert_close(a, b)
    assert any(not torch.allclose(a, b) for a, b in zip(grads(plain, "backbone"), grads(lat, "backbone")))
    with pytest.raises(ValueError, match="latent_regression >= 0"):
        _make("bigbigan", latent_regression=-1.0, **kw)


def test_bigbigan_latent_regression_leaves_the_batchnorm_statistics_to_real_images():
    kw = dict(z_dim=16, gen_width=16, disc_width=16, disc_hidden=32, enc_hidden=32)
    plain, lat = _make("bigbigan", **kw), _make("bigbigan", latent_regression=1.0, **kw)
    lat.load_state_dict(plain.state_dict())
    plain.train(), lat.train()
    torch.manual_seed(4)
    views = plain.make_views(torch.rand(8, 3, 32, 32), LABELS)
    plain(views, LABELS), lat(views, LABELS)
    state_p, state_l = plain.state_dict(), lat.state_dict()
    stats = [k for k in state_p if k.startswith(("backbone.", "encoder_head.")) and "running_" in k]
    assert stats and any(not torch.equal(state_p[k], _make("bigbigan", **kw).state_dict()[k]) for k in stats)
    for k in stats + [k for k in state_p if k.endswith("num_batches_tracked")]:
        torch.testing.assert_close(state_l[k], state_p[k], rtol=0, atol=0)  # E(G(z)) entered none of them
    bn = torch.nn.BatchNorm1d(3)
    with bigbigan_module.bn_statistics_held(bn):
        bn(torch.randn(5, 3) + 7)
    assert torch.equal(bn.running_mean, torch.zeros(3)) and bn.num_batches_tracked.item() == 0 and bn.momentum == 0.1


def test_bigbigan_generates_and_reconstructs_images_and_declares_gan_betas():
    m = _make("bigbigan", z_dim=16, gen_width=16, disc_width=16, disc_hidden=32)
    imgs = m.generate(5)
    assert imgs.shape == (5, 3, 32, 32) and imgs.min() >= 0 and imgs.max() <= 1
    assert m.reconstruct(torch.rand(4, 3, 32, 32)).shape == (4, 3, 32, 32)
    assert build_optimizer("adamw", m, 1e-4, 0.0).defaults["betas"] == (0.0, 0.999)


# ---------------------------------------------------------------- through the trainer

SMALL = {
    "adco": dict(num_negatives=128, mlp_hidden=32, dim=16, bn_splits=2),
    "aet": dict(transforms=("affine", "projective"), variational=True, hidden=32),
    "bigbigan": dict(z_dim=16, gen_width=16, disc_width=16, disc_hidden=32, enc_hidden=32),
}


@pytest.mark.parametrize("name", list(SMALL))
def test_trains_through_the_trainer_with_finite_metrics(name, small):
    result = train(name, **{**small, "max_steps": 3, "epochs": 1, "method_kwargs": SMALL[name]})
    assert len(result.history) == 3 and all(math.isfinite(h["loss"]) for h in result.history)
    assert all(math.isfinite(v) for h in result.history for v in h.values() if isinstance(v, float))
    assert 0.0 <= result.metrics["knn_top1"] <= 1.0
