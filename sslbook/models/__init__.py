"""Backbones and heads. ``build_backbone(name, info)`` gives a network from images in [0, 1] to features."""

from sslbook.models.backbones import BACKBONES, build_backbone, readout
from sslbook.models.heads import MLP, head
from sslbook.models.normalize import batchnorm_layers

__all__ = ["BACKBONES", "MLP", "batchnorm_layers", "build_backbone", "head", "readout"]
