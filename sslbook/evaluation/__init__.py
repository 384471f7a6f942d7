"""Evaluation protocols (see :mod:`sslbook.evaluation.frozen`): a package, so that they can be split by concern."""
from sslbook.evaluation.frozen import *  # noqa: F401,F403
from sslbook.evaluation.frozen import PROTOCOLS, __all__  # noqa: F401
