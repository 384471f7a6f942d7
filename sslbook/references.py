"""Published results: quoted, never measured here, each with its source.

The book keeps these apart from its own numbers. Every figure a chapter quotes is read from this module in
a code cell that prints it with its source (:func:`quote`, :func:`source`); nothing published is typed into
the chapters' text. Chapters 11 and 12 print the accuracy tables beside what this book's recipes measured;
a cell that compares the two says which is which.

    >>> from sslbook.references import ACCURACY, FIGURES, quote
    >>> ACCURACY["CIFAR-10 linear (solo-learn)"]["byol"]
    92.6
    >>> FIGURES["mae_imagenet_finetuned"]["value"]
    83.6
    >>> quote("mae_imagenet_finetuned").split(" (")[0]
    '83.6% — MAE ViT-B/16, ImageNet top-1 after fine-tuning'

Sources (the book's bibliography page lists them in full):

- **solo-learn**: da Costa, Fini, Nabi, Sebe & Ricci, "solo-learn: A Library of Self-supervised Methods
  for Visual Representation Learning", JMLR 2022, model zoo: CIFAR-10, ResNet-18 with the CIFAR stem,
  linear probe after 1000 epochs. Its "MoCo V2+" row stands beside ``moco_v2``.
- **lightly**: the lightly library (Susmelj et al. 2020, "Lightly"), its CIFAR-10 benchmark: ResNet-18,
  kNN (k = 200) after 800 epochs at batch 512 on one RTX A6000, 331–517 minutes per method. Its "MoCo"
  row stands beside ``moco_v2``.
- **papers**: each method's own paper (:data:`PAPER`), ImageNet linear probe, ResNet-50 unless noted
  (MoCo v2 800 epochs, SimSiam 100 epochs, MoCo v3 ViT-B, DINO ViT-S/16, MAE ViT-B, CPC v2's ResNet-161
  is not used: its ResNet-50 figure is).
"""

from __future__ import annotations

# Top-1 accuracy in %, by benchmark, then by sslbook method name.
ACCURACY: dict[str, dict[str, float]] = {
    "CIFAR-10 linear (solo-learn)": {
        "simclr": 90.7,
        "moco_v2": 92.9,
        "moco_v3": 93.1,
        "byol": 92.6,
        "simsiam": 90.5,
        "barlow_twins": 92.1,
        "dino": 89.5,
    },
    "CIFAR-10 kNN (lightly)": {
        "simclr": 87.9,
        "moco_v2": 89.9,
        "byol": 91.0,
        "simsiam": 90.4,
        "barlow_twins": 85.9,
        "dino": 84.8,
    },
    "ImageNet linear (papers)": {
        "moco_v1": 60.6,
        "moco_v2": 71.1,
        "simclr": 69.3,
        "pirl": 63.6,
        "cpc": 63.8,
        "byol": 74.3,
        "simsiam": 68.1,
        "barlow_twins": 73.2,
        "moco_v3": 76.7,
        "dino": 77.0,
        "mae": 68.0,
    },
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

# The paper behind each method's "ImageNet linear (papers)" entry: authors, year, title, venue.
PAPER: dict[str, str] = {
    "moco_v1": 'He, Fan, Wu, Xie & Girshick 2020, "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR',
    "moco_v2": 'Chen, Fan, Girshick & He 2020, "Improved Baselines with Momentum Contrastive Learning", arXiv:2003.04297',
    "simclr": 'Chen, Kornblith, Norouzi & Hinton 2020, "A Simple Framework for Contrastive Learning of Visual Representations", ICML',
    "pirl": 'Misra & van der Maaten 2020, "Self-Supervised Learning of Pretext-Invariant Representations", CVPR',
    "cpc": 'Hénaff et al. 2020, "Data-Efficient Image Recognition with Contrastive Predictive Coding", ICML',
    "byol": 'Grill et al. 2020, "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", NeurIPS',
    "simsiam": 'Chen & He 2021, "Exploring Simple Siamese Representation Learning", CVPR',
    "barlow_twins": 'Zbontar, Jing, Misra, LeCun & Deny 2021, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction", ICML',
    "moco_v3": 'Chen, Xie & He 2021, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV',
    "dino": 'Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers", ICCV',
    "mae": 'He, Chen, Xie, Li, Dollár & Girshick 2022, "Masked Autoencoders Are Scalable Vision Learners", CVPR',
}

# Where each benchmark of ACCURACY comes from.
SOURCE: dict[str, str] = {
    "CIFAR-10 linear (solo-learn)": 'da Costa, Fini, Nabi, Sebe & Ricci 2022, "solo-learn: A Library of Self-supervised '
    'Methods for Visual Representation Learning", JMLR (model zoo)',
    "CIFAR-10 kNN (lightly)": 'Susmelj et al. 2020, "Lightly", the lightly library\'s CIFAR-10 benchmark (documentation)',
    "ImageNet linear (papers)": "each method's own paper (sslbook.references.PAPER)",
}

_GIDARIS = 'Gidaris, Singh & Komodakis 2018, "Unsupervised Representation Learning by Predicting Image Rotations", ICLR'
_MAE = 'He et al. 2022, "Masked Autoencoders Are Scalable Vision Learners", CVPR'
_DINO = 'Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers", ICCV'
_BT = 'Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy Reduction", ICML'
_MIXMATCH = 'Berthelot et al. 2019, "MixMatch: A Holistic Approach to Semi-Supervised Learning", NeurIPS'
_S4L = 'Zhai, Oliver, Kolesnikov & Beyer 2019, "S4L: Self-Supervised Semi-Supervised Learning", ICCV'
_BIGBIGAN = 'Donahue & Simonyan 2019, "Large Scale Adversarial Representation Learning", NeurIPS'
_BYOL = 'Grill et al. 2020, "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", NeurIPS'

# Other published figures the chapters quote, by key: value, unit, what it measures, where it comes from.
FIGURES: dict[str, dict] = {
    # Chapter 2. PASCAL VOC 2007 with an AlexNet pre-trained on ImageNet, then fine-tuned (mAP), as tabulated by
    # Gidaris et al. (their Table 7; the context-prediction entry is Krähenbühl et al.'s re-evaluation).
    "voc07_cls_relative_position": dict(
        value=55.3,
        unit=" mAP",
        what="context prediction (Doersch et al.), VOC 2007 classification, as re-evaluated by Krähenbühl et al. 2016",
        source=_GIDARIS,
    ),
    "voc07_cls_jigsaw": dict(
        value=67.6, unit=" mAP", what="jigsaw (Noroozi & Favaro), VOC 2007 classification", source=_GIDARIS
    ),
    "voc07_cls_rotnet": dict(value=73.0, unit=" mAP", what="RotNet, VOC 2007 classification", source=_GIDARIS),
    "voc07_cls_supervised": dict(
        value=79.9, unit=" mAP", what="ImageNet-supervised AlexNet, VOC 2007 classification", source=_GIDARIS
    ),
    "voc07_det_rotnet": dict(value=54.4, unit=" mAP", what="RotNet, VOC 2007 detection", source=_GIDARIS),
    "voc07_det_supervised": dict(
        value=56.8, unit=" mAP", what="ImageNet-supervised AlexNet, VOC 2007 detection", source=_GIDARIS
    ),
    "rotnet_cifar10_frozen": dict(
        value=89.06,
        unit="%",
        what="RotNet's network-in-network on CIFAR-10, non-linear classifier on frozen conv-block-2 features",
        source=_GIDARIS,
    ),
    "rotnet_cifar10_supervised": dict(
        value=92.80, unit="%", what="the same network-in-network trained with every CIFAR-10 label", source=_GIDARIS
    ),
    # Chapter 4 (also chapter 11). ImageNet-1k, ViT-B/16 (the linear figure is ACCURACY's "ImageNet linear (papers)").
    "mae_imagenet_finetuned": dict(
        value=83.6, unit="%", what="MAE ViT-B/16, ImageNet top-1 after fine-tuning", source=_MAE
    ),
    "mae_mask_token_encoder_flops": dict(
        value=3.3,
        unit="×",
        what="MAE's encoder FLOPs with mask tokens in the encoder against without (ViT-L, Table 1c)",
        source=_MAE,
    ),
    # Chapter 9. ImageNet-1k, ViT-S/16 (the linear figure is ACCURACY's "ImageNet linear (papers)").
    "dino_imagenet_knn": dict(
        value=74.5, unit="%", what="DINO ViT-S/16, ImageNet top-1 of a weighted kNN (k = 20)", source=_DINO
    ),
    # Chapter 8: the paper's loss weight and projector width (hyper-parameters, quoted beside the book's).
    "barlow_twins_lambda": dict(
        value=5e-3,
        unit="",
        what="Barlow Twins' weight λ of the off-diagonal sum, for its projector of width 8192",
        source=_BT,
    ),
    "barlow_twins_width": dict(
        value=8192, unit="", what="Barlow Twins' projector width D in its main results", source=_BT
    ),
    # Chapter 10: semi-supervised learning, and what self-supervision gives it.
    "mixmatch_cifar10_250_error": dict(
        value=11.08,
        unit="%",
        what="MixMatch, CIFAR-10 test error with 250 labels (WideResNet-28-2, mean of 5 splits)",
        source=_MIXMATCH,
    ),
    "mixmatch_cifar10_4000_error": dict(
        value=6.24,
        unit="%",
        what="MixMatch, CIFAR-10 test error with 4,000 labels (WideResNet-28-2, mean of 5 splits)",
        source=_MIXMATCH,
    ),
    "s4l_rotation_imagenet_10pct_top5": dict(
        value=83.82,
        unit="%",
        what="S4L-Rotation, ILSVRC-2012 top-5 accuracy with 10% of the labels",
        source=_S4L,
    ),
    "bigbigan_imagenet_linear_resnet50": dict(
        value=55.4,
        unit="%",
        what="BigBiGAN's ResNet-50 encoder, ImageNet top-1 of a linear classifier on its frozen features",
        source=_BIGBIGAN,
    ),
    "bigbigan_imagenet_linear_revnet50x4": dict(
        value=61.3,
        unit="%",
        what="BigBiGAN's RevNet-50 ×4 encoder (BN + CReLU features), ImageNet top-1 of a linear classifier",
        source=_BIGBIGAN,
    ),
    "cpc_v2_imagenet_1pct_top5": dict(
        value=77.9,
        unit="%",
        what="CPC v2 (ResNet-161) fine-tuned with 1% of the ImageNet labels, top-5 (Hénaff et al. 2020, as "
        "tabulated by Grill et al. 2020, Table 2)",
        source=_BYOL,
    ),
    "supervised_imagenet_1pct_top5": dict(
        value=48.4,
        unit="%",
        what="a ResNet-50 trained with 1% of the ImageNet labels alone, top-5 (as tabulated by Grill et al. 2020, Table 2)",
        source=_BYOL,
    ),
}

# Published training costs, quoted as their sources give them.
COST: list[dict] = [
    dict(
        what="lightly's CIFAR-10 benchmark, each method 800 epochs (ResNet-18, batch 512)",
        hardware="one RTX A6000",
        minutes=(331, 517),
        source="lightly benchmark",
    ),
    dict(
        what="a public SimCLR ResNet-18 run reaching 90% CIFAR-10 kNN top-1 in 500 epochs",
        hardware="one A100",
        minutes=(100, 100),
        source="an unattributed public report (a figure to beat, not a citable result: not verified here)",
    ),
]


def quote(key: str) -> str:
    """One published figure of :data:`FIGURES` as a chapter prints it: value, what it measures, source."""
    if key not in FIGURES:
        raise KeyError(f"no published figure {key!r}; known: {', '.join(sorted(FIGURES))}")
    f = FIGURES[key]
    value = f"{f['value']:g}" if isinstance(f["value"], float) and f["value"] < 0.1 else f"{f['value']}"
    return f"{value}{f['unit']} — {f['what']} ({f['source']})"


def source(benchmark: str, method: str | None = None) -> str:
    """Where an :data:`ACCURACY` entry comes from (for the per-paper benchmark, give the method)."""
    if benchmark not in SOURCE:
        raise KeyError(f"no benchmark {benchmark!r}; known: {', '.join(SOURCE)}")
    if benchmark == "ImageNet linear (papers)" and method is not None:
        return PAPER[method]
    return SOURCE[benchmark]
