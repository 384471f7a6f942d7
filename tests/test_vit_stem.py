"""The tiny ViT's convolutional patch stem: non-linear per patch, blind to every other patch."""

import torch

from sslbook.data.base import DataInfo
from sslbook.models.backbones import build_backbone
from sslbook.models.vit import PatchConvStem, patchify


def _info():
    return DataInfo(name="t", classes=[str(i) for i in range(10)], image_size=32)


def test_stem_tokens_depend_on_their_own_patch_only():
    torch.manual_seed(0)
    stem = PatchConvStem(patch_size=4, dim=32).eval()
    x = torch.rand(2, 3, 16, 16)
    y = x.clone()
    y[:, :, 4:8, 8:12] = torch.rand(2, 3, 4, 4)  # repaint one patch: row 1, column 2 of the 4×4 grid
    a, b = stem(patchify(x, 4)), stem(patchify(y, 4))
    changed = (a - b).abs().amax(dim=(0, 2)) > 1e-6  # per token
    assert changed.nonzero().flatten().tolist() == [1 * 4 + 2]


def test_conv_stem_vit_gives_an_8x8_map_and_encodes_a_subset_of_patches():
    torch.manual_seed(0)
    vit = build_backbone("vit_tiny_conv", _info()).eval()
    x = torch.rand(3, 3, 32, 32)
    assert vit.feature_maps(x).shape == (3, vit.out_dim, 8, 8)
    assert vit(x).shape == (3, vit.out_dim)
    keep = torch.stack([torch.randperm(64)[:16] for _ in range(3)])
    assert vit.forward_tokens(x, ids_keep=keep).shape == (3, 17, vit.out_dim)
    attn = vit.get_attention_maps(x)
    assert len(attn) == vit.depth and attn[-1].shape == (3, vit.heads, 65, 65)


def test_readout_names_a_vits_token_pooling_and_nothing_for_a_cnn():
    from sslbook.models import readout

    cnn, vit = build_backbone("convnet", _info()), build_backbone("vit_tiny", _info())
    assert isinstance(getattr(cnn, "pool", None), torch.nn.Module)  # a module: not a read-out setting
    assert readout(cnn) is None
    assert readout(vit) == vit.pool == "cls"
    vit.pool = "mean"
    assert readout(vit) == "mean"
