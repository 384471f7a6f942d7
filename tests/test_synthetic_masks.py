"""The shapes data set's per-pixel class masks and boxes: the images stay those of before, and the masks
and boxes agree with the drawn pixels."""

import hashlib

import pytest
import torch

from sslbook.data import load_dataset
from sslbook.data.base import SegmentedImageDataset, TensorImageDataset
from sslbook.data.synthetic import CLASSES, MASK_CLASSES, generate, load_shapes

# sha256 of generate(n, seed, size)'s images, computed with the generator before masks existed
# (commit a28d2ad): cached data sets and the runs trained on them must stay valid.
IMAGE_SHA256 = {
    (64, 0, 32): "9171b9e569945344bd16fbe009c75d9ab9e4231de24b8678b70e7f9aa2f4f762",
    (40, 7919, 32): "a67f143dd3b09bfafc7a7f893a91c6080473e9ef4faf330dc19928aa9ca5344e",
    (10, 0, 64): "814f4c46d9467f52e19327f7e0231804016d939263ac0840dfa881c6dcca922e",
}


def _sha(x: torch.Tensor) -> str:
    return hashlib.sha256(x.numpy().tobytes()).hexdigest()


@pytest.mark.parametrize("key", sorted(IMAGE_SHA256))
def test_images_unchanged_with_and_without_masks(key):
    n, seed, size = key
    plain, labels = generate(n, seed, size)
    assert _sha(plain) == IMAGE_SHA256[key]
    images, labels2, masks, boxes = generate(n, seed, size, masks=True)
    assert torch.equal(images, plain) and torch.equal(labels, labels2)
    assert masks.shape == (n, size, size) and masks.dtype == torch.uint8 and boxes.shape == (n, 4)


def test_masks_match_the_drawn_pixels():
    """Pixels marked as an object differ from the same scene rendered without its objects (the same
    random numbers are drawn, sensor noise included); background pixels are, but for anti-aliased
    edges and a lamp's glow, exactly the empty scene."""
    images, labels, masks, _ = generate(120, 5, masks=True)
    empty, _, masks2, _ = generate(120, 5, masks=True, _draw_objects=False)
    assert torch.equal(masks, masks2)
    diff = (images.int() - empty.int()).abs().sum(dim=1)  # N×H×W
    obj = masks > 0
    assert (diff[obj] > 6).float().mean() > 0.99
    assert (diff[~obj] == 0).float().mean() > 0.9
    assert int(masks.max()) <= len(CLASSES) and MASK_CLASSES[0] == "background" and MASK_CLASSES[1:] == CLASSES


def test_labelled_and_clutter_objects_are_labelled_and_boxes_are_the_mask_extent():
    images, labels, masks, boxes = generate(150, 2, masks=True)
    with_clutter = 0
    for m, y, (x0, y0, x1, y1) in zip(masks, labels, boxes.tolist()):
        own = m == y + 1
        assert own.any()  # the labelled object is drawn last: always visible
        ys, xs = own.nonzero(as_tuple=True)
        assert (x0, y0, x1, y1) == (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        assert not own[:, :x0].any() and not own[:, x1:].any() and not own[:y0].any() and not own[y1:].any()
        with_clutter += bool(set(m.unique().tolist()) - {0, int(y) + 1})
    # a clutter object of another class in a third of the scenes (some hidden behind the labelled one)
    assert 0.15 < with_clutter / len(labels) < 0.4


def test_load_shapes_with_masks_caches_and_keeps_the_images(tmp_path):
    plain = load_shapes("test", tmp_path, n_train=30, n_test=20)
    seg = load_dataset("shapes", "test", root=tmp_path, n_train=30, n_test=20, masks=True)
    assert type(plain) is TensorImageDataset and isinstance(seg, SegmentedImageDataset)
    assert torch.equal(plain.images, seg.images) and torch.equal(plain.labels, seg.labels)
    _, _, masks, boxes = generate(20, 7919, 32, masks=True)  # the test split's seed
    assert torch.equal(seg.masks, masks) and torch.equal(seg.boxes, boxes)
    assert len(list(tmp_path.rglob("test-masks.pt"))) == 1
    again = load_shapes("test", tmp_path, n_train=30, n_test=20, masks=True)
    assert torch.equal(again.masks, seg.masks)
    sub = seg.subset(torch.tensor([3, 1]))
    assert isinstance(sub, SegmentedImageDataset) and torch.equal(sub.masks, seg.masks[[3, 1]])
    assert torch.equal(sub.object_masks(), sub.masks.long() == (sub.labels + 1).view(-1, 1, 1))
    assert seg.mask_classes == MASK_CLASSES and seg[0][1] == int(seg.labels[0])
