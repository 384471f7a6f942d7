"""Dense evaluation protocols: does a representation know *where* things are, not only *what* they are?

MoCo (He et al. 2020) judged its pre-training by what it transfers to: detection and segmentation on
PASCAL VOC and COCO, where it beat supervised ImageNet pre-training. A global feature vector (what the
k-NN and linear probes of :mod:`sslbook.evaluation` read) has pooled the positions away; the protocols
here read the backbone's **spatial feature map** instead, and score it against each image's per-pixel
class mask and object box (:class:`~sslbook.data.base.SegmentedImageDataset`, e.g.
``load_dataset("shapes", split, masks=True)``).

==========================  ===================================================================
protocol                    what it measures
==========================  ===================================================================
:func:`dense_probe`         a frozen backbone's map → a linear classifier at every location
                            (a 1×1 convolution) → bilinearly upsampled to the pixels; mIoU and
                            pixel accuracy. Is the class of each region linearly decodable?
:func:`segmentation_head`   a small FCN-style head (Long, Shelhamer & Darrell 2015): 3×3 conv,
                            BN, ReLU, 1×1 conv, upsampled; the backbone frozen or fine-tuned.
:func:`detection_probe`     the labelled object's class and box from the frozen map, by one
                            linear layer on the flattened map; mean box IoU, accuracy at
                            IoU ≥ 0.5, class accuracy, and both at once.
:func:`transfer`            k-NN and linear probe of a frozen backbone on *another* data set
                            (e.g. ``tabletop``, or a reader's ``folder:PATH``).
:func:`attention_mask_iou`  attention maps (e.g. a ViT's [CLS] attention over its patches),
                            thresholded to keep 60% of their mass as DINO does, against the
                            objects' pixels: the Jaccard index per head.
:func:`attention_on_objects` the share of each attention map's mass that falls on the objects'
                            pixels, against the objects' share of the image (what a uniform map
                            puts there): a measure with no threshold.
==========================  ===================================================================

The spatial map is :func:`spatial_features`: the backbone's ``feature_maps(x)`` (every backbone of
:mod:`sslbook.models` has it: a CNN's last stage before pooling, a ViT's patch tokens on their grid;
split-brain's two halves are concatenated). A backbone without one is refused with a ``ValueError``.
Like every protocol of the book, these take a backbone and know nothing of the method that trained it.
All scores are fractions in [0, 1].
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sslbook.evaluation import extract_features, knn_accuracy, linear_probe, to_float

__all__ = [
    "attention_mask_iou",
    "attention_on_objects",
    "box_iou",
    "confusion_matrix",
    "dense_probe",
    "dense_targets",
    "detection_probe",
    "extract_feature_maps",
    "segmentation_head",
    "segmentation_scores",
    "soft_targets",
    "spatial_features",
    "threshold_mass",
    "transfer",
]

NEEDS_MAP = (
    "needs a backbone with a spatial output: a `feature_maps(x)` method returning N×C×h×w "
    "(a CNN's map before pooling, a ViT's patch tokens)"
)


# ----------------------------------------------------------------------------------------------
# The spatial map and the targets
# ----------------------------------------------------------------------------------------------


def _device_of(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def spatial_features(backbone: nn.Module, x: torch.Tensor, what: str = "this protocol") -> torch.Tensor:
    """The backbone's spatial feature map N×C×h×w of float images x (N×3×H×W in [0, 1]).

    Reads ``backbone.feature_maps(x)``; a tuple of maps of one size (split-brain's halves) is
    concatenated along the channels. Raises ``ValueError`` (naming ``what`` needs it) for a backbone
    without a spatial output."""
    fn = getattr(backbone, "feature_maps", None)
    if not callable(fn):
        raise ValueError(f"{what} {NEEDS_MAP}; {type(backbone).__name__} has none")
    out = fn(x)
    if isinstance(out, (tuple, list)):
        out = torch.cat(list(out), dim=1)
    if not torch.is_tensor(out) or out.ndim != 4:
        raise ValueError(
            f"{what} {NEEDS_MAP}; {type(backbone).__name__}.feature_maps gave "
            f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__}"
        )
    return out


def dense_targets(dataset, what: str = "this protocol") -> tuple[torch.Tensor, torch.Tensor]:
    """``(masks int64 N×H×W, boxes int64 N×4)`` of a data set with per-pixel masks; ValueError otherwise."""
    masks, boxes = getattr(dataset, "masks", None), getattr(dataset, "boxes", None)
    if masks is None or boxes is None:
        name = getattr(getattr(dataset, "info", None), "name", type(dataset).__name__)
        raise ValueError(
            f"{what} needs a data set with per-pixel masks and boxes (a SegmentedImageDataset, e.g. "
            f"load_dataset('shapes', split, masks=True)); {name!r} has none"
        )
    return masks.long(), boxes.long()


def _num_mask_classes(*datasets) -> int:
    for ds in datasets:
        names = getattr(ds, "mask_classes", None)
        if names:
            return len(names)
    return int(max(int(ds.masks.max()) for ds in datasets)) + 1


@torch.no_grad()
def extract_feature_maps(
    backbone: nn.Module, dataset, batch_size: int = 256, device=None, what: str = "this protocol"
) -> torch.Tensor:
    """The spatial maps of every image of ``dataset`` (in order), float32 N×C×h×w on the CPU; the
    backbone runs in eval mode and its train/eval flags are restored afterwards."""
    device = torch.device(device) if device is not None else _device_of(backbone)
    backbone.to(device)
    modes = [(m, m.training) for m in backbone.modules()]
    backbone.eval()
    maps = []
    try:
        for start in range(0, len(dataset), batch_size):
            x = to_float(dataset.images[start : start + batch_size].to(device))
            maps.append(spatial_features(backbone, x, what).float().cpu())
    finally:
        for m, training in modes:
            m.training = training
    if not maps:
        raise ValueError(f"{what}: the data set is empty")
    return torch.cat(maps)


# ----------------------------------------------------------------------------------------------
# Scores
# ----------------------------------------------------------------------------------------------


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """K×K counts, rows the true class, columns the predicted one, over every pixel."""
    idx = target.reshape(-1).long() * num_classes + pred.reshape(-1).long()
    return torch.bincount(idx, minlength=num_classes * num_classes).view(num_classes, num_classes)


def segmentation_scores(conf: torch.Tensor) -> dict:
    """From a confusion matrix: ``miou`` (the mean over classes present in the targets or the predictions of
    TP / (TP + FP + FN)), ``pixel_acc`` and ``iou`` (per class; nan for a class seen nowhere)."""
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))
    seen = union > 0
    return {
        "miou": float(iou[seen].mean()) if bool(seen.any()) else float("nan"),
        "pixel_acc": float(tp.sum() / conf.sum().clamp_min(1)),
        "iou": iou.tolist(),
    }


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of matching rows of two N×4 box lists ``(x0, y0, x1, y1)`` (x1 ≥ x0, y1 ≥ y0).
    Two empty boxes score 0."""
    a, b = a.double(), b.double()
    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp_min(0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp_min(0)
    inter = iw * ih
    area = lambda t: (t[:, 2] - t[:, 0]).clamp_min(0) * (t[:, 3] - t[:, 1]).clamp_min(0)  # noqa: E731
    union = area(a) + area(b) - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(union)).float()


# ----------------------------------------------------------------------------------------------
# Training loops on precomputed maps (frozen backbones)
# ----------------------------------------------------------------------------------------------


def _standardise(train: torch.Tensor, *others: torch.Tensor, dims=(0, 2, 3)):
    mean = train.mean(dims, keepdim=True)
    std = train.std(dims, keepdim=True).clamp_min(1e-6)
    return [(t - mean) / std for t in (train, *others)]


def _cosine(optimizer, lr: float, step: int, total: int) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))


def _fit(head: nn.Module, loss_fn, n: int, epochs: int, lr: float, weight_decay: float, batch_size: int, seed: int):
    """AdamW with a cosine schedule over ``epochs`` passes of ``n`` items; ``loss_fn(head, idx)``."""
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    g = torch.Generator().manual_seed(seed)
    total = epochs * math.ceil(n / batch_size)
    head.train()
    with _one_thread():
        history = _epochs(head, loss_fn, optimizer, g, n, epochs, lr, batch_size, total)
    head.eval()
    return history


class _one_thread:
    """Small matrix products run fastest on one CPU thread (the pool's start-up costs more than the work)."""

    def __enter__(self):
        self.before = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.before)


def _epochs(head, loss_fn, optimizer, g, n, epochs, lr, batch_size, total):
    step, history = 0, []
    for _ in range(epochs):
        order, running = torch.randperm(n, generator=g), 0.0
        for start in range(0, n, batch_size):
            _cosine(optimizer, lr, step, total)
            idx = order[start : start + batch_size]
            loss = loss_fn(head, idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(idx)
            step += 1
        history.append(running / n)
    return history


@torch.no_grad()
def _predict_masks(head: nn.Module, maps: torch.Tensor, size: tuple[int, int], batch_size: int = 256) -> torch.Tensor:
    out = []
    for start in range(0, len(maps), batch_size):
        logits = F.interpolate(head(maps[start : start + batch_size]), size=size, mode="bilinear", align_corners=False)
        out.append(logits.argmax(1))
    return torch.cat(out)


def soft_targets(masks: torch.Tensor, size: tuple[int, int], num_classes: int) -> torch.Tensor:
    """Per-pixel masks N×H×W → the fraction of each class's pixels under every cell of an h×w grid,
    N×K×h×w (area pooling of the one-hot masks): what a location of a coarse map is trained to predict."""
    one_hot = F.one_hot(masks.long(), num_classes).permute(0, 3, 1, 2).float()
    return F.adaptive_avg_pool2d(one_hot, size)


def _soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against class fractions, averaged over the locations: −Σ_k t_k log p_k."""
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def _seg_loss(head, maps, masks, num_classes):
    target = soft_targets(masks, tuple(maps.shape[-2:]), num_classes)

    def loss(h, idx):
        return _soft_ce(h(maps[idx]), target[idx])

    return loss


def _fcn_head(c_in: int, num_classes: int, hidden: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(c_in, hidden, 3, padding=1, bias=False),
        nn.BatchNorm2d(hidden),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, num_classes, 1),
    )


def dense_probe(
    backbone: nn.Module,
    train_set,
    test_set,
    epochs: int = 100,
    lr: float = 0.01,
    weight_decay: float = 1e-4,
    batch_size: int = 256,
    seed: int = 0,
    device=None,
    train_maps=None,
    test_maps=None,
) -> dict:
    """Frozen dense linear probe: at every location of the backbone's map a linear classifier (a 1×1
    convolution over the channels, standardised with the training maps' per-channel mean and std) gives
    class logits; they are bilinearly upsampled to the image's pixels and scored against the per-pixel
    masks of ``test_set``.

    Training reads ``train_set``'s masks at the map's resolution: each location learns, with
    cross-entropy, the fractions of the classes among the pixels under it (:func:`soft_targets`). That is
    the pixel-level loss up to the upsampling, at a small fraction of its cost (a 4×4 map has 64 times
    fewer locations than a 32×32 image has pixels). AdamW with a cosine schedule, seeded. A frozen probe is read
    when it has converged: on 1,000 ``shapes`` scenes and the book's CNN, 20 epochs left the training loss at 1.6 and
    the pixel accuracy at 73–76% (the probe still learning which locations are background), 100 epochs bring the loss
    to 0.5 and the pixel accuracy to 89–92%, for random and trained backbones alike.

    ``train_maps``/``test_maps`` (from :func:`extract_feature_maps`) skip the extraction, e.g. when
    several probes read one backbone.

    Returns:
        dict with ``miou``, ``pixel_acc``, ``iou`` (per mask class), ``pred`` (int64 test masks predicted,
        N×H×W), ``map_shape`` ((C, h, w) of the map read), ``history`` (training loss per epoch) and
        ``head`` (the 1×1 convolution, applied to standardised maps).
    """
    what = "the dense probe"
    train_masks, _ = dense_targets(train_set, what)
    test_masks, _ = dense_targets(test_set, what)
    if train_maps is None:
        train_maps = extract_feature_maps(backbone, train_set, device=device, what=what)
    if test_maps is None:
        test_maps = extract_feature_maps(backbone, test_set, device=device, what=what)
    k = _num_mask_classes(train_set, test_set)
    x_train, x_test = _standardise(train_maps, test_maps)
    c, h, w = x_train.shape[1:]
    # every location is one example: (N·h·w)×C features, (N·h·w)×K class fractions
    locations = x_train.permute(0, 2, 3, 1).reshape(-1, c)
    target = soft_targets(train_masks, (h, w), k).permute(0, 2, 3, 1).reshape(-1, k)
    torch.manual_seed(seed)
    linear = nn.Linear(c, k)
    history = _fit(
        linear,
        lambda lin, idx: _soft_ce(lin(locations[idx]), target[idx]),
        len(locations),
        epochs,
        lr,
        weight_decay,
        batch_size * h * w,
        seed,
    )
    head = nn.Conv2d(c, k, 1)
    with torch.no_grad():
        head.weight.copy_(linear.weight.view(k, c, 1, 1))
        head.bias.copy_(linear.bias)
    pred = _predict_masks(head, x_test, tuple(test_masks.shape[-2:]))
    scores = segmentation_scores(confusion_matrix(pred, test_masks, k))
    return {**scores, "pred": pred, "map_shape": tuple(train_maps.shape[1:]), "history": history, "head": head}


def segmentation_head(
    backbone: nn.Module,
    train_set,
    test_set,
    finetune: bool = False,
    epochs: int | None = None,
    lr: float | None = None,
    weight_decay: float = 1e-4,
    hidden: int = 64,
    batch_size: int = 128,
    seed: int = 0,
    device=None,
    train_maps=None,
    test_maps=None,
) -> dict:
    """A small FCN-style segmentation head (3×3 conv, BN, ReLU, 1×1 conv to the classes; logits upsampled
    bilinearly to the pixels for the scores) on the backbone's map, trained with cross-entropy against the
    class fractions under each location (:func:`soft_targets`, as :func:`dense_probe`).

    - ``finetune=False``: the backbone is frozen (its maps are computed once; default 15 epochs, lr 0.01);
    - ``finetune=True``: a copy of the backbone is trained with the head (the caller's is never changed;
      default 8 epochs, lr 1e-3 for the head and a tenth of it for the backbone, batch-norm in train mode,
      horizontal flips of image and mask).

    Returns:
        dict with ``miou``, ``pixel_acc``, ``iou``, ``pred`` (test masks), ``history``, ``head`` and, when
        fine-tuned, ``backbone`` (the trained copy, eval mode).
    """
    what = "the segmentation head"
    train_masks, _ = dense_targets(train_set, what)
    test_masks, _ = dense_targets(test_set, what)
    k = _num_mask_classes(train_set, test_set)
    size = tuple(test_masks.shape[-2:])
    torch.manual_seed(seed)
    if not finetune:
        epochs, lr = epochs or 15, lr or 0.01
        if train_maps is None:
            train_maps = extract_feature_maps(backbone, train_set, device=device, what=what)
        if test_maps is None:
            test_maps = extract_feature_maps(backbone, test_set, device=device, what=what)
        x_train, x_test = _standardise(train_maps, test_maps)
        head = _fcn_head(x_train.shape[1], k, hidden)
        history = _fit(
            head, _seg_loss(head, x_train, train_masks, k), len(x_train), epochs, lr, weight_decay, batch_size, seed
        )
        pred = _predict_masks(head, x_test, size)
        return {
            **segmentation_scores(confusion_matrix(pred, test_masks, k)),
            "pred": pred,
            "history": history,
            "head": head,
        }

    epochs, lr = epochs or 8, lr or 1e-3
    device = torch.device(device) if device is not None else _device_of(backbone)
    net = copy.deepcopy(backbone).to(device)
    with torch.no_grad():
        c = spatial_features(net.eval(), to_float(train_set.images[:2].to(device)), what).shape[1]
    head = _fcn_head(c, k, hidden).to(device)
    optimizer = torch.optim.AdamW(
        [
            {"params": net.parameters(), "lr": lr / 10, "base": lr / 10},
            {"params": head.parameters(), "lr": lr, "base": lr},
        ],
        weight_decay=weight_decay,
    )
    g = torch.Generator().manual_seed(seed)
    n = len(train_set)
    total, step, history = epochs * math.ceil(n / batch_size), 0, []
    for _ in range(epochs):
        net.train()
        head.train()
        order, running = torch.randperm(n, generator=g), 0.0
        for start in range(0, n, batch_size):
            for group in optimizer.param_groups:
                group["lr"] = group["base"] * 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))
            idx = order[start : start + batch_size]
            x, y = to_float(train_set.images[idx].to(device)), train_masks[idx].to(device)
            flip = (torch.rand(len(idx), generator=g) < 0.5).to(device)
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            y = torch.where(flip.view(-1, 1, 1), y.flip(-1), y)
            logits = head(spatial_features(net, x, what))
            loss = _soft_ce(logits, soft_targets(y, tuple(logits.shape[-2:]), k))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(idx)
            step += 1
        history.append(running / n)
    net.eval()
    head.eval()
    preds = []
    with torch.no_grad():
        for start in range(0, len(test_set), 256):
            x = to_float(test_set.images[start : start + 256].to(device))
            logits = F.interpolate(
                head(spatial_features(net, x, what)), size=size, mode="bilinear", align_corners=False
            )
            preds.append(logits.argmax(1).cpu())
    pred = torch.cat(preds)
    return {
        **segmentation_scores(confusion_matrix(pred, test_masks, k)),
        "pred": pred,
        "history": history,
        "head": head.cpu(),
        "backbone": net.cpu(),
    }


# ----------------------------------------------------------------------------------------------
# Detection-style probe
# ----------------------------------------------------------------------------------------------


def _box_targets(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pixel boxes (x0, y0, x1, y1) → (cx, cy, w, h) as fractions of the image's width and height."""
    h, w = size
    b = boxes.float()
    return torch.stack(
        [(b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h, (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h],
        dim=1,
    )


def _box_pixels(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(cx, cy, w, h) fractions → pixel boxes (x0, y0, x1, y1), clipped to the image."""
    h, w = size
    half_w, half_h = t[:, 2].clamp_min(0) / 2, t[:, 3].clamp_min(0) / 2
    x0, x1 = ((t[:, 0] - half_w) * w).clamp(0, w), ((t[:, 0] + half_w) * w).clamp(0, w)
    y0, y1 = ((t[:, 1] - half_h) * h).clamp(0, h), ((t[:, 1] + half_h) * h).clamp(0, h)
    return torch.stack([x0, y0, x1, y1], dim=1)


def detection_probe(
    backbone: nn.Module,
    train_set,
    test_set,
    epochs: int = 40,
    lr: float = 3e-3,
    weight_decay: float = 1e-3,
    batch_size: int = 256,
    box_weight: float = 5.0,
    seed: int = 0,
    device=None,
    train_maps=None,
    test_maps=None,
) -> dict:
    """Detection-style linear probe: from the frozen backbone's whole map (flattened, so the positions are
    kept; standardised per dimension), one linear layer predicts the labelled object's class (softmax,
    cross-entropy) and its box as centre, width and height in fractions of the image (L1 loss, weighted by
    ``box_weight``). One object per image, as in the labelled-object boxes of the data set.

    Returns:
        dict with ``box_iou`` (mean IoU of the predicted and true boxes), ``acc_iou50`` (fraction of test
        images with IoU ≥ 0.5), ``class_acc``, ``det_acc`` (class right *and* IoU ≥ 0.5), ``pred_boxes``
        (float N×4 pixel boxes), ``pred_labels``, ``ious`` and ``history``.
    """
    what = "the detection probe"
    _, train_boxes = dense_targets(train_set, what)
    _, test_boxes = dense_targets(test_set, what)
    if train_maps is None:
        train_maps = extract_feature_maps(backbone, train_set, device=device, what=what)
    if test_maps is None:
        test_maps = extract_feature_maps(backbone, test_set, device=device, what=what)
    size = tuple(test_set.images.shape[-2:])
    x_train, x_test = _standardise(train_maps.flatten(1), test_maps.flatten(1), dims=(0,))
    y_train = train_set.labels.long()
    num_classes = int(max(int(train_set.labels.max()), int(test_set.labels.max()))) + 1
    t_train = _box_targets(train_boxes, tuple(train_set.images.shape[-2:]))
    torch.manual_seed(seed)
    head = nn.Linear(x_train.shape[1], num_classes + 4)
    nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias[num_classes:] = t_train.mean(0)  # start at the mean box

    def loss(h, idx):
        out = h(x_train[idx])
        return F.cross_entropy(out[:, :num_classes], y_train[idx]) + box_weight * F.l1_loss(
            out[:, num_classes:], t_train[idx]
        )

    history = _fit(head, loss, len(x_train), epochs, lr, weight_decay, batch_size, seed)
    with torch.no_grad():
        out = head(x_test)
    pred_labels = out[:, :num_classes].argmax(1)
    pred_boxes = _box_pixels(out[:, num_classes:], size)
    ious = box_iou(pred_boxes, test_boxes.float())
    right = pred_labels == test_set.labels.long()
    hit = ious >= 0.5
    return {
        "box_iou": float(ious.mean()),
        "acc_iou50": float(hit.float().mean()),
        "class_acc": float(right.float().mean()),
        "det_acc": float((right & hit).float().mean()),
        "pred_boxes": pred_boxes,
        "pred_labels": pred_labels,
        "ious": ious,
        "history": history,
    }


# ----------------------------------------------------------------------------------------------
# Transfer to another data set
# ----------------------------------------------------------------------------------------------


def transfer(
    backbone: nn.Module,
    train_set,
    test_set,
    protocols: Sequence[str] = ("knn", "linear"),
    k: int = 20,
    temperature: float = 0.07,
    linear_epochs: int = 100,
    batch_size: int = 256,
    seed: int = 0,
    device=None,
) -> dict:
    """k-NN and linear probe of a frozen backbone on another data set than the one it was trained on
    (its classes, its images): ``train_set`` labels the bank and trains the probe, ``test_set`` scores them.
    The backbone keeps its own input normalisation (the statistics of the data it was trained on).

    Returns ``{"knn_top1": ..., "linear_top1": ...}`` for the protocols asked for."""
    unknown = set(protocols) - {"knn", "linear"}
    if unknown:
        raise ValueError(f"transfer protocols are 'knn' and 'linear', not {sorted(unknown)}")
    train_feats, train_labels = extract_features(backbone, train_set, batch_size, device=device)
    test_feats, test_labels = extract_features(backbone, test_set, batch_size, device=device)
    keep = train_labels >= 0
    train_feats, train_labels = train_feats[keep], train_labels[keep]
    out = {}
    if "knn" in protocols:
        out["knn_top1"] = float(knn_accuracy(train_feats, train_labels, test_feats, test_labels, k, temperature))
    if "linear" in protocols:
        out["linear_top1"] = float(
            linear_probe(train_feats, train_labels, test_feats, test_labels, epochs=linear_epochs, seed=seed)["top1"]
        )
    return out


def threshold_mass(maps: torch.Tensor, mass: float = 0.6) -> torch.Tensor:
    """The smallest set of locations holding ``mass`` of each map's total: ...×h×w non-negative maps → bool
    masks of the same shape. Caron et al. 2021 (DINO) threshold the [CLS] attention of each head this way
    ("keep 60% of the mass") to turn it into an object mask."""
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    if (maps < 0).any():
        raise ValueError("threshold_mass needs non-negative maps (e.g. attention weights)")
    flat = maps.flatten(-2).float()
    flat = flat / flat.sum(-1, keepdim=True).clamp_min(1e-12)
    values, order = flat.sort(dim=-1, descending=True)
    before = values.cumsum(-1) - values  # the mass of the locations ranked above each one
    keep_sorted = before < mass  # keep a location while the mass above it is still short of `mass`
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return keep.view(maps.shape)


def _attention_grid(attention: torch.Tensor, object_masks: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int]]:
    """The attention maps' grid (h, w) and the masks' pixels (H, W), after checking that N×heads×h×w maps and
    N×H×W masks fit: the same N, and H, W multiples of h, w."""
    if attention.dim() != 4:
        raise ValueError(f"attention must be N×heads×h×w, got shape {tuple(attention.shape)}")
    if object_masks.dim() != 3 or object_masks.shape[0] != attention.shape[0]:
        raise ValueError(f"object_masks must be N×H×W for the same N, got {tuple(object_masks.shape)}")
    (h, w), (H, W) = attention.shape[-2:], object_masks.shape[-2:]
    if H % h or W % w:
        raise ValueError(f"the mask's {H}×{W} pixels are not a multiple of the {h}×{w} attention grid")
    return (h, w), (H, W)


def attention_mask_iou(attention: torch.Tensor, object_masks: torch.Tensor, mass: float = 0.6) -> dict:
    """How well thresholded attention maps cover the objects: the Jaccard index (IoU) between each head's
    map, thresholded to keep ``mass`` of its total (:func:`threshold_mass`) and enlarged to the pixels, and
    each image's object mask.

    attention: N×heads×h×w (e.g. the [CLS] token's attention over the patch grid of a ViT's last layer);
    object_masks: N×H×W bool (True on the objects), H and W multiples of h and w.
    Returns ``per_head`` (the mean IoU of each head over the images), ``mean`` (over heads and images),
    ``best`` (the head with the highest mean IoU, as a table of the best head reads it), ``best_head`` and
    ``per_image`` (N×heads IoUs). An image whose mask and thresholded map are both empty counts as 1."""
    (h, w), (H, W) = _attention_grid(attention, object_masks)
    keep = threshold_mass(attention, mass)
    keep = keep.repeat_interleave(H // h, dim=-2).repeat_interleave(W // w, dim=-1)  # N×heads×H×W
    truth = object_masks.bool()[:, None]
    inter = (keep & truth).flatten(2).sum(-1).float()
    union = (keep | truth).flatten(2).sum(-1).float()
    per_image = torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))
    per_head = per_image.mean(0)
    best_head = int(per_head.argmax())
    return dict(
        per_head=per_head,
        mean=float(per_head.mean()),
        best=float(per_head[best_head]),
        best_head=best_head,
        per_image=per_image,
    )


def attention_on_objects(attention: torch.Tensor, object_masks: torch.Tensor) -> dict:
    """The share of each attention map's mass on the objects' pixels, each cell's weight spread evenly over its
    pixels. attention: N×heads×h×w non-negative; object_masks: N×H×W bool, H and W multiples of h and w.

    Returns ``per_head`` (the mean share of each head over the images), ``mean`` (over heads and images),
    ``per_image`` (N×heads) and ``object_share``: the mean fraction of the image the objects cover, which is the
    share a uniform map gives them (a map that ignores where the objects are scores it too, on average)."""
    (h, w), (H, W) = _attention_grid(attention, object_masks)
    if (attention < 0).any():
        raise ValueError("attention_on_objects needs non-negative maps (e.g. attention weights)")
    a = attention.float()
    a = a / a.flatten(2).sum(-1).clamp_min(1e-12)[..., None, None]
    covered = F.avg_pool2d(object_masks.float()[:, None], (H // h, W // w))  # N×1×h×w: each cell's object fraction
    per_image = (a * covered).flatten(2).sum(-1)
    per_head = per_image.mean(0)
    return dict(
        per_head=per_head,
        mean=float(per_head.mean()),
        per_image=per_image,
        object_share=float(object_masks.float().mean()),
    )


def inside_outside_objects(values: torch.Tensor, object_masks: torch.Tensor, where: torch.Tensor | None = None) -> dict:
    """The mean of a per-pixel map (e.g. a reconstruction's squared error) on the objects' pixels and on the rest.

    values: N×H×W; object_masks: N×H×W bool; where: optional N×H×W bool, the pixels that count (e.g. the patches a
    masked autoencoder had to fill in; default every pixel).

    Returns ``inside`` and ``outside`` (the means over every counted pixel of all images), ``inside_per_image`` and
    ``outside_per_image`` (N, NaN for an image with no counted pixel there) and the counted pixels of each kind
    (``n_inside``, ``n_outside``)."""
    if values.dim() != 3 or values.shape != object_masks.shape:
        raise ValueError(
            f"values and object_masks must both be N×H×W of one shape, got {tuple(values.shape)} and "
            f"{tuple(object_masks.shape)}"
        )
    if object_masks.dtype != torch.bool:
        raise ValueError(f"object_masks must be bool, got {object_masks.dtype}")
    if where is None:
        where = torch.ones_like(object_masks)
    elif where.shape != values.shape or where.dtype != torch.bool:
        raise ValueError(f"where must be a bool N×H×W like values, got {where.dtype} {tuple(where.shape)}")
    v = values.float()
    out = {}
    for name, part in (("inside", where & object_masks), ("outside", where & ~object_masks)):
        count = part.flatten(1).sum(1)
        total = (v * part).flatten(1).sum(1)
        out[name] = float(total.sum() / count.sum()) if count.sum() > 0 else float("nan")
        out[f"{name}_per_image"] = torch.where(
            count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan"))
        )
        out[f"n_{name}"] = int(count.sum())
    return out
