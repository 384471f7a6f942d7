"""Attention maps scored against object masks: DINO's 60%-of-the-mass threshold and the Jaccard index."""

import pytest
import torch

from sslbook.dense import attention_mask_iou, attention_on_objects, inside_outside_objects, threshold_mass


def test_threshold_keeps_the_fewest_locations_that_hold_the_mass():
    m = torch.tensor([[0.5, 0.3], [0.15, 0.05]])
    assert threshold_mass(m, 0.6).tolist() == [[True, True], [False, False]]  # 0.5 < 0.6 ≤ 0.8
    assert threshold_mass(m, 0.5).tolist() == [[True, False], [False, False]]
    assert threshold_mass(m, 0.81).tolist() == [[True, True], [True, False]]
    assert threshold_mass(m, 1.0).all()
    # a loop over the sorted values gives the same set, map by map
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(5, 3, 4, 4, generator=g)
    keep = threshold_mass(maps, 0.6)
    for n in range(5):
        for k in range(3):
            flat = maps[n, k].flatten() / maps[n, k].sum()
            chosen, total = set(), 0.0
            for i in flat.argsort(descending=True).tolist():
                if total >= 0.6:
                    break
                chosen.add(i)
                total += float(flat[i])
            assert set(keep[n, k].flatten().nonzero().flatten().tolist()) == chosen


def test_threshold_refuses_bad_input():
    with pytest.raises(ValueError, match="mass"):
        threshold_mass(torch.ones(2, 2), 0.0)
    with pytest.raises(ValueError, match="non-negative"):
        threshold_mass(-torch.ones(2, 2))


def test_attention_on_the_object_scores_one_and_uniform_attention_scores_the_object_share():
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, 0:4, 0:4] = True  # the object fills the top-left quarter: 4 of the 16 cells of a 4×4 grid
    on_object = torch.zeros(2, 1, 4, 4)
    on_object[:, :, 0:2, 0:2] = 1.0
    uniform = torch.ones(2, 1, 4, 4)
    r = attention_mask_iou(torch.cat([on_object, uniform], dim=1), masks)
    # four equal cells on the object: 60% of the mass is reached with three of them (IoU 3/4); all the mass, four
    assert r["per_head"][0] == pytest.approx(0.75)
    assert attention_mask_iou(on_object, masks, mass=1.0)["best"] == pytest.approx(1.0)
    # uniform attention keeps ceil(0.6 · 16) = 10 cells; with the object's 4 among them, IoU ≥ 0 and ≤ 4/10
    assert 0.0 <= float(r["per_head"][1]) <= 0.4 + 1e-6
    assert r["best_head"] == 0 and r["best"] == pytest.approx(0.75)
    assert r["mean"] == pytest.approx(float(r["per_head"].mean()))
    assert r["per_image"].shape == (2, 2)


def test_iou_against_a_hand_count():
    masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    masks[0, :2, :] = True  # top half: 8 pixels
    attn = torch.zeros(1, 1, 2, 2)
    attn[0, 0, 0, 0] = 1.0  # all mass on the top-left cell: 4 pixels, all on the object
    assert attention_mask_iou(attn, masks)["best"] == pytest.approx(4 / 8)


def test_attention_iou_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="N×heads×h×w"):
        attention_mask_iou(torch.ones(2, 4, 4), torch.ones(2, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="multiple"):
        attention_mask_iou(torch.ones(2, 1, 3, 3), torch.ones(2, 8, 8, dtype=torch.bool))


def test_attention_on_objects_is_the_share_of_each_map_on_the_object_pixels():
    g = torch.Generator().manual_seed(1)
    att = torch.rand(3, 2, 4, 4, generator=g)
    masks = torch.rand(3, 8, 8, generator=g) > 0.7
    out = attention_on_objects(att, masks)
    for n in range(3):  # a loop over the pixels: each cell's weight shared evenly by its 2×2 pixels
        for k in range(2):
            a = att[n, k] / att[n, k].sum()
            share = sum(float(a[i // 2, j // 2]) / 4 for i in range(8) for j in range(8) if masks[n, i, j])
            assert out["per_image"][n, k].item() == pytest.approx(share, rel=1e-5)
    assert out["mean"] == pytest.approx(out["per_image"].mean().item(), rel=1e-6)
    assert out["object_share"] == pytest.approx(masks.float().mean().item())
    # a uniform map puts exactly the object's share of the image on it; a map on the object alone puts all of it
    assert attention_on_objects(torch.ones(3, 2, 4, 4), masks)["mean"] == pytest.approx(out["object_share"], rel=1e-5)
    block = torch.zeros(1, 8, 8, dtype=torch.bool)
    block[0, 2:4, 4:8] = True
    on = torch.zeros(1, 1, 4, 4)
    on[0, 0, 1, 2:4] = 1.0
    assert attention_on_objects(on, block)["mean"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="multiple"):
        attention_on_objects(torch.ones(1, 1, 3, 3), block)
    with pytest.raises(ValueError, match="non-negative"):
        attention_on_objects(-on, block)


def test_inside_outside_objects_averages_the_counted_pixels_of_each_kind():
    g = torch.Generator().manual_seed(2)
    values = torch.rand(3, 6, 6, generator=g)
    objects = torch.rand(3, 6, 6, generator=g) > 0.6
    where = torch.rand(3, 6, 6, generator=g) > 0.3
    out = inside_outside_objects(values, objects, where)
    for name, part in (("inside", where & objects), ("outside", where & ~objects)):
        picked = [float(values[n, i, j]) for n in range(3) for i in range(6) for j in range(6) if part[n, i, j]]
        assert out[name] == pytest.approx(sum(picked) / len(picked), rel=1e-5) and out[f"n_{name}"] == len(picked)
        for n in range(3):
            mine = [float(values[n, i, j]) for i in range(6) for j in range(6) if part[n, i, j]]
            assert out[f"{name}_per_image"][n].item() == pytest.approx(sum(mine) / len(mine), rel=1e-5)
    # every pixel counts by default; an image without object pixels has no inside mean
    none = torch.zeros(1, 6, 6, dtype=torch.bool)
    alone = inside_outside_objects(values[:1], none)
    assert torch.isnan(alone["inside_per_image"]).all() and alone["n_inside"] == 0
    assert alone["outside"] == pytest.approx(values[0].mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="shape"):
        inside_outside_objects(values, objects[:, :4])
    with pytest.raises(ValueError, match="bool"):
        inside_outside_objects(values, objects.float())
    with pytest.raises(ValueError, match="where"):
        inside_outside_objects(values, objects, where.float())
