"""Memory bank and momentum methods (chapter 6): instdisc, pirl, moco_v1, moco_v2, moco_v3."""

import pytest
import torch
from torch import nn

from sslbook.config import RECIPES, resolve
from sslbook.data.base import DataInfo
from sslbook.methods import get_method
from sslbook.methods.momentum import KeyQueue, MemoryBank, cosine_momentum, shuffled_bn_forward
from sslbook.methods.pirl import jigsaw_tiles
from sslbook.models import build_backbone
from sslbook.models.ema import ema_update_
from sslbook.trainer import load_trained, train

METHODS = ["instdisc", "pirl", "moco_v1", "moco_v2", "moco_v3"]
INFO = DataInfo("test", [str(i) for i in range(4)], 32)
SMALL_KW = {
    "instdisc": dict(bank_size=16, num_negatives=32),
    "pirl": dict(bank_size=16, num_negatives=32),
    "moco_v1": dict(queue_size=32, bn_splits=2),
    "moco_v2": dict(queue_size=32, bn_splits=2, mlp_hidden=32),
    "moco_v3": dict(mlp_hidden=32, dim=16),
}


def build(name, **kw):
    torch.manual_seed(0)
    return get_method(name)(build_backbone("convnet_small", INFO), INFO, 32, **{**SMALL_KW[name], **kw})


def batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 4, (n,), generator=g), torch.arange(n)


def views_of(method, images, labels, index):
    if getattr(method, "needs_indices", False):
        return method.make_views(images, labels, indices=index)
    return method.make_views(images, labels)


def step(method, images, labels, index, s=0, total=10, lr=0.1):
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=lr)
    out = method(views_of(method, images, labels, index), labels)
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    method.on_step_end(s, total)
    return out


# ---------------------------------------------------------------- the building blocks


def test_queue_is_fifo():
    q = KeyQueue(size=6, dim=3)
    batches = [torch.eye(3)[[i % 3, (i + 1) % 3]] * (i + 1) for i in range(4)]  # 4 batches of 2 keys
    for b in batches[:3]:
        q.enqueue(b)
    assert int(q.ptr) == 0  # wrapped around after 3 batches of 2 in a queue of 6
    assert torch.allclose(q.keys, torch.cat([nn.functional.normalize(b, dim=1) for b in batches[:3]]))
    q.enqueue(batches[3])  # the oldest batch (slots 0–1) leaves, the rest stays
    assert torch.allclose(q.keys[:2], nn.functional.normalize(batches[3], dim=1))
    assert torch.allclose(q.keys[2:], torch.cat([nn.functional.normalize(b, dim=1) for b in batches[1:3]]))
    assert int(q.ptr) == 2


def test_momentum_update_formula():
    torch.manual_seed(0)
    online, target = nn.Linear(4, 3), nn.Linear(4, 3)
    before = [p.detach().clone() for p in target.parameters()]
    ema_update_(target, online, 0.9)
    for b, t, o in zip(before, target.parameters(), online.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * o.detach(), atol=1e-7)
    ema_update_(target, online, 0.0)  # m = 0: a copy
    assert all(torch.equal(t, o) for t, o in zip(target.parameters(), online.parameters()))
    with pytest.raises(ValueError, match="different parameter lists"):
        ema_update_(target, nn.Sequential(online, nn.Linear(3, 2)), 0.5)


def test_moco_step_moves_the_key_encoder_by_the_formula():
    m = build("moco_v2", momentum=0.9)
    images, labels, index = batch()
    out = m(m.make_views(images, labels), labels)
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    k_before = [p.detach().clone() for p in m.encoder_k.parameters()]
    q_now = [p.detach().clone() for mod in (m.backbone, m.projector) for p in mod.parameters()]
    assert m.on_step_end(0, 10)["momentum"] == 0.9
    for b, q, k in zip(k_before, q_now, m.encoder_k.parameters()):
        assert torch.allclose(k, 0.9 * b + 0.1 * q, atol=1e-6)
    assert all(p.grad is None for p in m.encoder_k.parameters())  # no gradient into the key encoder


def test_moco_v3_momentum_goes_from_m0_to_one_by_a_cosine():
    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(50, 100, 0.99) == pytest.approx(0.995)
    assert cosine_momentum(100, 100, 0.99) == pytest.approx(1.0)
    m = build("moco_v3")
    assert m.on_step_end(0, 10)["momentum"] == pytest.approx(0.99)


def test_shuffled_bn_returns_keys_in_the_input_order():
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Flatten(), nn.Linear(12, 5), nn.BatchNorm1d(5)).eval()  # eval: no batch dependence
    x = torch.randn(8, 3, 2, 2)
    assert torch.allclose(shuffled_bn_forward(enc, x, splits=4), enc(x), atol=1e-6)
    enc.train()  # with batch statistics, sub-batches of 2 give other keys than the whole batch
    assert not torch.allclose(shuffled_bn_forward(enc, x, splits=4), enc(x), atol=1e-3)


def test_memory_bank_update_is_a_normalised_moving_average():
    bank = MemoryBank(5, 3, momentum=0.5)
    assert bank.filled == 0 and torch.equal(bank.vectors, torch.zeros(5, 3))  # starts empty
    v1, v2 = torch.randn(2, 3), torch.randn(2, 3)
    bank.update(torch.tensor([1, 3]), v1)  # first write: the slot takes v's direction
    assert torch.allclose(bank.vectors[[1, 3]], nn.functional.normalize(v1, dim=1), atol=1e-6)
    assert bank.filled == 2
    old = bank.vectors.clone()
    bank.update(torch.tensor([1, 3]), v2)
    want = nn.functional.normalize(0.5 * old[[1, 3]] + 0.5 * nn.functional.normalize(v2, dim=1), dim=1)
    assert torch.allclose(bank.vectors[[1, 3]], want, atol=1e-6)
    assert torch.equal(bank.vectors[[0, 2, 4]], old[[0, 2, 4]])


def test_jigsaw_tiles_are_a_permutation_of_the_grid():
    x = torch.rand(2, 3, 12, 12)
    tiles = jigsaw_tiles(x, 3)  # 2×9×3×4×4, no gap, no jitter: exactly the grid's cells
    assert tiles.shape == (2, 9, 3, 4, 4)
    grid = [x[:, :, r * 4 : (r + 1) * 4, c * 4 : (c + 1) * 4] for r in range(3) for c in range(3)]
    for i in range(2):
        found = sorted(next(j for j, g in enumerate(grid) if torch.equal(tiles[i, t], g[i])) for t in range(9))
        assert found == list(range(9))
    # with a gap and jitter the tiles are smaller and each lies inside one cell of the grid
    x = torch.arange(18 * 18, dtype=torch.float).view(1, 1, 18, 18).expand(1, 3, 18, 18)
    tiles = jigsaw_tiles(x, 3, gap=1, jitter=1)  # cells of 6 px, tiles of 4 px
    assert tiles.shape == (1, 9, 3, 4, 4)
    cells = sorted({(int(t[0, 0, 0]) // 18 // 6, int(t[0, 0, 0]) % 18 // 6) for t in tiles[0]})
    assert cells == [(r, c) for r in range(3) for c in range(3)]
    with pytest.raises(ValueError, match="at least"):
        jigsaw_tiles(torch.rand(1, 3, 9, 9), 3)


# ---------------------------------------------------------------- each method


@pytest.mark.parametrize("name", METHODS)
def test_forward_backward(name):
    m = build(name)
    images, labels, index = batch()
    for s in range(2):
        out = step(m, images, labels, index, s)
        assert torch.isfinite(out["loss"]) and out["loss"].dim() == 0
    assert all(p.grad is not None for p in m.backbone.parameters())  # the representation is trained


@pytest.mark.parametrize("name", METHODS)
def test_state_dict_round_trip_restores_queue_bank_and_key_encoder(name):
    m = build(name)
    images, labels, index = batch()
    for s in range(3):
        step(m, images, labels, index, s)
    fresh = build(name)
    fresh.load_state_dict(m.state_dict())
    for (k, a), (_, b) in zip(m.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), k
    keys = set(m.state_dict())
    if name.startswith("moco_v1") or name.startswith("moco_v2"):
        assert {"queue.keys", "queue.ptr"} <= keys and int(fresh.queue.ptr) == (3 * 8) % 32
    if name in ("instdisc", "pirl"):
        assert "bank.vectors" in keys
    assert any(k.startswith("encoder_k.") for k in keys) or name in ("instdisc", "pirl")


def test_a_resumed_moco_run_continues_where_it_stopped(small, tmp_path):
    """Interrupt after epoch 1, resume: same queue, key encoder and losses as an uninterrupted run."""
    cfg = {**small, "method_kwargs": dict(queue_size=320, bn_splits=2, mlp_hidden=64), "eval_protocols": ()}
    full = train("moco_v2", out=str(tmp_path / "a"), **cfg)

    class Interrupt(Exception):
        pass

    def stop(epoch, method, history):
        if epoch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        train("moco_v2", out=str(tmp_path / "b"), callbacks=[stop], **cfg)
    loaded = load_trained(tmp_path / "b" / "last.pt")
    assert int(loaded.method.queue.ptr) == 256  # 4 steps of 64 keys in a queue of 320
    resumed = train("moco_v2", out=str(tmp_path / "b"), resume=True, **cfg)
    assert int(resumed.method.queue.ptr) == int(full.method.queue.ptr) == (8 * 64) % 320
    for (k, a), b in zip(full.method.state_dict().items(), resumed.method.state_dict().values()):
        assert torch.equal(a, b), k  # queue.keys, queue.ptr, encoder_k.* and the rest
    assert [h["loss"] for h in full.history] == [h["loss"] for h in resumed.history]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("t", [0.0, -0.1])
def test_temperature_must_be_positive(name, t):
    with pytest.raises(ValueError, match="temperature > 0"):
        build(name, temperature=t)


def test_queue_size_not_a_multiple_of_the_batch_is_refused():
    m = build("moco_v2", queue_size=30)
    images, labels, _ = batch(8)
    with pytest.raises(ValueError, match="queue size 30 is not a multiple of the global batch 8"):
        m(m.make_views(images, labels), labels)


@pytest.mark.parametrize("name", ["moco_v1", "moco_v2", "moco_v3"])
def test_mismatched_views_are_refused(name):
    m = build(name)
    a, b = torch.rand(8, 3, 32, 32), torch.rand(8, 3, 24, 24)
    with pytest.raises(ValueError, match="same shape"):
        m([a, b], torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match="two views"):
        m([a], torch.zeros(8, dtype=torch.long))


@pytest.mark.parametrize("name", ["instdisc", "pirl"])
def test_memory_bank_methods_need_valid_indices(name):
    m = build(name)
    images, labels, _ = batch(8)
    with pytest.raises(ValueError, match="needs each image's index"):
        m.make_views(images, labels)
    with pytest.raises(ValueError, match="outside the memory bank of 16"):
        m.make_views(images, labels, indices=torch.arange(10, 18))


def test_recipes_exist_for_tiny_and_full():
    for name in METHODS:
        assert {"tiny", "full"} <= set(RECIPES[name])
        cfg = resolve(name, "tiny")
        if name.startswith("moco_v") and name != "moco_v3":
            assert cfg.method_kwargs["queue_size"] % cfg.batch_size == 0
    assert resolve("moco_v2", "full").method_kwargs["queue_size"] == 65536
    v3 = resolve("moco_v3", "full")
    assert (v3.backbone, v3.data, v3.image_size) == (
        "vit_small",
        "imagenet",
        224,
    )  # ViT-S/16: a 14×14 grid, as in the paper


def test_exercise_checkers_accept_the_answer_and_refuse_a_wrong_one():
    from sslbook.exercises import check_cosine_momentum, check_enqueue, check_momentum_update

    def enqueue(queue, ptr, keys):
        queue[ptr : ptr + len(keys)] = keys
        return queue, (ptr + len(keys)) % len(queue)

    def update(target, online, m):
        for t, o in zip(target, online):
            t.mul_(m).add_(o, alpha=1 - m)

    assert check_enqueue(enqueue)
    assert not check_enqueue(lambda q, p, k: (torch.cat([k, q[: -len(k)]]), p))  # a stack, not a FIFO
    assert check_momentum_update(update)
    assert not check_momentum_update(lambda t, o, m: None)
    assert check_cosine_momentum(cosine_momentum)
    assert not check_cosine_momentum(lambda s, n, b: b)

    def todo(*a):
        raise NotImplementedError

    assert not check_enqueue(todo)
