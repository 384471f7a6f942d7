"""Losses: plain functions of tensors (this module imports only torch).

Each function's docstring gives the formula and the shapes; the chapters build each loss cell by
cell and then check that these functions compute the same numbers. Inputs are raw embeddings: the
functions normalise them themselves.

Under ``torchrun`` the contrastive losses take their negatives from every process: embeddings are
gathered with ``torch.distributed.nn.functional.all_gather``, which passes gradients back to the
process that made them (SimCLR needs this; MoCo's keys carry no gradient). On one process nothing is
gathered.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without torch.distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (n×D) from every process in rank order: (world·n)×D; gradients flow back if x has one."""
    rank, world = _world()
    if world == 1:
        return x
    if x.requires_grad:
        import torch.distributed.nn.functional as dist_fn  # autograd-aware all_gather

        return torch.cat(dist_fn.all_gather(x), dim=0)
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
        raise ValueError(f"nt_xent needs two N×D tensors of the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
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


def info_nce(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor | None = None, temperature: float = 0.07) -> torch.Tensor:
    """InfoNCE in MoCo's form (Oord et al. 2018; He et al. 2020, eq. 1).

    q: N×D queries; k: N×D keys, k[i] the positive of q[i]; negatives: K×D (a memory bank or queue)
    or None, in which case the other keys of the batch (of every process, under torchrun) are the
    negatives, as in MoCo v3. An (1+K)-way (or N-way) softmax classification of the positive::

        L = −log  exp(q·k₊/τ) / (exp(q·k₊/τ) + Σ_{k₋} exp(q·k₋/τ))

    averaged over the N queries.
    """
    if q.dim() != 2 or q.shape != k.shape:
        raise ValueError(f"info_nce needs q and k of the same N×D shape, got {tuple(q.shape)} and {tuple(k.shape)}")
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


# ----------------------------------------------------------------------------------------------
# Reconstruction and colorization (chapter 3)
# ----------------------------------------------------------------------------------------------


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked pixels only (the context encoder's reconstruction loss).

    pred, target: N×C×H×W; mask: N×1×H×W (1 = a pixel the network had to fill in, 0 = given context).
    L = Σ mask·(pred − target)² / (C·Σ mask): unmasked pixels contribute nothing, whatever they hold.
    """
    if pred.shape != target.shape or mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2:] != pred.shape[2:]:
        raise ValueError(f"masked_mse needs pred/target N×C×H×W and mask N×1×H×W, got {tuple(pred.shape)}, "
                         f"{tuple(target.shape)}, {tuple(mask.shape)}")
    mask = mask.float()
    err = (pred.float() - target.float()) ** 2 * mask
    return err.sum() / (mask.sum() * pred.shape[1]).clamp_min(1.0)


def attention_pointer(f_ref: torch.Tensor, f_tgt: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Vondrick et al. 2018: A_ij = exp(f_iᵀf_j / T) / Σ_k exp(f_kᵀf_j / T), a softmax over reference locations i.

    f_ref: N×C×M (M reference locations), f_tgt: N×C×P (P target locations) → A: N×M×P, columns sum to 1.
    """
    logits = torch.einsum("ncm,ncp->nmp", f_ref.float(), f_tgt.float()) / temperature
    return logits.softmax(dim=1)


def copy_colours(f_ref: torch.Tensor, f_tgt: torch.Tensor, c_ref: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """y_j = Σ_i A_ij c_i: each target location's colour is a weighted copy of reference colours.

    f_ref: N×C×M, f_tgt: N×C×P, c_ref: N×K×M (colours, or one-hot colour bins, or mask labels) → N×K×P.
    """
    a = attention_pointer(f_ref, f_tgt, temperature)  # N×M×P
    return torch.einsum("nkm,nmp->nkp", c_ref.float(), a)
