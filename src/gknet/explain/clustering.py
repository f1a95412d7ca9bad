"""K-means over the predicted harmony kernels (paper Figure 9)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gknet.explain.capture import Capture

KMEANS_FIT_POINTS = 4096  # K-means centres are fitted on at most this many kernels per level
MAX_CLUSTERS = 20  # the qualitative colour map has 20 distinct colours


def _sq_dist(x: torch.Tensor, x_sq: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Squared distances [P, k] through one matrix product (much faster than cdist on CPU)."""
    return (x_sq - 2 * x @ centers.T + (centers * centers).sum(1)).clamp_min(0)


def kmeans(
    x: torch.Tensor, k: int, seed: int = 0, iters: int = 100, tol: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's K-means with k-means++ seeding, deterministic for a given ``seed``.

    x: [P, D] points. Returns labels [P] (int64, each point's nearest centre) and centers
    [k, D]. Stops after ``iters`` iterations or once at most a fraction ``tol`` of the
    points changed cluster (``tol=0``: full convergence).
    """
    if x.ndim != 2:
        raise ValueError(f"kmeans expects points [P, D], got shape {tuple(x.shape)}")
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"kmeans needs 1 <= k <= {x.shape[0]} points, got k={k}")
    return _lloyd(x.detach().float().cpu(), k, seed, iters, tol)


def _lloyd(x: torch.Tensor, k: int, seed: int, iters: int, tol: float) -> tuple[torch.Tensor, torch.Tensor]:
    mean = x.mean(0)
    x = (x - mean).contiguous()  # centred data keeps the expanded distance formula accurate in float32
    x_sq = (x * x).sum(1, keepdim=True)
    gen = torch.Generator().manual_seed(seed)
    # k-means++: each next centre is drawn with probability proportional to the squared
    # distance to the nearest centre chosen so far.
    centers = x[torch.randint(x.shape[0], (1,), generator=gen)]
    nearest = _sq_dist(x, x_sq, centers)[:, 0]
    for _ in range(1, k):
        if nearest.sum() > 0:
            pick = torch.multinomial(nearest, 1, generator=gen)
        else:  # every point already coincides with a centre
            pick = torch.randint(x.shape[0], (1,), generator=gen)
        centers = torch.cat([centers, x[pick]])
        nearest = torch.minimum(nearest, _sq_dist(x, x_sq, x[pick])[:, 0])
    labels = _sq_dist(x, x_sq, centers).argmin(dim=1)
    for _ in range(iters):
        onehot = F.one_hot(labels, k).T.float()  # [k, P]
        counts = onehot.sum(1, keepdim=True)
        # An empty cluster keeps its centre instead of collapsing to the mean.
        centers = torch.where(counts > 0, onehot @ x / counts.clamp_min(1), centers)
        new = _sq_dist(x, x_sq, centers).argmin(dim=1)
        changed = (new != labels).float().mean()
        labels = new
        if changed <= tol:
            break
    return labels, centers + mean


def kernel_clusters(cap: Capture, k: int, seed: int = 0) -> list[torch.Tensor]:
    """Per modulated level (paper level 1 = deepest first): K-means labels [gh, gw] of the kernels.

    Each pixel's kernel K^l[:, :, y, x] (C * N^2 numbers) is one point; only cells that
    cover the unpadded image are clustered. Above KMEANS_FIT_POINTS points, the centres are
    fitted on a seeded random subset and every point gets its nearest centre. Labels are
    renumbered by cluster size (0 = largest).
    """
    labels = []
    for level in cap.inter.kernels:
        gh = gw = cap.valid_cells(level.stride)
        cells = level.kernels[0, :, :, :gh, :gw].flatten(0, 1)  # [C*N^2, gh, gw]
        points = cells.reshape(-1, gh * gw).T.contiguous().cpu()  # [P, C*N^2]
        if len(points) > KMEANS_FIT_POINTS:
            subset = torch.randperm(len(points), generator=torch.Generator().manual_seed(seed))
            _, centers = kmeans(points[subset[:KMEANS_FIT_POINTS]], k, seed=seed)
            lab = torch.cdist(points, centers).argmin(dim=1)
        else:
            lab, _ = kmeans(points, min(k, len(points)), seed=seed)
        order = torch.argsort(torch.bincount(lab, minlength=k), descending=True)
        labels.append(torch.argsort(order)[lab].view(gh, gw))
    return labels
