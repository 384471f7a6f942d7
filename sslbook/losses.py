"""Losses: plain functions of tensors (this module imports only torch).

Each function's docstring gives the formula and the shapes; the chapters build each loss cell by
cell and then check that these functions compute the same numbers. Inputs are raw embeddings: the
functions normalise them themselves.

Under ``torchrun`` the contrastive losses take their negatives from every process: embeddings are
gathered with :func:`all_gather_with_grad`, which passes gradients back to the process that made them
(SimCLR needs this; MoCo's keys carry no gradient). On one process nothing is gathered.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without torch.distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward gives each process the gradient of its own rows, summed over processes
    (every process's loss reads every process's rows)."""

    @staticmethod
    def forward(ctx, x):
        out = [torch.empty_like(x) for _ in range(torch.distributed.get_world_size())]
        torch.distributed.all_gather(out, x.contiguous())
        ctx.rows = x.shape[0]
        return torch.cat(out, dim=0)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad)
        start = torch.distributed.get_rank() * ctx.rows
        return grad[start : start + ctx.rows]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (n×…) from every process in rank order, (world·n)×…, with gradients flowing back to
    the process that made each row (SimCLR's negatives); ``x`` itself on one process."""
    _, world = _world()
    if world == 1:
        return x
    return _GatherWithGrad.apply(x)


def _gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (n×D) from every process in rank order: (world·n)×D; gradients flow back if x has one."""
    _, world = _world()
    if world == 1:
        return x
    if x.requires_grad:
        return all_gather_with_grad(x)
    out = [torch.empty_like(x) for _ in range(world)]
    torch.distributed.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's normalised-temperature cross-entropy (Chen et al. 2020, eq. 1).

    z1, z2: N×D embeddings of two views of the same N images (row i of z1 and row i of z2 are a
    positive pair). Over the 2N views, the anchor i has one positive (its twin) and 2N−2 negatives::

        ℓ(i, j) = −log  exp(sim(z_i, z_j)/τ) / Σ_{k≠i} exp(sim(z_i, z_k)/τ),   sim = cosine

    averaged over all 2N anchors. Under torchrun the 2N grows to every process's views.
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(
            f"nt_xent needs two N×D tensors of the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"nt_xent needs a temperature > 0 (it divides the similarities), got {temperature}")
    n = z1.shape[0]
    rank, _ = _world()
    z1, z2 = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
    a1, a2 = _gather(z1), _gather(z2)  # M×D each, M = world·N
    m = a1.shape[0]
    candidates = torch.cat([a1, a2], dim=0)  # 2M×D: every view of every process
    anchors = torch.cat([z1, z2], dim=0)  # 2N×D: this process's views
    logits = anchors @ candidates.T / temperature  # 2N×2M
    local = torch.arange(n, device=z1.device) + rank * n  # this process's rows among the M
    self_idx = torch.cat([local, local + m])  # where each anchor sits among the candidates
    pos_idx = torch.cat([local + m, local])  # where its twin sits
    rows = torch.arange(2 * n, device=z1.device)
    logits[rows, self_idx] = float("-inf")  # an anchor is not its own negative
    return F.cross_entropy(logits, pos_idx)


def info_nce(
    q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor | None = None, temperature: float = 0.07
) -> torch.Tensor:
    """InfoNCE in MoCo's form (Oord et al. 2018; He et al. 2020, eq. 1).

    q: N×D queries; k: N×D keys, k[i] the positive of q[i]; negatives: K×D (a memory bank or queue)
    or None, in which case the other keys of the batch (of every process, under torchrun) are the
    negatives, as in MoCo v3. An (1+K)-way (or N-way) softmax classification of the positive::

        L = −log  exp(q·k₊/τ) / (exp(q·k₊/τ) + Σ_{k₋} exp(q·k₋/τ))

    averaged over the N queries.
    """
    if q.dim() != 2 or q.shape != k.shape:
        raise ValueError(f"info_nce needs q and k of the same N×D shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    if not temperature > 0:
        raise ValueError(f"info_nce needs a temperature > 0 (it divides the similarities), got {temperature}")
    q, k = F.normalize(q.float(), dim=1), F.normalize(k.float(), dim=1)
    if negatives is not None:
        if negatives.dim() != 2 or negatives.shape[1] != q.shape[1]:
            raise ValueError(f"negatives must be K×{q.shape[1]}, got {tuple(negatives.shape)}")
        neg = F.normalize(negatives.float(), dim=1)
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(1)  # N×1
        l_neg = torch.einsum("nc,kc->nk", q, neg)  # N×K
        logits = torch.cat([l_pos, l_neg], dim=1) / temperature
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)  # the positive is column 0
        return F.cross_entropy(logits, target)
    rank, _ = _world()
    keys = _gather(k)  # M×D
    logits = q @ keys.T / temperature  # N×M
    target = torch.arange(q.shape[0], device=q.device) + rank * q.shape[0]
    return F.cross_entropy(logits, target)


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's loss (Chen & He 2021, eq. 1): D(p, z) = −cos(p, stop-grad(z)), averaged over the batch.

    p: N×D predictions; z: N×D targets (no gradient flows into z). BYOL's normalised MSE
    ‖p̄ − z̄‖² = 2 − 2·cos(p, z) is ``2 + 2 * negative_cosine(p, z)``.
    """
    if p.shape != z.shape or p.dim() != 2:
        raise ValueError(
            f"negative_cosine needs two N×D tensors of the same shape, got {tuple(p.shape)} and {tuple(z.shape)}"
        )
    return -F.cosine_similarity(p.float(), z.detach().float(), dim=1).mean()


def _standardise(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Each column to zero mean and unit variance over the batch (BatchNorm without affine, biased variance)."""
    return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)


def barlow_twins(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3, reduction: str = "sum") -> torch.Tensor:
    """Barlow Twins (Zbontar et al. 2021, eq. 1) on N×D embeddings of two views.

    Each dimension is standardised over the batch, C = z̃1ᵀ z̃2 / N is the D×D cross-correlation and::

        L = Σ_i (1 − C_ii)²  +  λ Σ_i Σ_{j≠i} C_ij²          (reduction="sum", the paper)
        L = Σ_i (1 − C_ii)²  +  Σ_i  mean_{j≠i} C_ij²         (reduction="mean": sums replaced by means,
                                                               i.e. λ = 1/(D−1), which shrinks as D grows)

    The mean variant follows a blog post (Zhihu, "最简单的self-supervised方法" ["the simplest self-supervised
    method"], 2021) that reads the paper's λ as a stand-in for 1/(D − 1). It equals the sum at λ = 5e-3 only
    near D ≈ 200; at the paper's D = 8192 it weighs the off-diagonal sum about 40× less (λ ≈ 1.2e-4).

    Under torchrun the batch statistics and C cover every process's embeddings (gathered with gradients).
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(
            f"barlow_twins needs two N×D tensors of the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
    z1, z2 = _gather(z1.float()), _gather(z2.float())
    n, d = z1.shape
    if n < 2:
        raise ValueError("barlow_twins needs at least 2 samples to standardise over the batch")
    c = _standardise(z1).T @ _standardise(z2) / n  # D×D
    on_diag = (1 - torch.diagonal(c)).pow(2).sum()
    off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    if reduction == "mean":
        return on_diag + off_diag / max(d - 1, 1)
    return on_diag + lambd * off_diag


def dino(
    student_out: list[torch.Tensor],
    teacher_out: list[torch.Tensor],
    center: torch.Tensor,
    student_temp: float = 0.1,
    teacher_temp: float = 0.04,
) -> torch.Tensor:
    """DINO's self-distillation loss (Caron et al. 2021, Algorithm 1).

    student_out: per-view logits, each N×K (the global views first, then the local ones);
    teacher_out: per-view logits of the global views, each N×K (teacher view v is the same crop as
    student view v); center: K (or 1×K). The teacher's targets are centred and sharpened,
    P_t = softmax((t − c)/τ_t), with no gradient; the student's P_s = softmax(s/τ_s). The loss is the
    cross-entropy −Σ_k P_t log P_s over every (teacher view, student view) pair of different views,
    averaged over the pairs and the batch.
    """
    if student_temp <= 0 or teacher_temp <= 0:
        raise ValueError(f"temperatures must be > 0, got student_temp={student_temp}, teacher_temp={teacher_temp}")
    if len(student_out) < len(teacher_out) or not teacher_out:
        raise ValueError("dino needs the teacher's global views to be the first views of the student's list")
    targets = [F.softmax((t.float() - center.float()) / teacher_temp, dim=-1).detach() for t in teacher_out]
    return dino_cross_entropy(student_out, targets, student_temp)


def dino_cross_entropy(
    student_out: list[torch.Tensor], targets: list[torch.Tensor], student_temp: float = 0.1
) -> torch.Tensor:
    """DINO's loss from ready-made teacher targets (probabilities): the mean over the pairs (teacher
    view iq, student view v ≠ iq) of −Σ_k P_t[iq] log softmax(s_v/τ_s), averaged over the batch.

    student_out: per-view logits N×K (global views first); targets: per-global-view probabilities N×K
    (rows sum to 1), e.g. centred-and-sharpened softmaxes (:func:`dino`) or Sinkhorn–Knopp
    assignments (:func:`sinkhorn_knopp`, DINOv2)."""
    if student_temp <= 0:
        raise ValueError(f"the student temperature must be > 0, got {student_temp}")
    if len(student_out) < len(targets) or not targets:
        raise ValueError("dino needs the teacher's global views to be the first views of the student's list")
    targets = [q.float().detach() for q in targets]
    log_probs = [F.log_softmax(s.float() / student_temp, dim=-1) for s in student_out]
    total, pairs = 0.0, 0
    for iq, q in enumerate(targets):
        for v, logp in enumerate(log_probs):
            if v == iq:
                continue  # a view does not predict itself
            total = total + torch.sum(-q * logp, dim=-1).mean()
            pairs += 1
    if pairs == 0:
        raise ValueError("dino needs at least two views")
    return total / pairs


@torch.no_grad()
def sinkhorn_knopp(logits: torch.Tensor, temperature: float = 0.07, iters: int = 3) -> torch.Tensor:
    """Sinkhorn–Knopp normalisation of teacher logits (SwAV; DINOv2's "centering" of the teacher).

    logits: B×K of this process. Q = exp(logits/τ) is rescaled alternately so that every prototype
    (column) gets the same total mass 1/K and every sample (row) the mass 1/B, over the **global**
    batch (sums are all-reduced under torch.distributed). Returns B×K assignments whose rows sum to 1
    and whose columns sum to ≈ B/K (exactly after the last row step: rows are normalised last).
    """
    if temperature <= 0 or iters < 1:
        raise ValueError(f"sinkhorn_knopp needs temperature > 0 and iters ≥ 1, got {temperature}, {iters}")
    _, world = _world()

    def all_sum(x):
        if world > 1:
            torch.distributed.all_reduce(x)
        return x

    x = logits.float() / temperature
    top = x.max().reshape(1)
    if world > 1:  # one constant for every process, so the global normalisation below cancels it
        torch.distributed.all_reduce(top, op=torch.distributed.ReduceOp.MAX)
    q = torch.exp(x - top).T  # K×B (subtracting the max only avoids overflow)
    b, k = q.shape[1] * world, q.shape[0]
    q /= all_sum(q.sum().reshape(1))
    for _ in range(iters):
        q /= all_sum(q.sum(dim=1, keepdim=True))  # every prototype's total mass …
        q /= k  # … is 1/K
        q /= q.sum(dim=0, keepdim=True)  # every sample's mass …
        q /= b  # … is 1/B
    return (q * b).T  # B×K, rows sum to 1


def ibot_patch_loss(
    student_patches: torch.Tensor, teacher_probs: torch.Tensor, mask: torch.Tensor, student_temp: float = 0.1
) -> torch.Tensor:
    """iBOT's masked-patch self-distillation (Zhou et al. 2022): at every **masked** patch the student's
    patch logits predict the teacher's patch distribution (computed from the unmasked image).

    student_patches: N×L×K logits; teacher_probs: N×L×K probabilities (no gradient); mask: N×L (1 = the
    student saw a mask token there). Per image: −Σ_k P_t log softmax(s/τ_s) summed over its masked
    patches / their number; then the mean over the images that have at least one masked patch.
    Unmasked patches contribute nothing."""
    if student_patches.shape != teacher_probs.shape or student_patches.shape[:2] != mask.shape:
        raise ValueError(
            f"ibot_patch_loss: shapes {tuple(student_patches.shape)}, {tuple(teacher_probs.shape)} "
            f"and mask {tuple(mask.shape)} do not match (N×L×K, N×L×K, N×L)"
        )
    mask = mask.float()
    ce = torch.sum(
        -teacher_probs.float().detach() * F.log_softmax(student_patches.float() / student_temp, dim=-1), dim=-1
    )  # N×L
    per_image = (ce * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    has_mask = (mask.sum(dim=1) > 0).float()
    return (per_image * has_mask).sum() / has_mask.sum().clamp(min=1.0)


def koleo(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The KoLeo regulariser (Sablayrolles et al. 2019; DINOv2): −mean_i log(min_{j≠i} ‖x̄_i − x̄_j‖).

    x: N×D features, normalised here. It pushes each feature away from its nearest neighbour, so the
    features spread uniformly over the sphere.
    """
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"koleo needs an N×D tensor with N ≥ 2, got {tuple(x.shape)}")
    x = F.normalize(x.float(), dim=1)
    with torch.no_grad():
        sims = x @ x.T  # N×N
        sims.fill_diagonal_(-2.0)
        nearest = sims.argmax(dim=1)  # the nearest neighbour of each row (largest cosine)
    distances = (x - x[nearest]).norm(dim=1)
    return -torch.log(distances + eps).mean()


def masked_mse(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, normalize_target: bool = False, eps: float = 1e-6
) -> torch.Tensor:
    """MAE's reconstruction loss (He et al. 2021): mean squared error on the **masked** patches only.

    pred, target: N×L×P (P = p·p·3 values per patch); mask: N×L, 1 = masked (predicted), 0 = visible.
    With ``normalize_target`` each target patch is standardised by its own mean and variance
    ("normalized pixels", MAE Table 1d). Loss = Σ_{n,l} mask·mean_P (pred − target)² / Σ mask.
    Computed in float32 (safe under bf16 autocast).
    """
    if pred.shape != target.shape or mask.shape != pred.shape[:2]:
        raise ValueError(
            f"masked_mse: pred {tuple(pred.shape)} and target {tuple(target.shape)} must be N×L×P and mask {tuple(mask.shape)} N×L"
        )
    pred, target, mask = pred.float(), target.float(), mask.float()
    if normalize_target:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + eps).sqrt()
    per_patch = (pred - target).pow(2).mean(dim=-1)  # N×L
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)


def pretext_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a classification pretext task (rotation, relative position, jigsaw).

    logits: N×K (any dtype; computed in float32, so bf16 autocast is safe); targets: N in [0, K)::

        L = −(1/N) Σ_n log softmax(logits_n)[targets_n]
    """
    if logits.dim() != 2 or targets.shape != logits.shape[:1]:
        raise ValueError(
            f"pretext_cross_entropy needs N×K logits and N targets, got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    return F.cross_entropy(logits.float(), targets)


def alignment(a: torch.Tensor, b: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """Alignment of positive pairs (Wang & Isola, "Understanding Contrastive Representation Learning through
    Alignment and Uniformity on the Hypersphere", ICML 2020), on the ℓ2-normalised rows of a and b (N×D)::

        L_align = (1/N) Σ_n ‖ā_n − b̄_n‖^α        (0: every pair identical; at most 2^α)
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"alignment needs two N×D tensors, got {tuple(a.shape)} and {tuple(b.shape)}")
    return (F.normalize(a.float(), dim=1) - F.normalize(b.float(), dim=1)).norm(dim=1).pow(alpha).mean()


def uniformity(x: torch.Tensor, t: float = 2.0) -> torch.Tensor:
    """Uniformity of a batch on the hypersphere (Wang & Isola 2020), on the ℓ2-normalised rows of x (N×D)::

        L_uniform = log( (2 / (N(N−1))) Σ_{i<j} exp(−t ‖x̄_i − x̄_j‖²) )

    0 when every row is the same point (collapse), more negative the more evenly the rows spread.
    """
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"uniformity needs an N×D tensor with N ≥ 2, got {tuple(x.shape)}")
    return torch.pdist(F.normalize(x.float(), dim=1), p=2).pow(2).mul(-t).exp().mean().log()


# ----------------------------------------------------------------------------------------------
# Reconstruction and colorization (chapter 3)
# ----------------------------------------------------------------------------------------------


def masked_pixel_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked pixels only (the context encoder's reconstruction loss).

    pred, target: N×C×H×W; mask: N×1×H×W (1 = a pixel the network had to fill in, 0 = given context).
    L = Σ mask·(pred − target)² / (C·Σ mask): unmasked pixels contribute nothing, whatever they hold.
    """
    if pred.shape != target.shape or mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2:] != pred.shape[2:]:
        raise ValueError(
            f"masked_pixel_mse needs pred/target N×C×H×W and mask N×1×H×W, got {tuple(pred.shape)}, "
            f"{tuple(target.shape)}, {tuple(mask.shape)}"
        )
    mask = mask.float()
    err = (pred.float() - target.float()) ** 2 * mask
    return err.sum() / (mask.sum() * pred.shape[1]).clamp_min(1.0)


def attention_pointer(f_ref: torch.Tensor, f_tgt: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Vondrick et al. 2018: A_ij = exp(f_iᵀf_j / T) / Σ_k exp(f_kᵀf_j / T), a softmax over reference locations i.

    f_ref: N×C×M (M reference locations), f_tgt: N×C×P (P target locations) → A: N×M×P, columns sum to 1.
    """
    logits = torch.einsum("ncm,ncp->nmp", f_ref.float(), f_tgt.float()) / temperature
    return logits.softmax(dim=1)


def copy_colours(
    f_ref: torch.Tensor, f_tgt: torch.Tensor, c_ref: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """y_j = Σ_i A_ij c_i: each target location's colour is a weighted copy of reference colours.

    f_ref: N×C×M, f_tgt: N×C×P, c_ref: N×K×M (colours, or one-hot colour bins, or mask labels) → N×K×P.
    """
    a = attention_pointer(f_ref, f_tgt, temperature)  # N×M×P
    return torch.einsum("nkm,nmp->nkp", c_ref.float(), a)


# ----------------------------------------------------------------------------------------------
# Contrastive predictive coding (chapter 7)
# ----------------------------------------------------------------------------------------------


def cpc_infonce(
    z: torch.Tensor,
    preds: list[torch.Tensor],
    steps: list[int] | tuple[int, ...],
    temperature: float = 1.0,
    normalize: bool = False,
) -> torch.Tensor:
    """CPC's InfoNCE (van den Oord et al. 2018, eq. 4; Hénaff et al. 2019 for images).

    z: N×T×…×D encodings; axis 1 is the direction of prediction (time for a sequence, rows of a patch
    grid for an image) and any further axes (the grid's columns) are extra positions. preds: one tensor
    per step k in ``steps``, of shape N×(T−k)×…×D: ``preds[s][n, t, …]`` is the prediction W_k c_t made
    from the context at t for the encoding k steps ahead, z[n, t+k, …]. The score of a candidate z_j is
    s = predᵀ z_j / τ (with ``normalize``, the cosine of the two instead of the dot product); the
    candidates are **every** encoding of the batch, other positions of the same sequence or image and
    all positions of the other ones (of every process, under torchrun)::

        L_k = −mean over (n, t, …) of  log  exp(s(pred, z_{n,t+k,…})) / Σ_{all j} exp(s(pred, z_j))
        L   = mean over k of L_k

    Vectorised: one matrix product and one cross-entropy per step k, no loop over the batch.
    """
    if not temperature > 0:
        raise ValueError(f"cpc_infonce needs a temperature > 0, got {temperature}")
    if z.dim() < 3:
        raise ValueError(f"cpc_infonce needs z of shape N×T×…×D, got {tuple(z.shape)}")
    steps = [int(k) for k in steps]
    if len(preds) != len(steps) or not steps:
        raise ValueError(f"cpc_infonce needs one prediction tensor per step, got {len(preds)} for steps {steps}")
    n, t = z.shape[:2]
    d = z.shape[-1]
    z = z.float()
    if normalize:
        z = F.normalize(z, dim=-1)
    rank, _ = _world()
    candidates = _gather(z.reshape(-1, d))  # (world·N·T·…)×D: every encoding of the batch
    index = torch.arange(z[..., 0].numel(), device=z.device).view(z.shape[:-1]) + rank * z[..., 0].numel()  # N×T×…
    total = 0.0
    for k, p in zip(steps, preds):
        if not 0 < k < t:
            raise ValueError(f"cpc_infonce: step k={k} must be in 1…{t - 1} for {t} positions along axis 1")
        want = (n, t - k, *z.shape[2:-1], d)
        if tuple(p.shape) != want:
            raise ValueError(f"cpc_infonce: predictions for k={k} must have shape {want}, got {tuple(p.shape)}")
        p = p.float()
        if normalize:
            p = F.normalize(p, dim=-1)
        logits = p.reshape(-1, d) @ candidates.T / temperature  # (N·(T−k)·…)×(all encodings)
        target = index[:, k:].reshape(-1)  # the positive: z at t + k, same column, same sequence
        total = total + F.cross_entropy(logits, target)
    return total / len(steps)


# ----------------------------------------------------------------------------------------------
# Adversarial and transformation-prediction objectives (AdCo, AET, BigBiGAN)
# ----------------------------------------------------------------------------------------------


_LOG_2PI = 1.8378770664093453  # log(2π)


def adversarial_contrast(
    q: torch.Tensor,
    k: torch.Tensor,
    negatives: torch.Tensor,
    temperature: float = 0.12,
    negative_temperature: float = 0.02,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """AdCo's two-player contrastive objective (Hu, Wang, Hu & Qi 2021, "AdCo: Adversarial Contrast for
    Efficient Learning of Unsupervised Representations from Self-Trained Negative Adversaries").

    q, k: N×D queries and their positive keys; negatives: M×D negative adversaries W (normalised here).
    The encoder minimises InfoNCE against the negatives at temperature τ; the negatives maximise InfoNCE
    at their own, sharper temperature τ_n::

        min_θ  L(q_θ, k, W; τ)        max_W  L(q, k, W; τ_n),   L = −log e^{q·k/τ} / (e^{q·k/τ} + Σ_m e^{q·w_m/τ})

    Returns ``(loss, adversary, ascent)``. ``loss`` is the encoder's InfoNCE at τ with the negatives held
    fixed (its gradient reaches q, and k if it carries one); ``adversary`` is L(·; τ_n) (no gradient);
    ``ascent`` (M×D, no gradient) is the gradient of L(·; τ_n) with respect to the negatives, through their
    normalisation, in closed form: with p_nm the τ_n-softmax weight of negative m for query n (q̂, ŵ unit)::

        ∂L/∂w_m = (1/τ_n) · (1/N) Σ_n p_nm (q̂_n − (q̂_n·ŵ_m) ŵ_m) / ‖w_m‖

    a p-weighted mean of the queries that find w_m most similar, less its component along w_m: the paper's
    observation that an adversary moves towards the queries it is closest to. The negatives' own optimiser
    steps *along* it.
    """
    if negatives.dim() != 2 or negatives.shape[1] != q.shape[1]:
        raise ValueError(f"adversarial_contrast: negatives must be M×{q.shape[1]}, got {tuple(negatives.shape)}")
    if not (temperature > 0 and negative_temperature > 0):
        raise ValueError(
            f"adversarial_contrast needs temperatures > 0, got τ={temperature} and τ_n={negative_temperature}"
        )
    encoder = info_nce(q, k, negatives=negatives.detach(), temperature=temperature)
    with torch.no_grad():
        qn, kn = F.normalize(q.detach().float(), dim=1), F.normalize(k.detach().float(), dim=1)
        norms = negatives.detach().float().norm(dim=1, keepdim=True).clamp_min(1e-12)  # M×1
        w = negatives.detach().float() / norms
        l_neg = qn @ w.T  # N×M
        logits = torch.cat([(qn * kn).sum(1, keepdim=True), l_neg], dim=1) / negative_temperature
        target = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
        adversary = F.cross_entropy(logits, target)
        p = logits.softmax(dim=1)[:, 1:]  # N×M: each query's weight on each negative
        g = p.T @ qn / q.shape[0] - (p * l_neg).mean(0).unsqueeze(1) * w  # M×D, tangent to the sphere at ŵ
        ascent = g / (negative_temperature * norms)
    return encoder, adversary, ascent


def transformation_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """AET's transformation-decoding loss (Zhang, Qi, Wang & Luo 2019, "AET vs. AED"): half the squared
    Euclidean distance between the predicted and the true transformation parameters, averaged over the batch::

        L = (1/N) Σ_n ½ ‖t̂_n − t_n‖²

    pred, target: N×P (P = 6 for an affine matrix, 8 for a projective one). Computed in float32.
    """
    if pred.shape != target.shape or pred.dim() != 2:
        raise ValueError(
            f"transformation_mse needs two N×P tensors of the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    return 0.5 * (pred.float() - target.float()).pow(2).sum(1).mean()


def gaussian_nll(mean: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of ``target`` under a diagonal Gaussian N(mean, exp(log_var)), summed over
    the P dimensions and averaged over the batch (the variational transformation decoder of AVT, Qi,
    Zhang, Chen & Tian 2019)::

        L = (1/N) Σ_n Σ_p ½ [ log 2π + log σ²_np + (t_np − μ_np)² / σ²_np ]

    mean, log_var, target: N×P. Computed in float32.
    """
    if not (mean.shape == log_var.shape == target.shape) or mean.dim() != 2:
        raise ValueError(
            f"gaussian_nll needs three N×P tensors, got {tuple(mean.shape)}, {tuple(log_var.shape)}, {tuple(target.shape)}"
        )
    mean, log_var, target = mean.float(), log_var.float(), target.float()
    nll = 0.5 * (_LOG_2PI + log_var + (target - mean).pow(2) * torch.exp(-log_var))
    return nll.sum(1).mean()


def _check_scores(name: str, real, fake) -> None:
    if len(real) != len(fake) or not real:
        raise ValueError(f"{name} needs the same number (≥ 1) of real and fake scores, got {len(real)} and {len(fake)}")


def hinge_discriminator(real: tuple[torch.Tensor, ...], fake: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The discriminator's hinge loss (Lim & Ye 2017; BigBiGAN, Donahue & Simonyan 2019, eq. for ℓ_D),
    summed over the scores it outputs (BigBiGAN: s_x, s_z and s_xz) and averaged over each batch::

        L_D = Σ_s  E_real[max(0, 1 − s)] + E_fake[max(0, 1 + s)]

    real, fake: tuples of N-vectors of scores, one per term, on real pairs (y = +1) and fake pairs (y = −1).
    """
    _check_scores("hinge_discriminator", real, fake)
    total = 0.0
    for r, f in zip(real, fake):
        total = total + F.relu(1.0 - r.float()).mean() + F.relu(1.0 + f.float()).mean()
    return total


def hinge_generator(real: tuple[torch.Tensor, ...], fake: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The encoder's and generator's loss of BigBiGAN (Donahue & Simonyan 2019): ℓ_EG = y·(s_x + s_z + s_xz),
    no hinge, averaged over each batch::

        L_EG = E_real[Σ_s s] − E_fake[Σ_s s]

    (the encoder makes real pairs look fake, the generator fake pairs look real). Same inputs as
    :func:`hinge_discriminator`.
    """
    _check_scores("hinge_generator", real, fake)
    total = 0.0
    for r, f in zip(real, fake):
        total = total + r.float().mean() - f.float().mean()
    return total


# ----------------------------------------------------------------------------------------------
# Semi-supervised learning: a few labels and many unlabelled images
# ----------------------------------------------------------------------------------------------


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the labelled items only (label −1 = unlabelled, ignored).

    logits: N×C; labels: N in {−1} ∪ [0, C)::

        L = −(1/|S|) Σ_{n∈S} log softmax(logits_n)[labels_n],   S = {n : labels_n ≥ 0}

    With no labelled item the loss is 0, still a function of ``logits`` (so every parameter gets a gradient,
    zero, as DistributedDataParallel expects of every step).
    """
    if logits.dim() != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"masked_cross_entropy needs N×C logits and N labels, got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    labelled = labels >= 0
    per_item = F.cross_entropy(logits.float(), labels.clamp_min(0), reduction="none")
    return (per_item * labelled).sum() / labelled.sum().clamp_min(1)


def sharpen(p: torch.Tensor, temperature: float) -> torch.Tensor:
    """MixMatch's sharpening of a distribution (Berthelot et al. 2019, eq. 7), row-wise over the last dim::

        Sharpen(p, T)_i = p_i^{1/T} / Σ_j p_j^{1/T}

    T = 1 leaves ``p`` as it is; T → 0 tends to the one-hot vector of the argmax. Computed as
    softmax(log p / T), so a small T does not underflow.
    """
    if not temperature > 0:
        raise ValueError(f"sharpening needs a temperature > 0, got {temperature}")
    return torch.softmax(torch.log(p.float().clamp_min(1e-30)) / temperature, dim=-1)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft targets (MixMatch's L_X on mixed labelled images). logits, targets: N×C,
    each target row a distribution::

        L = −(1/N) Σ_n Σ_c targets_nc log softmax(logits_n)_c      (0 for N = 0)
    """
    if logits.shape != targets.shape or logits.dim() != 2:
        raise ValueError(
            f"soft_cross_entropy needs two N×C tensors, got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    per_item = -(targets.float() * torch.log_softmax(logits.float(), dim=-1)).sum(-1)
    return per_item.sum() / max(1, len(per_item))


def l2_consistency(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """MixMatch's L_U: the squared L2 distance between the predicted distribution and the (guessed, mixed)
    target, divided by the number of classes L and of items N::

        L = 1/(L·N) Σ_n ‖targets_n − softmax(logits_n)‖²

    Unlike cross-entropy it is bounded, so a wrong guessed label costs at most a constant.
    """
    if logits.shape != targets.shape or logits.dim() != 2:
        raise ValueError(f"l2_consistency needs two N×C tensors, got {tuple(logits.shape)} and {tuple(targets.shape)}")
    if logits.numel() == 0:
        return logits.float().sum()
    return (torch.softmax(logits.float(), dim=-1) - targets.float()).pow(2).mean()


def mixmatch_loss(
    logits_x: torch.Tensor,
    targets_x: torch.Tensor,
    logits_u: torch.Tensor,
    targets_u: torch.Tensor,
    lambda_u: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MixMatch's objective (Berthelot et al. 2019, eqs. 2–5) on the mixed batches X' and U'::

        L = L_X + λ_U · L_U,   L_X = soft_cross_entropy(X'),   L_U = l2_consistency(U')

    Returns (L, L_X, L_U).
    """
    loss_x = soft_cross_entropy(logits_x, targets_x)
    loss_u = l2_consistency(logits_u, targets_u)
    return loss_x + lambda_u * loss_u, loss_x, loss_u


def batch_hard_triplet(z: torch.Tensor, ids: torch.Tensor, margin: float | None = None) -> torch.Tensor:
    """The batch-hard triplet loss (Hermans, Beyer & Leibe, "In Defense of the Triplet Loss for Person
    Re-Identification", 2017) that S4L-Exemplar applies to the copies of each image.

    z: N×D embeddings; ids: N, equal for the copies of one image (each id at least twice). For each anchor a,
    the hardest positive is the farthest item with its id, the hardest negative the nearest with another::

        d_+ = max_{p: id_p = id_a, p ≠ a} ‖z_a − z_p‖,   d_− = min_{n: id_n ≠ id_a} ‖z_a − z_n‖
        L = (1/N) Σ_a softplus(d_+ − d_−)          (soft margin, margin=None)
        L = (1/N) Σ_a max(0, d_+ − d_− + margin)   (hard margin)

    Euclidean distances of the raw embeddings (no normalisation).
    """
    z = z.float()
    same = ids.view(-1, 1) == ids.view(1, -1)
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    if not bool((same & ~eye).any(1).all()) or bool(same.all()):
        raise ValueError("batch_hard_triplet needs every id at least twice and at least two ids")
    d2 = (z.unsqueeze(1) - z.unsqueeze(0)).pow(2).sum(-1)
    dist = (d2 + 1e-12).sqrt()  # the epsilon keeps the gradient of the zero diagonal finite
    d_pos = dist.masked_fill(~same | eye, float("-inf")).amax(1)
    d_neg = dist.masked_fill(same, float("inf")).amin(1)
    gap = d_pos - d_neg
    return (F.softplus(gap) if margin is None else F.relu(gap + margin)).mean()
