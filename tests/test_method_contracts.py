"""What the issues ask of each method that the method tests did not check: the CLI's method list, a
trainer run with finite metrics for every method, and the formulas of InstDisc, PIRL, BYOL, MoCo v2's
additions, MAE's token order, RotNet's semi-supervised protocol and the chromatic-aberration fixes."""

import math

import pytest
import torch
import torch.nn.functional as F

from sslbook.config import RECIPES, resolve
from sslbook.data.base import DataInfo, TensorImageDataset
from sslbook.losses import info_nce
from sslbook.methods import get_method
from sslbook.models import build_backbone
from sslbook.trainer import train

INFO = DataInfo("t", [str(i) for i in range(4)], 32, (0.5,) * 3, (0.25,) * 3)

# every method the issues 2-6 name
ISSUE_METHODS = {
    2: ["supervised"],
    3: ["rotnet", "relative_position", "jigsaw", "context_encoder", "split_brain", "video_colorization"],
    4: ["mae"],
    5: ["simclr", "instdisc", "pirl", "moco_v1", "moco_v2", "moco_v3", "cpc"],
    6: ["byol", "simsiam", "barlow_twins", "dino"],
}
ALL = [m for ms in ISSUE_METHODS.values() for m in ms]


def test_cli_lists_every_method_of_the_issues_one_a_line_with_both_presets(capsys):
    from sslbook.cli import main

    assert main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(line.strip() == line and line and " " not in line for line in lines)  # one bare name a line
    assert set(ALL) <= set(lines), sorted(set(ALL) - set(lines))
    for name in ALL:
        get_method(name)  # importable
        assert {"tiny", "full"} <= set(RECIPES.get(name, {})) or name == "supervised", name
        for preset in ("tiny", "full"):
            cfg = resolve(name, preset)
            assert cfg.method == name and cfg.epochs > 0 and cfg.batch_size > 0


# methods whose own tests build them but never run them through the trainer
SMALL_KWARGS = {
    "instdisc": dict(bank_size=256, num_negatives=64),
    "pirl": dict(bank_size=256, num_negatives=64),
    "moco_v1": dict(queue_size=128, bn_splits=2),
    "moco_v3": dict(mlp_hidden=64, dim=32),
    "byol": dict(proj_dim=32, hidden_dim=64, blur_p=(0.0, 0.0)),
    "simsiam": dict(proj_dim=64, pred_hidden=16),
    "barlow_twins": dict(proj_dim=64, blur_p=(0.0, 0.0)),
}


@pytest.mark.parametrize("name", list(SMALL_KWARGS))
def test_trains_through_the_trainer_and_reports_finite_metrics(name, small):
    result = train(
        name,
        **{
            **small,
            "max_steps": 2,
            "epochs": 1,
            "eval_protocols": ("knn", "linear"),
            "method_kwargs": SMALL_KWARGS[name],
        },
    )
    assert len(result.history) == 2 and all(math.isfinite(h["loss"]) for h in result.history)
    assert {"knn_top1", "linear_top1"} <= set(result.metrics)
    assert all(0.0 <= result.metrics[k] <= 1.0 for k in ("knn_top1", "linear_top1"))


def test_video_colorization_run_reports_mask_iou_next_to_the_standard_metrics(small):
    result = train(
        "video_colorization",
        **{
            **small,
            "max_steps": 1,
            "epochs": 1,
            "method_kwargs": dict(video_size=32, clip_batch=4, eval_clips=2, eval_frames=3),
        },
    )
    assert {"knn_top1", "mask_iou"} <= set(result.metrics)
    assert 0.0 <= result.metrics["mask_iou"] <= 1.0


# ---------------------------------------------------------------- losses and formulas


def test_info_nce_with_the_batch_as_negatives_matches_a_loop():
    g = torch.Generator().manual_seed(7)
    q, k = torch.randn(5, 6, generator=g), torch.randn(5, 6, generator=g)
    t = 0.3
    total = 0.0
    for i in range(5):
        qi = q[i] / q[i].norm()
        scores = torch.stack([qi @ (k[j] / k[j].norm()) / t for j in range(5)])
        total += -(scores[i] - torch.logsumexp(scores, 0))
    assert torch.allclose(info_nce(q, k, None, t), total / 5, atol=1e-5)


def _bank_method(name, **kw):
    torch.manual_seed(0)
    m = get_method(name)(build_backbone("convnet_small", INFO), INFO, 32, bank_size=16, num_negatives=24, **kw)
    with torch.no_grad():  # a bank already written: random unit vectors in every slot
        m.bank.vectors.copy_(F.normalize(torch.randn_like(m.bank.vectors), dim=1))
    return m.eval()  # eval: no bank update, BN statistics fixed, so a second forward sees the same numbers


def test_instdisc_loss_is_infonce_against_its_own_slot_and_sampled_bank_negatives():
    m = _bank_method("instdisc", temperature=0.1)
    x, index = torch.rand(8, 3, 32, 32), torch.tensor([3, 1, 4, 15, 9, 2, 6, 5])
    bank_before = m.bank.vectors.clone()
    torch.manual_seed(1)
    out = m({"x": x, "index": index}, None)
    torch.manual_seed(1)
    negatives = m.bank.sample(24)  # the same draw as inside forward
    v = m.projector(m.backbone(x))
    assert torch.allclose(out["loss"], info_nce(v, bank_before[index], negatives, 0.1), atol=1e-5)
    assert torch.equal(m.bank.vectors, bank_before)  # eval mode writes nothing
    m.train()
    m({"x": x, "index": index}, None)
    changed = (m.bank.vectors != bank_before).any(1)
    assert changed[index].all() and not changed[[0, 7, 8]].any()  # training writes exactly the batch's slots


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_pirl_loss_is_the_convex_combination_of_its_two_nce_terms(lam):
    m = _bank_method("pirl", temperature=0.2, lam=lam)
    images, index = torch.rand(4, 3, 32, 32), torch.tensor([0, 5, 7, 11])
    views = m.make_views(images, None, indices=index)
    torch.manual_seed(2)
    out = m(views, None)
    torch.manual_seed(2)
    negatives = m.bank.sample(24)
    mem = m.bank.vectors[index]
    f_img = m.f(m.backbone(views["image"]))
    g_tiles = m.g_tile(m.backbone(views["tiles"].flatten(0, 1)))
    g_jig = m.g(g_tiles.reshape(4, -1))
    want = lam * info_nce(g_jig, mem, negatives, 0.2) + (1 - lam) * info_nce(f_img, mem, negatives, 0.2)
    assert torch.allclose(out["loss"], want, atol=1e-5)
    with pytest.raises(ValueError, match="λ"):
        _bank_method("pirl", lam=1.5)


def test_byol_loss_is_the_symmetric_normalised_mse_against_the_target():
    torch.manual_seed(0)
    m = get_method("byol")(
        build_backbone("convnet_small", INFO), INFO, 32, proj_dim=16, hidden_dim=32, blur_p=(0.0, 0.0)
    ).eval()
    with torch.no_grad():  # a target that differs from the online network
        for p in m.target_projector.parameters():
            p.add_(0.1 * torch.randn_like(p))
    v1, v2 = torch.rand(6, 3, 32, 32), torch.rand(6, 3, 32, 32)
    out = m([v1, v2], None)
    with torch.no_grad():
        p1, p2 = (m.predictor(m.projector(m.backbone(v))) for v in (v1, v2))
        z1, z2 = (m.target_projector(m.target_backbone(v)) for v in (v1, v2))

    def mse(p, z):  # ‖p̄ − z̄‖², averaged over the batch, by a loop
        return sum(((p[i] / p[i].norm() - z[i] / z[i].norm()) ** 2).sum() for i in range(len(p))) / len(p)

    assert torch.allclose(out["loss"], mse(p1, z2) + mse(p2, z1), atol=1e-5)
    assert not torch.allclose(out["loss"], 2 * mse(p1, z1), atol=1e-3)  # the views are crossed


def test_moco_v2_adds_the_mlp_head_and_blur_to_v1():
    torch.manual_seed(0)
    v1 = get_method("moco_v1")(build_backbone("convnet_small", INFO), INFO, 32, queue_size=32)
    v2 = get_method("moco_v2")(build_backbone("convnet_small", INFO), INFO, 32, queue_size=32, mlp_hidden=64)
    linears = lambda head: [m for m in head if isinstance(m, torch.nn.Linear)]  # noqa: E731
    assert len(linears(v1.projector)) == 1 and len(linears(v2.projector)) == 2
    assert any(isinstance(m, torch.nn.ReLU) for m in v2.projector)
    assert v1.recipe.blur_p == 0.0 and v2.recipe.blur_p > 0.0
    assert (v1.temperature, v2.temperature) == (0.07, 0.2)
    assert resolve("moco_v2", "full").method_kwargs["mlp_hidden"] == 2048


# ---------------------------------------------------------------- MAE: which tokens go where


def test_mae_encoder_sees_the_visible_patches_and_the_decoder_puts_every_token_back_in_place():
    from sslbook.methods.mae import MAE, random_masking

    torch.manual_seed(0)
    mae = MAE(build_backbone("vit_tiny", INFO), INFO, 32, decoder_dim=32, decoder_depth=1, decoder_heads=2).eval()
    vit, x = mae.backbone, torch.rand(3, 3, 32, 32)
    L, keep = 16, 4
    # the encoder's input: [CLS] then exactly the kept patches' embeddings (with their own positions)
    ids_keep, ids_restore, mask = random_masking(3, L, 0.75, generator=torch.Generator().manual_seed(3))
    full = vit.embed(x)  # N×(1+L)×D, every patch
    kept = vit.embed(x, ids_keep=ids_keep)
    assert kept.shape == (3, 1 + keep, vit.out_dim)
    for n in range(3):
        assert torch.allclose(kept[n, 1:], full[n, 1 + ids_keep[n]], atol=1e-6)
        assert torch.equal(mask[n, ids_keep[n]], torch.zeros(keep))
    # the decoder's input: visible tokens at their original positions, the mask token everywhere else
    seen = {}
    mae.decoder_blocks[0].register_forward_pre_hook(lambda mod, args: seen.setdefault("y", args[0].detach().clone()))
    latent, mask, ids_restore = mae.encode(x, generator=torch.Generator().manual_seed(3))
    mae.decode(latent, ids_restore)
    y = seen["y"] - mae.decoder_pos  # undo the position embeddings
    embedded = mae.decoder_embed(latent)  # N×(1+keep)×d, in the encoder's (shuffled) order
    ids_keep = ids_restore.argsort(1)[:, :keep]
    for n in range(3):
        assert torch.allclose(y[n, 0], embedded[n, 0], atol=1e-6)  # [CLS] first
        assert torch.allclose(y[n, 1 + ids_keep[n]], embedded[n, 1:], atol=1e-6)
        masked = (mask[n] == 1).nonzero().flatten()
        assert len(masked) == L - keep
        assert torch.allclose(y[n, 1 + masked], mae.mask_token[0].expand(len(masked), -1), atol=1e-6)


# ---------------------------------------------------------------- RotNet's semi-supervised protocol


def test_finetune_can_freeze_the_first_two_conv_blocks_of_the_book_convnet():
    """Freeze conv1 and conv2, train the rest plus a linear layer on a labelled subset."""
    from sslbook import evaluation as ev

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(64) % 4
    images = (torch.rand(64, 3, 16, 16, generator=g) * 60 + labels.view(-1, 1, 1, 1) * 50).to(torch.uint8)
    data = TensorImageDataset(images, labels, DataInfo("toy", ["a", "b", "c", "d"], 16))
    torch.manual_seed(0)
    backbone = build_backbone("convnet_small", data.info)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    out = ev.finetune(backbone, data, data, label_fraction=0.5, epochs=2, batch_size=16, freeze=["conv1", "conv2"])
    after = out["backbone"].state_dict()
    for k in before:
        if k.startswith(("conv1.", "conv2.")):
            assert torch.equal(before[k], after[k]), k  # weights and BN statistics of the frozen blocks
    assert not torch.equal(before["conv3.1.0.weight"], after["conv3.1.0.weight"])  # the rest trains
    assert not torch.equal(before["conv4.1.1.running_mean"], after["conv4.1.1.running_mean"])
    assert len(out["train_index"]) == 32


# ---------------------------------------------------------------- relative position: chromatic aberration


def test_chromatic_aberration_countermeasures():
    from sslbook.methods.patches import drop_colour_channels, project_out_green_magenta

    a = torch.tensor([-1.0, 2.0, -1.0]) / 6**0.5
    x = torch.rand(4, 3, 6, 6, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25  # no clipping
    y = project_out_green_magenta(x)
    assert (y * a.view(1, 3, 1, 1)).sum(1).abs().max() < 1e-6  # no green–magenta component left
    assert torch.allclose(y.mean(1), x.mean(1), atol=1e-6)  # brightness (the grey axis) untouched
    grey = torch.full((1, 3, 2, 2), 0.4)
    assert torch.allclose(project_out_green_magenta(grey), grey)
    dropped = drop_colour_channels(x, noise_std=0.0, generator=torch.Generator().manual_seed(1))
    for img, orig in zip(dropped, x):  # one channel kept exactly, the others copies of it
        kept = [c for c in range(3) if torch.equal(img[c], orig[c])]
        assert len(kept) >= 1 and all(torch.equal(img[c], orig[kept[0]]) for c in range(3))
