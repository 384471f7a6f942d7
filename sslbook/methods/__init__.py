"""The method registry: ``name -> "module:Class"``. Adding a method is one file and one line here."""

from __future__ import annotations

import importlib

from sslbook.methods.base import Method

REGISTRY: dict[str, str | type[Method]] = {
    "supervised": "sslbook.methods.supervised:Supervised",
    "byol": "sslbook.methods.byol:BYOL",
    "simsiam": "sslbook.methods.simsiam:SimSiam",
    "barlow_twins": "sslbook.methods.barlow_twins:BarlowTwins",
    "mae": "sslbook.methods.mae:MAE",
    "rotnet": "sslbook.methods.rotnet:RotNet",
    "relative_position": "sslbook.methods.relative_position:RelativePosition",
    "jigsaw": "sslbook.methods.jigsaw:Jigsaw",
    "context_encoder": "sslbook.methods.context_encoder:ContextEncoder",
    "split_brain": "sslbook.methods.split_brain:SplitBrain",
    "video_colorization": "sslbook.methods.video_colorization:VideoColorization",
    "simclr": "sslbook.methods.simclr:SimCLR",
    "cpc": "sslbook.methods.cpc:CPC",
    "instdisc": "sslbook.methods.instdisc:InstDisc",
    "pirl": "sslbook.methods.pirl:PIRL",
    "moco_v1": "sslbook.methods.moco_v1:MoCoV1",
    "moco_v2": "sslbook.methods.moco_v2:MoCoV2",
    "moco_v3": "sslbook.methods.moco_v3:MoCoV3",
    "dino": "sslbook.methods.dino:DINO",
    "adco": "sslbook.methods.adco:AdCo",
    "aet": "sslbook.methods.aet:AET",
    "bigbigan": "sslbook.methods.bigbigan:BigBiGAN",
    "s4l_rotation": "sslbook.methods.s4l_rotation:S4LRotation",
    "s4l_exemplar": "sslbook.methods.s4l_exemplar:S4LExemplar",
    "mixmatch": "sslbook.methods.mixmatch:MixMatch",
}


def list_methods() -> list[str]:
    return sorted(REGISTRY)


def get_method(name: str) -> type[Method]:
    if name not in REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {', '.join(list_methods())}")
    entry = REGISTRY[name]
    if not isinstance(entry, str):
        return entry
    module, cls = entry.split(":")
    return getattr(importlib.import_module(module), cls)


def register(name: str, cls: type[Method]) -> None:
    """Add a method defined elsewhere (a notebook, an exercise, a test) so the trainer can run it by name."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"{cls!r} is not a subclass of sslbook.methods.Method")
    REGISTRY[name] = cls


__all__ = ["Method", "REGISTRY", "get_method", "list_methods", "register"]
