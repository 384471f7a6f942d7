"""Evaluation protocols: how good is a representation?

A self-supervised method produces a **backbone**: an ``nn.Module`` that takes float images in
[0, 1] of shape N×3×H×W (it normalises them itself) and returns features N×D, with ``D =
backbone.out_dim``. Everything in this package takes such a backbone and knows nothing about the
method that trained it, so every chapter measures its method with the same rulers:

==================  ===========================================================================
protocol            what it measures
==================  ===========================================================================
k-NN                are images of one class close together? No training, no hyper-parameters
                    to tune beyond k and a temperature (Wu et al. 2018; Caron et al. 2021).
linear probe        is the class linearly decodable from frozen features? (softmax regression)
k-means NMI / ARI   do the features cluster by class without any label? (Caron et al. 2018)
t-SNE               a picture of the feature space (van der Maaten & Hinton 2008).
fine-tuning         how good a starting point is the backbone when a few labels are available?
robustness          how much does k-NN accuracy fall on corrupted test images?
                    (Gaussian noise, blur, contrast; after Hendrycks & Dietterich 2019)
bootstrap           how much would a top-1 move on another test set of the same size?
BN-refreshed floor  random weights with BatchNorm statistics measured on the training images:
                    the control any trained backbone must beat.
throughput          images per second and peak memory of a module.
==================  ===========================================================================

The protocols live by concern, and every name is importable from ``sslbook.evaluation``:
:mod:`~sslbook.evaluation.frozen` (features, k-NN, linear probe, k-means, t-SNE, :func:`evaluate`),
:mod:`~sslbook.evaluation.finetune`, :mod:`~sslbook.evaluation.robustness`,
:mod:`~sslbook.evaluation.stats` (rank correlation, Pareto front, bootstrap),
:mod:`~sslbook.evaluation.batchnorm` (the BN-refreshed random-init control) and :mod:`sslbook.cost` (parameters,
throughput, memory).

Conventions used throughout:

- data sets yield ``(image, label)`` with ``image`` a uint8 tensor 3×H×W and ``label`` an int;
  images become floats in [0, 1] (:func:`to_float`) only on the device;
- features are float32 N×D tensors on the CPU, labels int64 N tensors;
- **every accuracy is a fraction in [0, 1]**, never a percentage.
"""

from __future__ import annotations

from sslbook.augment import to_float
from sslbook.cost import count_parameters, measure_throughput
from sslbook.evaluation.batchnorm import batchnorm_layers, refresh_bn_statistics
from sslbook.evaluation.finetune import finetune, flip_and_crop, stratified_subset
from sslbook.evaluation.frozen import (
    PROTOCOLS,
    evaluate,
    extract_features,
    kmeans_scores,
    knn_accuracy,
    knn_classify,
    linear_probe,
    plot_tsne,
    tsne_embedding,
)
from sslbook.evaluation.robustness import CORRUPTIONS, SEVERITY_PARAMS, corrupt, robustness, robustness_rows
from sslbook.evaluation.stats import bootstrap, pareto_front, rank_correlation

__all__ = [
    "PROTOCOLS",
    "CORRUPTIONS",
    "batchnorm_layers",
    "bootstrap",
    "SEVERITY_PARAMS",
    "corrupt",
    "count_parameters",
    "evaluate",
    "extract_features",
    "finetune",
    "flip_and_crop",
    "kmeans_scores",
    "knn_accuracy",
    "knn_classify",
    "linear_probe",
    "measure_throughput",
    "pareto_front",
    "rank_correlation",
    "refresh_bn_statistics",
    "plot_tsne",
    "robustness",
    "robustness_rows",
    "stratified_subset",
    "to_float",
    "tsne_embedding",
]
