"""sslbook: self-supervised visual representation learning, written from scratch in PyTorch.

The chapters of the book import this package; the package never imports the book.

    >>> import sslbook
    >>> sslbook.list_methods()          # every method trainable by `python -m sslbook train NAME`
    >>> result = sslbook.train("supervised", epochs=2)
"""

from sslbook._version import __version__
from sslbook.config import current_preset, get_preset, run_dir
from sslbook.methods import list_methods


def train(method: str, **overrides):
    """Train ``method`` with the current preset; see :func:`sslbook.trainer.train`."""
    from sslbook.trainer import train as _train

    return _train(method, **overrides)


def compare(methods, preset: str | None = None, seeds: int = 3, progress: bool = True, **overrides) -> list[dict]:
    """Each method over several seeds against its random-init floors; see :func:`sslbook.comparison.compare`."""
    from sslbook.comparison import compare as _compare

    return _compare(methods, preset, seeds=seeds, progress=progress, **overrides)


def refresh_bn_statistics(backbone, dataset, **kwargs):
    """BatchNorm statistics of a backbone measured on a data set; see :func:`sslbook.evaluation.refresh_bn_statistics`."""
    from sslbook.evaluation.batchnorm import refresh_bn_statistics as _refresh

    return _refresh(backbone, dataset, **kwargs)


def bootstrap(values, **kwargs) -> dict:
    """The test set's noise on a mean score; see :func:`sslbook.evaluation.bootstrap`."""
    from sslbook.evaluation.stats import bootstrap as _bootstrap

    return _bootstrap(values, **kwargs)


__all__ = [
    "__version__",
    "bootstrap",
    "compare",
    "current_preset",
    "get_preset",
    "list_methods",
    "refresh_bn_statistics",
    "run_dir",
    "train",
]
