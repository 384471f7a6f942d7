"""MoCo v2 (Chen, Fan, Girshick & He 2020, "Improved Baselines with Momentum Contrastive Learning").

MoCo v1 plus three of SimCLR's ingredients, nothing else: "using an MLP projection head and more data
augmentation" (blur) and a cosine learning-rate schedule (the book's trainer always uses one). The
queue, the momentum encoder and shuffled BN are those of v1; τ = 0.2.
"""

from __future__ import annotations

from sslbook.methods.moco_v1 import MoCoV1


class MoCoV2(MoCoV1):
    name = "moco_v2"

    def __init__(
        self,
        backbone,
        info,
        image_size,
        queue_size=65536,
        momentum=0.999,
        temperature=0.2,
        dim=128,
        mlp_hidden=2048,
        bn_splits=8,
        crop_scale=(0.2, 1.0),
        jitter=(0.4, 0.4, 0.4, 0.1),
        jitter_p=0.8,
        gray_p=0.2,
        blur_p=0.5,
    ):
        super().__init__(
            backbone,
            info,
            image_size,
            queue_size=queue_size,
            momentum=momentum,
            temperature=temperature,
            dim=dim,
            mlp_hidden=mlp_hidden,
            bn_splits=bn_splits,
            crop_scale=crop_scale,
            jitter=jitter,
            jitter_p=jitter_p,
            gray_p=gray_p,
            blur_p=blur_p,
        )
