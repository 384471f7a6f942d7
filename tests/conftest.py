import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory):
    """A data root holding a small generated shapes set (shared by the tests of one session)."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def small(shapes_root):
    """Overrides for a fast training run on a small shapes set."""
    return dict(
        preset="tiny",
        data="shapes",
        backbone="convnet_small",
        batch_size=64,
        epochs=2,
        data_kwargs=dict(n_train=256, n_test=128, root=str(shapes_root)),
        eval_protocols=("knn",),
        progress=False,
        num_workers=0,
    )
