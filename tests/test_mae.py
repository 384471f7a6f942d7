"""ViT and MAE: patches, masking, attention maps, the masked loss, shapes, a CLI smoke run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sslbook.data.base import DataInfo
from sslbook.losses import masked_mse
from sslbook.methods.mae import MAE, random_masking, unshuffle
from sslbook.models import build_backbone
from sslbook.models.vit import VisionTransformer, patchify, sincos_pos_embed_2d, unpatchify

INFO = DataInfo("shapes", [str(i) for i in range(10)], 32, (0.5,) * 3, (0.25,) * 3)


def test_patchify_unpatchify_round_trip():
    x = torch.rand(3, 3, 32, 24)
    p = patchify(x, 4)
    assert p.shape == (3, 8 * 6, 4 * 4 * 3)
    assert torch.equal(unpatchify(p, 4, 8, 6), x)
    # patch 0 is the top-left 4×4 block, patch 1 its right neighbour
    assert torch.equal(p[0, 1].view(4, 4, 3).permute(2, 0, 1), x[0, :, 0:4, 4:8])
    with pytest.raises(ValueError, match="divisible"):
        patchify(torch.rand(1, 3, 30, 30), 4)


@pytest.mark.parametrize("ratio,keep", [(0.75, 16), (0.5, 32), (0.9, 6), (0.0, 64)])
def test_random_masking_keeps_requested_number(ratio, keep):
    ids_keep, ids_restore, mask = random_masking(5, 64, ratio, generator=torch.Generator().manual_seed(0))
    assert ids_keep.shape == (5, keep)
    assert mask.shape == (5, 64) and torch.equal(mask.sum(1), torch.full((5,), 64.0 - keep))
    # the kept indices are exactly the visible (mask = 0) positions, without repetition
    for n in range(5):
        assert sorted(ids_keep[n].tolist()) == sorted((mask[n] == 0).nonzero().flatten().tolist())
    with pytest.raises(ValueError, match="mask ratio"):
        random_masking(1, 64, 1.0)


def test_unshuffle_restores_original_order():
    n, L, d = 4, 16, 3
    tokens = torch.arange(L, dtype=torch.float32).view(1, L, 1).expand(n, L, d)  # token l carries value l
    ids_keep, ids_restore, mask = random_masking(n, L, 0.75)
    ids_shuffle = ids_restore.argsort(dim=1)
    shuffled = torch.gather(tokens, 1, ids_shuffle[..., None].expand(-1, -1, d))
    assert torch.equal(shuffled[:, : ids_keep.shape[1]], torch.gather(tokens, 1, ids_keep[..., None].expand(-1, -1, d)))
    assert torch.equal(unshuffle(shuffled, ids_restore), tokens)


def test_masked_mse_counts_only_masked_patches():
    pred, target = torch.zeros(2, 8, 12), torch.zeros(2, 8, 12)
    mask = torch.zeros(2, 8)
    mask[:, :2] = 1
    pred[:, 2:] = 100.0  # large errors on visible patches: must not count
    assert masked_mse(pred, target, mask).item() == 0.0
    pred[:, :2] = 1.0  # unit error on the masked ones
    assert masked_mse(pred, target, mask).item() == pytest.approx(1.0)
    # normalised targets: each target patch standardised by its own statistics
    target = torch.randn(2, 8, 12) * 5 + 3
    t = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    assert masked_mse(t, target, mask, normalize_target=True).item() == pytest.approx(0.0, abs=1e-8)
    # gradient reaches only masked patches
    p = torch.randn(2, 8, 12, requires_grad=True)
    masked_mse(p, target, mask).backward()
    assert p.grad[:, 2:].abs().sum() == 0 and p.grad[:, :2].abs().sum() > 0


def test_sincos_position_embeddings():
    emb = sincos_pos_embed_2d(16, 4, 4)
    assert emb.shape == (17, 16) and torch.equal(emb[0], torch.zeros(16))
    assert len({tuple(r.tolist()) for r in emb[1:]}) == 16  # every position distinct


def test_vit_tiny_shapes_and_attention_maps():
    vit = build_backbone("vit_tiny", INFO)
    x = torch.rand(2, 3, 32, 32)
    assert vit(x).shape == (2, vit.out_dim)
    L = (32 // vit.patch_size) ** 2
    assert vit.forward_tokens(x).shape == (2, 1 + L, vit.out_dim)
    ids_keep, _, mask = random_masking(2, L, 0.75)
    assert vit.forward_tokens(x, ids_keep=ids_keep).shape == (2, 1 + L // 4, vit.out_dim)
    maps = vit.get_attention_maps(x)
    assert len(maps) == vit.depth
    for a in maps:
        assert a.shape == (2, vit.heads, 1 + L, 1 + L)
        assert torch.allclose(a.sum(-1), torch.ones(2, vit.heads, 1 + L), atol=1e-5)
    # the weights path and the fused path compute the same block output
    block, t = vit.blocks[0], vit.embed(x)
    assert torch.allclose(block(t), block(t, return_attention=True)[0], atol=1e-5)
    vit.pool = "mean"
    assert torch.allclose(vit(x), vit.forward_tokens(x)[:, 1:].mean(1), atol=1e-6)


def test_vit_learned_positions_interpolate():
    vit = VisionTransformer(image_size=32, patch_size=4, dim=32, depth=1, heads=2, pos_embed="learned")
    assert vit(torch.rand(1, 3, 48, 48)).shape == (1, 32)


@pytest.mark.parametrize(
    "name,dim,depth,heads,patch",
    [
        ("vit_small", 384, 12, 6, 16),
        ("vit_base", 768, 12, 12, 16),
        ("vit_small_p4", 384, 12, 6, 4),
        ("vit_tiny_p4", 96, 4, 3, 4),
    ],
)
def test_vit_sizes_construct(name, dim, depth, heads, patch):
    vit = build_backbone(name, INFO)  # built only; no big inputs
    assert (vit.out_dim, vit.depth, vit.heads, vit.patch_size) == (dim, depth, heads, patch)
    assert len(vit.blocks) == depth


def test_mae_forward_and_reconstruct():
    torch.manual_seed(0)
    mae = MAE(build_backbone("vit_tiny", INFO), INFO, 32, decoder_dim=32, decoder_depth=1, decoder_heads=2)
    x = torch.rand(4, 3, 32, 32)
    out = mae(mae.make_views(x, torch.zeros(4, dtype=torch.long)), None)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert mae.mask_token.grad is not None and mae.backbone.patch_embed.weight.grad is not None
    rec = mae.reconstruct(x, mask_ratio=0.5)
    p = mae.backbone.patch_size
    L = (32 // p) ** 2
    assert rec["pasted"].shape == x.shape and rec["mask"].sum(1).eq(L // 2).all()
    # visible patches are pasted back unchanged
    vis = rec["mask"] == 0
    assert torch.allclose(patchify(rec["pasted"], p)[vis], patchify(x, p)[vis])
    # mask_pixels marks the pixels of the masked patches: the pasted image differs from x only there
    pix = rec["mask_pixels"]
    assert pix.shape == (4, 32, 32) and pix.dtype == torch.bool and pix.float().mean().item() == 0.5
    assert torch.equal(patchify(pix[:, None].expand(-1, 3, -1, -1).float(), p).amax(-1), rec["mask"].float())
    assert torch.equal(rec["pasted"][~pix[:, None].expand(-1, 3, -1, -1)], x[~pix[:, None].expand(-1, 3, -1, -1)])
    # the ablation: mask tokens in the encoder
    mae2 = MAE(
        build_backbone("vit_tiny", INFO),
        INFO,
        32,
        decoder_dim=32,
        decoder_depth=1,
        decoder_heads=2,
        mask_token_in_encoder=True,
        norm_pix_loss=False,
    )
    mae2([x], None)["loss"].backward()
    assert mae2.encoder_mask_token.grad is not None


def test_mae_rejects_bad_input():
    with pytest.raises(ValueError, match="ViT backbone"):
        MAE(build_backbone("convnet_small", INFO), INFO, 32)
    with pytest.raises(ValueError, match="divisible"):
        MAE(build_backbone("vit_tiny", INFO), INFO, 30)
    with pytest.raises(ValueError, match="pool"):
        MAE(build_backbone("vit_tiny", INFO), INFO, 32, pool="max")


def test_mae_representation_is_the_patch_tokens_average_unless_asked_for_cls():
    """What every protocol reads from an MAE backbone: by default the mean of the encoder's patch tokens (the
    [CLS] token is trained only through the decoder's attention); pool="cls" gives the [CLS] token."""
    x = torch.rand(2, 3, 32, 32)
    mae = MAE(build_backbone("vit_tiny", INFO), INFO, 32, decoder_dim=32, decoder_depth=1, decoder_heads=2).eval()
    tokens = mae.backbone.forward_tokens(x)  # N×(1+L)×D
    assert torch.allclose(mae.backbone(x), tokens[:, 1:].mean(1), atol=1e-6)
    cls = MAE(
        build_backbone("vit_tiny", INFO), INFO, 32, decoder_dim=32, decoder_depth=1, decoder_heads=2, pool="cls"
    ).eval()
    cls.load_state_dict(mae.state_dict())
    assert torch.allclose(cls.backbone(x), tokens[:, 0], atol=1e-6)


def test_cli_smoke(tmp_path):
    """`python -m sslbook train mae` at the tiny preset, two steps; last line JSON with the metrics."""
    repo = Path(__file__).resolve().parents[1]
    cmd = [
        sys.executable,
        "-m",
        "sslbook",
        "train",
        "mae",
        "--max-steps",
        "2",
        "--batch-size",
        "32",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
        "--set",
        "decoder_depth=1",
    ]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    assert metrics["method"] == "mae" and 0.0 <= metrics["knn_top1"] <= 1.0
    assert (tmp_path / "run" / "last.pt").is_file()
