"""The exercise checkers of chapters 1–4 (the later chapters' are tested with their methods), and that
every chapter ends with exercises whose checkers live in sslbook.exercises.

Each checker must accept a correct answer written from scratch (not sslbook's own function), refuse
typical wrong answers, and turn a ``NotImplementedError`` into a hint instead of a traceback."""

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from sslbook import exercises

CHAPTERS = Path(__file__).resolve().parents[1] / "chapters"


def todo(*args, **kwargs):
    raise NotImplementedError


# ---------------------------------------------------------------- chapter 1


def knn_from_scratch(train, labels, test, k, temperature, cosine=True, weighted=True):
    if cosine:
        train, test = F.normalize(train, dim=1), F.normalize(test, dim=1)
        sim = test @ train.T
    else:
        sim = -torch.cdist(test, train)
    top, idx = sim.topk(min(k, len(train)), dim=1)
    weights = torch.exp(top / temperature) if weighted else torch.ones_like(top)
    votes = torch.zeros(len(test), int(labels.max()) + 1, dtype=torch.float64)
    votes.scatter_add_(1, labels[idx], weights.double())
    return votes.argmax(1)


def test_check_knn_classify(capsys):
    assert exercises.check_knn_classify(knn_from_scratch)
    assert not exercises.check_knn_classify(lambda *a: knn_from_scratch(*a, weighted=False))  # a plain majority vote
    assert not exercises.check_knn_classify(lambda *a: knn_from_scratch(*a, cosine=False))  # Euclidean neighbours
    assert not exercises.check_knn_classify(todo)
    assert "not implemented yet" in capsys.readouterr().out


def cosine_from_scratch(base, final, total_steps, warmup_steps, off_by_one=False):
    out = []
    rest = total_steps - warmup_steps
    for i in range(total_steps):
        if i < warmup_steps:
            out.append(base * (i if off_by_one else i + 1) / warmup_steps)
        else:
            t = (i - warmup_steps) / rest
            out.append(final + 0.5 * (base - final) * (1 + math.cos(math.pi * t)))
    return torch.tensor(out)


def test_check_cosine_schedule():
    assert exercises.check_cosine_schedule(cosine_from_scratch)
    # a warm-up that starts at 0 on the first step instead of reaching base on the last warm-up step
    assert not exercises.check_cosine_schedule(lambda *a: cosine_from_scratch(*a, off_by_one=True))
    assert not exercises.check_cosine_schedule(lambda b, f, n, w: torch.full((n,), b))  # constant
    assert not exercises.check_cosine_schedule(
        lambda b, f, n, w: cosine_from_scratch(b, f, n, w)[:-1]
    )  # one step short
    assert not exercises.check_cosine_schedule(todo)


# ---------------------------------------------------------------- chapter 2


def rotate_from_scratch(x, clockwise=False):
    rotated = [torch.rot90(x, -k if clockwise else k, dims=(2, 3)) for k in range(4)]
    return torch.cat(rotated), torch.arange(4).repeat_interleave(len(x))


def test_check_rotate_batch():
    assert exercises.check_rotate_batch(rotate_from_scratch)
    assert not exercises.check_rotate_batch(lambda x: rotate_from_scratch(x, clockwise=True))
    assert not exercises.check_rotate_batch(
        lambda x: (rotate_from_scratch(x)[0], torch.arange(4).repeat(len(x)))
    )  # targets interleaved
    assert not exercises.check_rotate_batch(lambda x: rotate_from_scratch(x)[0])  # no targets
    assert not exercises.check_rotate_batch(todo)


def test_check_neighbour_label():
    def label(dr, dc):
        cell = (dr + 1) * 3 + (dc + 1)
        return cell if cell < 4 else cell - 1  # the centre (cell 4) is not a class

    assert exercises.check_neighbour_label(label)
    assert not exercises.check_neighbour_label(lambda dr, dc: (dr + 1) * 3 + (dc + 1))  # centre not skipped
    assert not exercises.check_neighbour_label(lambda dr, dc: label(dc, dr))  # rows and columns swapped
    assert not exercises.check_neighbour_label(todo)


def test_check_min_hamming():
    def min_hamming(perms):
        p = len(perms)
        return min(int((perms[i] != perms[j]).sum()) for i in range(p) for j in range(p) if i != j)

    assert exercises.check_min_hamming(min_hamming)
    assert not exercises.check_min_hamming(
        lambda perms: int((perms[:, None] != perms[None]).sum(-1).min())
    )  # includes i = j: 0
    assert not exercises.check_min_hamming(lambda perms: int((perms[:, None] != perms[None]).sum(-1).max()))
    assert not exercises.check_min_hamming(todo)


# ---------------------------------------------------------------- chapter 3


def rgb_to_lab_from_scratch(rgb, gamma=True, white=True):
    lin = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4) if gamma else rgb
    m = torch.tensor(
        [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
    )
    xyz = torch.einsum("ij,njhw->nihw", m, lin)
    if white:
        xyz = xyz / m.sum(1).view(1, 3, 1, 1)
    d = 6 / 29
    f = torch.where(xyz > d**3, xyz.clamp_min(1e-12) ** (1 / 3), xyz / (3 * d * d) + 4 / 29)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


def test_check_rgb_to_lab():
    assert exercises.check_rgb_to_lab(rgb_to_lab_from_scratch)
    assert not exercises.check_rgb_to_lab(lambda x: rgb_to_lab_from_scratch(x, gamma=False))  # sRGB gamma not undone
    assert not exercises.check_rgb_to_lab(lambda x: rgb_to_lab_from_scratch(x, white=False))  # white is not a = b = 0
    assert not exercises.check_rgb_to_lab(lambda x: rgb_to_lab_from_scratch(x).flip(1))  # channels reversed
    assert not exercises.check_rgb_to_lab(todo)


def test_check_masked_pixel_mse():
    def ok(pred, target, mask):
        return ((pred - target) ** 2 * mask).sum() / (pred.shape[1] * mask.sum())

    assert exercises.check_masked_pixel_mse(ok)
    assert not exercises.check_masked_pixel_mse(lambda p, t, m: ((p - t) ** 2).mean())  # every pixel counts
    assert not exercises.check_masked_pixel_mse(
        lambda p, t, m: ((p - t) ** 2 * m).sum() / m.sum()
    )  # channels not averaged
    assert not exercises.check_masked_pixel_mse(todo)


def test_check_copy_colours():
    def ok(f_ref, f_tgt, c_ref):
        a = torch.einsum("ncm,ncp->nmp", f_ref, f_tgt).softmax(dim=1)  # over reference locations
        return torch.einsum("nkm,nmp->nkp", c_ref, a)

    def wrong_axis(f_ref, f_tgt, c_ref):
        a = torch.einsum("ncm,ncp->nmp", f_ref, f_tgt).softmax(dim=2)  # over target locations
        return torch.einsum("nkm,nmp->nkp", c_ref, a)

    assert exercises.check_copy_colours(ok)
    assert not exercises.check_copy_colours(wrong_axis)
    assert not exercises.check_copy_colours(lambda f, g, c: c[:, :, : g.shape[2]])  # right shape, no pointer
    assert not exercises.check_copy_colours(todo)


# ---------------------------------------------------------------- chapter 4


def masking_from_scratch(n, num_patches, ratio, flip=False, restore_is_shuffle=False):
    keep = int(num_patches * (1 - ratio))
    ids_shuffle = torch.rand(n, num_patches).argsort(1)
    ids_restore = ids_shuffle if restore_is_shuffle else ids_shuffle.argsort(1)
    mask = torch.ones(n, num_patches)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_shuffle.argsort(1))
    return ids_shuffle[:, :keep], ids_restore, (1 - mask) if flip else mask


def test_check_random_masking():
    assert exercises.check_random_masking(masking_from_scratch)
    assert not exercises.check_random_masking(lambda *a: masking_from_scratch(*a, flip=True))  # 1 = visible
    assert not exercises.check_random_masking(
        lambda *a: masking_from_scratch(*a, restore_is_shuffle=True)
    )  # not the inverse
    # keeps one patch too many
    assert not exercises.check_random_masking(lambda n, L, r: masking_from_scratch(n, L, r - 1.0 / L))
    assert not exercises.check_random_masking(todo)


def test_check_masked_mse():
    def ok(pred, target, mask):
        return (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()

    assert exercises.check_masked_mse(ok)
    assert not exercises.check_masked_mse(lambda p, t, m: ((p - t) ** 2).mean())  # visible patches count
    assert not exercises.check_masked_mse(lambda p, t, m: (((p - t) ** 2).mean(-1) * (1 - m)).sum() / (1 - m).sum())
    assert not exercises.check_masked_mse(todo)


# ---------------------------------------------------------------- every chapter


def _code(nb_path):
    nb = json.loads(nb_path.read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")


def test_every_chapter_ends_with_exercises_checked_by_sslbook():
    chapters = sorted(CHAPTERS.glob("[0-9][0-9]_*.ipynb"))
    assert len(chapters) >= 10
    checkers = {n for n in dir(exercises) if n.startswith("check_")}
    used = set()
    for path in chapters:
        code = _code(path)
        called = {n for n in checkers if f"{n}(" in code}
        assert called, f"{path.name} calls no checker of sslbook.exercises"
        assert "from sslbook.exercises import" in code, path.name
        used |= called
        nb = json.loads(path.read_text())
        headings = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]
        assert any("## Exercises" in h for h in headings), f"{path.name} has no Exercises section"
    assert used == checkers, f"checkers no chapter uses: {sorted(checkers - used)}"


def test_every_chapter_is_on_the_site_in_reading_order_and_executed_at_build_time():
    root = CHAPTERS.parent
    toc = [line.split("file:")[1].strip() for line in (root / "_toc.yml").read_text().splitlines() if "file:" in line]
    chapters = [f"chapters/{p.stem}" for p in sorted(CHAPTERS.glob("[0-9][0-9]_*.ipynb"))]
    # every notebook, numbered in reading order, then only plain pages (the bibliography)
    assert [t for t in toc if t.startswith("chapters/")] == chapters
    assert toc[: len(chapters)] == chapters
    assert all((root / f"{t}.md").exists() for t in toc[len(chapters) :]), toc
    config = (root / "jupyter_book_config.yml").read_text()
    assert "execute_notebooks: force" in config and "allow_errors: false" in config


# ---------------------------------------------------------------- chapter 12


def test_check_scaled_lr(capsys):
    assert exercises.check_scaled_lr(lambda base, batch: base * batch / 256)
    assert not exercises.check_scaled_lr(lambda base, batch: base * batch / 128)
    assert not exercises.check_scaled_lr(lambda base, batch: base)  # no scaling
    assert not exercises.check_scaled_lr(lambda base, batch: base * math.sqrt(batch / 256))  # square-root rule
    assert not exercises.check_scaled_lr(todo)
    assert "not implemented" in capsys.readouterr().out


def test_check_mfu(capsys):
    assert exercises.check_mfu(lambda flops, s, peak, k: flops / s / (peak * k))
    assert not exercises.check_mfu(lambda flops, s, peak, k: flops / s / peak)  # forgets the other devices
    assert not exercises.check_mfu(lambda flops, s, peak, k: flops * s / (peak * k))
    assert not exercises.check_mfu(todo)


def test_check_mean_iou():
    def ok(pred, target, k):
        ious = []
        for c in range(k):
            tp = ((pred == c) & (target == c)).sum()
            union = ((pred == c) | (target == c)).sum()
            if union > 0:
                ious.append(float(tp) / float(union))
        return sum(ious) / len(ious)

    def averages_absent_classes(pred, target, k):
        ious = [
            float(((pred == c) & (target == c)).sum()) / max(1, int(((pred == c) | (target == c)).sum()))
            for c in range(k)
        ]
        return sum(ious) / k

    assert exercises.check_mean_iou(ok)
    assert not exercises.check_mean_iou(averages_absent_classes)  # a class seen nowhere counted as IoU 0
    assert not exercises.check_mean_iou(lambda p, t, k: float((p == t).float().mean()))  # pixel accuracy
    assert not exercises.check_mean_iou(todo)


def test_check_box_iou():
    def ok(a, b):
        iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp_min(0)
        ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp_min(0)
        inter = iw * ih
        area = lambda t: (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])  # noqa: E731
        return inter / (area(a) + area(b) - inter)

    def no_clamp(a, b):  # disjoint boxes get a negative "intersection"
        iw = torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])
        ih = torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])
        area = lambda t: (t[:, 2] - t[:, 0]) * (t[:, 3] - t[:, 1])  # noqa: E731
        return iw * ih / (area(a) + area(b) - iw * ih)

    assert exercises.check_box_iou(ok)
    assert not exercises.check_box_iou(no_clamp)
    assert not exercises.check_box_iou(lambda a, b: torch.ones(len(a)))
    assert not exercises.check_box_iou(todo)


# ---------------------------------------------------------------- chapter 10


def test_check_sharpen(capsys):
    def ok(p, t):
        q = p ** (1 / t)
        return q / q.sum(1, keepdim=True)

    assert exercises.check_sharpen(ok)
    assert not exercises.check_sharpen(lambda p, t: p ** (1 / t))  # not renormalised
    assert not exercises.check_sharpen(lambda p, t: torch.softmax(p / t, dim=1))  # softmax of probabilities
    assert not exercises.check_sharpen(lambda p, t: p)
    assert not exercises.check_sharpen(todo)
    assert "renormalised" in capsys.readouterr().out


def test_check_mixmatch_mixup(capsys):
    def ok(x, y, lam, perm):
        lam = torch.maximum(lam, 1 - lam)
        return (
            lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[perm],
            lam.view(-1, 1) * y + (1 - lam.view(-1, 1)) * y[perm],
        )

    def plain(x, y, lam, perm):  # Zhang et al.'s MixUp without MixMatch's max(λ, 1 − λ)
        return lam.view(-1, 1, 1, 1) * x + (1 - lam.view(-1, 1, 1, 1)) * x[perm], lam.view(-1, 1) * y + (
            1 - lam.view(-1, 1)
        ) * y[perm]

    assert exercises.check_mixmatch_mixup(ok)
    assert not exercises.check_mixmatch_mixup(plain)
    assert "max(λ, 1 − λ)" in capsys.readouterr().out
    assert not exercises.check_mixmatch_mixup(lambda x, y, lam, perm: (ok(x, y, lam, perm)[0], y))  # labels unmixed
    assert not exercises.check_mixmatch_mixup(lambda x, y, lam, perm: ok(x, y, lam, perm)[0])  # one output
    assert not exercises.check_mixmatch_mixup(todo)


def test_check_label_guess(capsys):
    def sharpen(p, t):
        q = p ** (1 / t)
        return q / q.sum(-1, keepdim=True)

    assert exercises.check_label_guess(lambda probs, t: sharpen(probs.mean(0), t))
    assert not exercises.check_label_guess(lambda probs, t: sharpen(probs, t).mean(0))  # sharpen, then average
    assert "average first" in capsys.readouterr().out
    assert not exercises.check_label_guess(lambda probs, t: probs.mean(0))  # not sharpened
    assert not exercises.check_label_guess(lambda probs, t: sharpen(probs[0], t))  # one copy only
    assert not exercises.check_label_guess(todo)
