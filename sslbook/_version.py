"""The package's version: one place, read by ``sslbook.__version__``, the checkpoints the trainer writes and
pyproject.toml (``[tool.setuptools.dynamic]``)."""

__version__ = "0.1.0"
