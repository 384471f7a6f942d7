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


__all__ = ["__version__", "current_preset", "get_preset", "list_methods", "run_dir", "train"]
