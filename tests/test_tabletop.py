"""The second generated domain, tabletop: deterministic, other classes and statistics, masks and boxes."""

import torch

from sslbook.data import load_dataset
from sslbook.data.base import SegmentedImageDataset
from sslbook.data.tabletop import CLASSES, generate


def test_deterministic_balanced_and_masks_match_the_images():
    a, la = generate(100, 3)
    b, lb, masks, boxes = generate(100, 3, masks=True)
    assert torch.equal(a, b) and torch.equal(la, lb) and not torch.equal(a, generate(100, 4)[0])
    assert torch.bincount(la).tolist() == [20] * len(CLASSES) and a.dtype == torch.uint8
    for m, y, (x0, y0, x1, y1) in zip(masks, la, boxes.tolist()):
        ys, xs = (m == y + 1).nonzero(as_tuple=True)
        assert len(ys) and (x0, y0, x1, y1) == (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def test_registered_and_unlike_shapes(tmp_path):
    tt = load_dataset("tabletop", "test", root=tmp_path, n_train=50, n_test=30, masks=True)
    assert isinstance(tt, SegmentedImageDataset) and tt.info.classes == CLASSES and len(tt) == 30
    shapes = load_dataset("shapes", "train", root=tmp_path, n_train=50, n_test=30)
    top_rows = lambda d: d.images.float()[:, :, :8].mean() - d.images.float()[:, :, -8:].mean()  # noqa: E731
    assert abs(top_rows(tt)) < 10 < top_rows(shapes)  # no sky above, no light from above
