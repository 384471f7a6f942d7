"""Published results: quoted, never measured here, each with its source.

The book keeps these apart from its own numbers. Chapters 10 and 11 print them beside what this book's
recipes measured; a cell that compares the two says which is which.

    >>> from sslbook.references import ACCURACY
    >>> ACCURACY["CIFAR-10 linear (solo-learn)"]["byol"]
    92.6

Sources (collected in the book's outline, ``ARC.md``):

- **solo-learn**: da Costa et al., "solo-learn: a library of self-supervised methods for visual
  representation learning", JMLR 2022, model zoo: CIFAR-10, ResNet-18 with the CIFAR stem, linear probe
  after 1000 epochs. Its "MoCo V2+" row stands beside ``moco_v2``.
- **lightly**: the lightly library's CIFAR-10 benchmark: ResNet-18, kNN (k = 200) after 800 epochs at
  batch 512 on one RTX A6000, 331–517 minutes per method. Its "MoCo" row stands beside ``moco_v2``.
- **papers**: each method's own paper, ImageNet linear probe, ResNet-50 unless noted (MoCo v2 800
  epochs, SimSiam 100 epochs, MoCo v3 ViT-B, DINO ViT-S/16, MAE ViT-B).
"""
from __future__ import annotations

# Top-1 accuracy in %, by benchmark, then by sslbook method name.
ACCURACY: dict[str, dict[str, float]] = {
    "CIFAR-10 linear (solo-learn)": {"simclr": 90.7, "moco_v2": 92.9, "moco_v3": 93.1, "byol": 92.6,
                                     "simsiam": 90.5, "barlow_twins": 92.1, "dino": 89.5},
    "CIFAR-10 kNN (lightly)": {"simclr": 87.9, "moco_v2": 89.9, "byol": 91.0, "simsiam": 90.4,
                               "barlow_twins": 85.9, "dino": 84.8},
    "ImageNet linear (papers)": {"moco_v1": 60.6, "moco_v2": 71.1, "simclr": 69.3, "pirl": 63.6, "cpc": 63.8,
                                 "byol": 74.3, "simsiam": 68.1, "barlow_twins": 73.2, "moco_v3": 76.7,
                                 "dino": 77.0, "mae": 68.0},
}

# Which of this book's protocols each benchmark corresponds to.
PROTOCOL: dict[str, str] = {
    "CIFAR-10 linear (solo-learn)": "linear",
    "CIFAR-10 kNN (lightly)": "knn",
    "ImageNet linear (papers)": "linear",
}

# The data set and preset on which this book's own full-scale run would be comparable (None: the book's
# full recipes do not train on that data set for every method; ImageNet runs are left to the reader).
DATASET: dict[str, str] = {
    "CIFAR-10 linear (solo-learn)": "cifar10",
    "CIFAR-10 kNN (lightly)": "cifar10",
    "ImageNet linear (papers)": "imagenet",
}

# Other published figures the book quotes.
MAE_IMAGENET_FINETUNED = 83.6  # He et al. 2021, ViT-B, fine-tuned top-1 (%)
DINO_IMAGENET_KNN = 74.5  # Caron et al. 2021, ViT-S/16, kNN top-1 (%)

# Published training costs, quoted as their sources give them.
COST: list[dict] = [
    dict(what="lightly's CIFAR-10 benchmark, each method 800 epochs (ResNet-18, batch 512)",
         hardware="one RTX A6000", minutes=(331, 517), source="lightly benchmark"),
    dict(what="a public SimCLR ResNet-18 run reaching 90% CIFAR-10 kNN top-1 in 500 epochs",
         hardware="one A100", minutes=(100, 100), source="ARC.md"),
]
