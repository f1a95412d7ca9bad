"""Look inside GKNet: the pictures of the paper's Figures 9-11 for one composite.

Everything is computed from the tensors the model returns with ``return_intermediates=True``
(plus the SCF block's own ``conv_e`` applied to its encoder input), so the pictures show
what the network really computed:

- kernel clusters (Figure 9): K-means over the per-pixel predicted kernels K^l (C * N^2
  numbers per pixel) of every modulated decoder level;
- SCF feature maps (Figure 10): channels of Conv(F_E^l) at one level, each labelled with
  its selective channel weight S_E (Eq. 3-4), the highest and the lowest weights;
- LRE attention (Figure 11): for a query point, the softmax attention row of its token in
  every layer and head, upsampled over the image;
- the change map |harmonized - composite| and composite | harmonized side by side.

The network runs on a copy of the composite resized so that its longer side is
``resolution`` (aspect ratio kept); every picture is drawn at that size.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from gknet.atomic import check_writable, remove_stale_temporaries, write_atomic
from gknet.data.imageio import mask_image, rgb_image, save_image_atomic, to_tensor_image
from gknet.errors import GknetError
from gknet.fullres import resize

FILES = {
    "composite_harmonized": "composite_harmonized.png",
    "change_map": "change_map.png",
    "kernel_clusters": "kernel_clusters.png",
    "scf_features": "scf_features.png",
    "lre_attention": "lre_attention.png",
    "index": "index.html",
}
MAX_LRE_TOKENS = 4096  # attention matrices are tokens^2 per head and layer: 4096 tokens ~ 64 MB each
SCF_PANELS = 16
KMEANS_FIT_POINTS = 4096  # K-means centres are fitted on at most this many kernels per level
MAX_CLUSTERS = 20  # the qualitative colour map has 20 distinct colours

# Figure layout in pixels at DPI: exact sizes, so every picture's size is predictable.
DPI = 100
PANEL = 256  # width of an image panel (height follows the image's aspect ratio)
SMALL_PANEL = 160  # SCF feature-map panels
PAD = 10
TITLE = 30  # room above each panel for its title
HEADER = 46  # room for the figure title and its subtitle
COLORBAR = 80  # colour bar strip on the right (bar + ticks + label)


# ----------------------------------------------------------------------------- K-means


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
    # A loop of small matrix products: thread synchronisation costs more than it saves
    # (measured 50x slower with 2 threads on a busy 2-core machine).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _lloyd(x.detach().float().cpu(), k, seed, iters, tol)
    finally:
        torch.set_num_threads(threads)


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


# ----------------------------------------------------------------------------- network pass


@dataclass
class NetworkPass:
    """The forward pass behind the pictures.

    As in :class:`gknet.harmonizer.Harmonizer`, the network sees the whole image resized to
    ``net_size`` x ``net_size``; the pictures are drawn at ``size``, the image's own aspect
    ratio with the longer side = ``net_size``. ``composite``, ``mask`` and ``output`` (the
    Harmonizer's result) are [1, C, h, w] at that display size.
    """

    composite: torch.Tensor
    mask: torch.Tensor
    output: torch.Tensor
    inter: dict
    net_size: int
    image_size: tuple[int, int]  # (width, height) of the input

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.composite.shape[-2:])

    def stride_of(self, rows: int) -> int:
        """Stride of a map with ``rows`` rows: the model pads its input to a multiple of every stride."""
        return self.inter["encoder"][0].shape[-2] // rows

    def valid_cells(self, stride: int) -> int:
        """Rows (= columns) of a stride-``stride`` map that cover the unpadded network input."""
        return math.ceil(self.net_size / stride)

    def to_network(self, point: tuple[float, float]) -> tuple[float, float]:
        """Input pixel (x, y) -> continuous network coordinates (pixel i spans [i, i + 1))."""
        width, height = self.image_size
        return (point[0] + 0.5) * self.net_size / width, (point[1] + 0.5) * self.net_size / height

    def to_display(self, point: tuple[float, float]) -> tuple[float, float]:
        """Input pixel (x, y) -> display pixel coordinates (pixel centres on integers, as imshow)."""
        (h, w), (width, height) = self.size, self.image_size
        return (point[0] + 0.5) * w / width - 0.5, (point[1] + 0.5) * h / height - 0.5

    def to_pixels(self, grid: torch.Tensor, stride: int, mode: str) -> np.ndarray:
        """[gh, gw] map on a stride-``stride`` grid of the network input -> [h, w] over the picture."""
        up = F.interpolate(grid[None, None].float(), scale_factor=stride, mode=mode)
        up = up[..., : self.net_size, : self.net_size]
        return F.interpolate(up, size=self.size, mode=mode)[0, 0].cpu().numpy()


def run_model(
    model: torch.nn.Module, composite: Image.Image, mask: Image.Image, resolution: int
) -> NetworkPass:
    """Harmonize with ``model`` (put in eval mode) and rerun its network pass keeping the intermediates.

    The inputs are first reduced to the picture size (longer side = ``resolution``), which is
    then treated exactly as ``gknet harmonize`` treats an image of that size.
    """
    from gknet.harmonizer import Harmonizer

    comp, alpha = to_tensor_image(rgb_image(composite))[None], to_tensor_image(mask_image(mask))[None]
    if comp.shape[-2:] != alpha.shape[-2:]:
        (ch, cw), (mh, mw) = comp.shape[-2:], alpha.shape[-2:]
        raise GknetError(f"composite is {cw}x{ch} but mask is {mw}x{mh}")
    if alpha.max() <= 0:
        raise GknetError("the mask is empty: there is no foreground to explain")
    height, width = comp.shape[-2:]
    scale = resolution / max(width, height)
    display = (max(2, round(height * scale)), max(2, round(width * scale)))  # contours need 2 x 2
    comp, alpha = resize(comp, display), resize(alpha, display).clamp(0, 1)
    harmonizer = Harmonizer(model, resolution, device=next(model.parameters()).device)
    tokens = math.ceil(resolution / model.cfg.stride) ** 2
    if model.cfg.use_lre and tokens > MAX_LRE_TOKENS:
        raise GknetError(
            f"resolution {resolution} gives {tokens} LRE tokens; the attention maps need at most "
            f"{MAX_LRE_TOKENS} (lower --resolution)"
        )
    output = harmonizer.harmonize_tensor(comp, alpha)
    # The network input exactly as Harmonizer.harmonize_tensor builds it.
    low = (resolution, resolution)
    with torch.no_grad():
        _, inter = harmonizer.model(
            resize(comp, low).to(harmonizer.device),
            resize(alpha, low).clamp(0, 1).to(harmonizer.device),
            return_intermediates=True,
        )
    return NetworkPass(comp, alpha, output, inter, resolution, (width, height))


# ----------------------------------------------------------------------------- what the figures show


def kernel_clusters(run: NetworkPass, k: int, seed: int = 0) -> list[torch.Tensor]:
    """Per modulated level (paper level 1 = deepest first): K-means labels [gh, gw] of the kernels.

    Each pixel's kernel K^l[:, :, y, x] (C * N^2 numbers) is one point; only cells that
    cover the unpadded image are clustered. Above KMEANS_FIT_POINTS points, the centres are
    fitted on a seeded random subset and every point gets its nearest centre. Labels are
    renumbered by cluster size (0 = largest).
    """
    labels = []
    for kern in run.inter["kernels"]:
        gh = gw = run.valid_cells(run.stride_of(kern.shape[-2]))
        points = kern[0, :, :, :gh, :gw].flatten(0, 1).reshape(-1, gh * gw).T.contiguous().cpu()  # [P, C*N^2]
        if len(points) > KMEANS_FIT_POINTS:
            subset = torch.randperm(len(points), generator=torch.Generator().manual_seed(seed))
            _, centers = kmeans(points[subset[:KMEANS_FIT_POINTS]], k, seed=seed)
            lab = torch.cdist(points, centers).argmin(dim=1)
        else:
            lab, _ = kmeans(points, min(k, len(points)), seed=seed)
        order = torch.argsort(torch.bincount(lab, minlength=k), descending=True)
        labels.append(torch.argsort(order)[lab].view(gh, gw))
    return labels


def point_token(run: NetworkPass, point_net: tuple[float, float]) -> int:
    """Row-major index of the LRE token whose cell holds ``point_net`` (see ``NetworkPass.to_network``)."""
    gh, gw = run.inter["lre_grid"]
    stride = run.stride_of(gh)
    col = min(max(int(point_net[0] // stride), 0), gw - 1)
    row = min(max(int(point_net[1] // stride), 0), gh - 1)
    return row * gw + col


def lre_attention(run: NetworkPass, point: tuple[int, int]) -> torch.Tensor:
    """Attention of input pixel ``point``'s token to every token: [layers, heads, gh, gw] (sums to 1)."""
    gh, gw = run.inter["lre_grid"]
    idx = point_token(run, run.to_network(point))
    return torch.stack([att[0, :, idx].view(-1, gh, gw) for att in run.inter["lre_attention"]]).cpu()


def scf_features(model: torch.nn.Module, run: NetworkPass, level: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Conv(F_E^l) [C, gh, gw] (padded grid) at paper level ``level`` and its channel weights S_E [C]."""
    j = level - 1
    kern = run.inter["kernels"][j]
    f_e = next(f for f in run.inter["encoder"] if f.shape[-2:] == kern.shape[-2:])  # KPB j's encoder input
    with torch.no_grad():
        maps = model.kpb[j].fusion.conv_e(f_e)[0]
    return maps.cpu(), run.inter["fusion"][j]["s_e"][0].cpu()


# ----------------------------------------------------------------------------- drawing


class _Grid:
    """A figure of rows x cols image panels at exact pixel positions, with an optional colour bar."""

    def __init__(
        self,
        rows: int,
        cols: int,
        aspect: float,
        title: str,
        subtitle: str = "",
        panel: int = PANEL,
        colorbar: bool = False,
    ):
        from matplotlib.figure import Figure

        self.panel_w, self.panel_h = panel, max(1, round(panel * aspect))
        self.width = PAD + cols * (self.panel_w + PAD) + (COLORBAR if colorbar else 0)
        self.height = HEADER + rows * (TITLE + self.panel_h + PAD)
        self.fig = Figure(figsize=(self.width / DPI, self.height / DPI), dpi=DPI)
        title_y = 15 if subtitle else HEADER / 2
        self.fig.text(
            0.5, 1 - title_y / self.height, title, ha="center", va="center", fontsize=12, weight="bold"
        )
        self.fig.text(0.5, 1 - 34 / self.height, subtitle, ha="center", va="center", fontsize=9)
        self.axes = [[self._axes(r, c) for c in range(cols)] for r in range(rows)]
        self.rows_span = (HEADER + TITLE, self.height - PAD)

    def _box(self, left: float, top: float, width: float, height: float) -> list[float]:
        return [left / self.width, 1 - (top + height) / self.height, width / self.width, height / self.height]

    def _axes(self, row: int, col: int):
        left = PAD + col * (self.panel_w + PAD)
        top = HEADER + row * (TITLE + self.panel_h + PAD) + TITLE
        ax = self.fig.add_axes(self._box(left, top, self.panel_w, self.panel_h))
        ax.set_axis_off()
        return ax

    def colorbar(self, mappable, label: str) -> None:
        top, bottom = self.rows_span
        cax = self.fig.add_axes(self._box(self.width - COLORBAR + 8, top, 14, bottom - top - TITLE))
        self.fig.colorbar(mappable, cax=cax).set_label(label, fontsize=9)
        cax.tick_params(labelsize=8)

    def to_image(self) -> Image.Image:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        canvas = FigureCanvasAgg(self.fig)
        canvas.draw()
        return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")


def _rgb(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy()


def _show_image(
    ax,
    run: NetworkPass,
    title: str,
    image: torch.Tensor | None = None,
    dim: bool = False,
    outline: bool = True,
) -> None:
    """Draw the composite (or ``image``), dimmed to grey under overlays, with the mask outlined."""
    rgb = _rgb(run.composite if image is None else image)
    if dim:
        rgb = np.repeat(rgb.mean(axis=2, keepdims=True), 3, axis=2) * 0.6 + 0.2
    ax.imshow(rgb, interpolation="bilinear")
    if outline:
        ax.contour(run.mask[0, 0].numpy(), levels=[0.5], colors="white", linewidths=1.0)
    ax.set_title(title, fontsize=10)


def _mark(ax, xy: tuple[float, float]) -> None:
    x, y = xy
    ax.plot(x, y, marker="o", markersize=10, markerfacecolor="none", markeredgecolor="cyan", mew=2)
    ax.plot(x, y, marker="+", markersize=10, color="cyan", mew=1.5)


def draw_side_by_side(run: NetworkPass) -> Image.Image:
    grid = _Grid(1, 2, run.size[0] / run.size[1], "Composite | harmonized")
    _show_image(grid.axes[0][0], run, "composite (mask outlined)")
    _show_image(grid.axes[0][1], run, "harmonized", image=run.output, outline=False)
    return grid.to_image()


def draw_change_map(run: NetworkPass) -> Image.Image:
    change = (run.output - run.composite).abs().mean(dim=1)[0].numpy() * 255
    grid = _Grid(1, 1, run.size[0] / run.size[1], "Change map", "|harmonized - composite|", colorbar=True)
    ax = grid.axes[0][0]
    im = ax.imshow(change, cmap="magma", vmin=0, vmax=max(1.0, float(change.max())), interpolation="nearest")
    mask = run.mask[0, 0].numpy()
    ax.contour(mask, levels=[0.5], colors="cyan", linewidths=0.8)
    inside = mask > 0.5 if (mask > 0.5).any() else mask > 0  # a mask thinner than a picture pixel
    mean = f"{change[inside].mean():.1f}" if inside.any() else "n/a"
    ax.set_title(f"max {change.max():.1f}, mean in mask {mean}", fontsize=10)
    grid.colorbar(im, "mean abs. change over RGB (0-255)")
    return grid.to_image()


def draw_kernel_clusters(run: NetworkPass, labels: list[torch.Tensor], k: int) -> Image.Image:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"].resampled(k)
    grid = _Grid(
        1,
        len(labels) + 1,
        run.size[0] / run.size[1],
        "Harmony-kernel clusters",
        f"K-means (K={k}) over each pixel's predicted kernel; level 1 = deepest",
    )
    _show_image(grid.axes[0][0], run, "composite")
    for j, (lab, kern) in enumerate(zip(labels, run.inter["kernels"], strict=True)):
        ax = grid.axes[0][j + 1]
        stride = run.stride_of(kern.shape[-2])
        _show_image(
            ax,
            run,
            f"level {j + 1}: 1/{stride} res, {kern.shape[1]}ch x {kern.shape[2]} taps",
            dim=True,
            outline=False,
        )
        ax.imshow(
            run.to_pixels(lab, stride, "nearest"),
            cmap=cmap,
            vmin=-0.5,
            vmax=k - 0.5,
            alpha=0.7,
            interpolation="nearest",
        )
        ax.contour(run.mask[0, 0].numpy(), levels=[0.5], colors="white", linewidths=1.0)
    return grid.to_image()


def draw_lre_attention(run: NetworkPass, maps: torch.Tensor, point: tuple[int, int]) -> Image.Image:
    """One panel per layer (rows) and head (columns); attention in units of the uniform weight 1/T."""
    layers, heads, gh, gw = maps.shape
    stride = run.stride_of(gh)
    relative = maps * gh * gw
    vmax = float(relative.max())
    grid = _Grid(
        layers,
        heads,
        run.size[0] / run.size[1],
        "LRE attention",
        f"from point (x={point[0]}, y={point[1]}); one map per layer (rows) and head (columns)",
        colorbar=True,
    )
    for layer in range(layers):
        for head in range(heads):
            ax = grid.axes[layer][head]
            _show_image(ax, run, f"layer {layer + 1}, head {head + 1}", dim=True)
            im = ax.imshow(
                run.to_pixels(relative[layer, head], stride, "bilinear"),
                cmap="inferno",
                vmin=0,
                vmax=vmax,
                alpha=0.75,
                interpolation="bilinear",
            )
            _mark(ax, run.to_display(point))
    grid.colorbar(im, "attention x tokens (1 = uniform)")
    return grid.to_image()


def draw_scf(run: NetworkPass, maps: torch.Tensor, weights: torch.Tensor, level: int) -> Image.Image:
    """Channels with the highest and the lowest S_E, each map scaled to its own range."""
    order = torch.argsort(weights, descending=True)
    shown = f"all {len(weights)} channels"
    if len(order) > SCF_PANELS:
        order = torch.cat([order[: SCF_PANELS // 2], order[-(SCF_PANELS // 2) :]])
        shown = f"the {SCF_PANELS // 2} highest and lowest of {len(weights)} channels"
    cols = min(4, len(order))
    rows = math.ceil(len(order) / cols)
    stride = run.stride_of(maps.shape[-2])
    grid = _Grid(
        rows,
        cols,
        run.size[0] / run.size[1],
        f"SCF feature maps, level {level}",
        f"Conv(F_E): {shown} by channel weight S_E (red)",
        panel=SMALL_PANEL,
    )
    for i, ax in enumerate(ax for row in grid.axes for ax in row):
        if i >= len(order):
            continue
        c = int(order[i])
        ax.imshow(run.to_pixels(maps[c], stride, "bilinear"), cmap="viridis", interpolation="bilinear")
        ax.contour(run.mask[0, 0].numpy(), levels=[0.5], colors="white", linewidths=0.8)
        ax.set_title(f"channel {c}", fontsize=9)
        ax.text(
            0.97,
            0.95,
            f"{float(weights[c]):.2f}",
            transform=ax.transAxes,
            ha="right",
            va="top",
            color="red",
            fontsize=11,
            weight="bold",
            bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1.5},
        )
    return grid.to_image()


# ----------------------------------------------------------------------------- the report


CAPTIONS = {
    "composite_harmonized": "The composite (foreground outlined) and the harmonized result, as gknet "
    "harmonize computes it, at picture size.",
    "change_map": "Per-pixel change: mean over R, G, B of |harmonized - composite| in 0-255 units; the "
    "foreground is outlined. Pixels outside the mask never change.",
    "kernel_clusters": "Figure 9: K-means over the per-pixel harmony kernels K^l (C x N x N numbers per "
    "pixel) of every modulated decoder level (level 1 = deepest), over the greyed image with the foreground "
    "outlined. Each colour is one cluster; colours are not comparable across levels.",
    "scf_features": "Figure 10: feature maps Conv(F_E) entering Selective Correlation Fusion at one level, "
    "each scaled to its own range; the red number is the channel's selective weight S_E (Eq. 3-4). Shown: "
    "the channels with the highest weights, then those with the lowest.",
    "lre_attention": "Figure 11: self-attention of the query point's token (circle) in the Long-distance "
    "Reference Extractor, one map per layer (rows) and head (columns), upsampled from the token grid. "
    "1 on the colour bar is the uniform weight 1/T.",
}
TITLES = {
    "composite_harmonized": "Composite and harmonized",
    "change_map": "Change map",
    "kernel_clusters": "Harmony-kernel clusters",
    "scf_features": "SCF feature maps",
    "lre_attention": "LRE attention",
}


def render_index(written: dict[str, Path], notes: list[str]) -> str:
    """Self-contained HTML page: every picture (relative path) with its caption, then the notes."""
    sections = "\n".join(
        f'<figure><h2>{html.escape(TITLES[key])}</h2><img src="{html.escape(path.name)}" '
        f'alt="{html.escape(TITLES[key])}"><figcaption>{html.escape(CAPTIONS[key])}</figcaption></figure>'
        for key, path in written.items()
    )
    warn = ' class="warning"'
    items = "\n".join(f"<li{warn if n.startswith('WARNING') else ''}>{html.escape(n)}</li>" for n in notes)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>gknet explain</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; }}
figure {{ margin: 0 0 2.5em 0; }} img {{ max-width: 100%; border: 1px solid #ddd; }}
figcaption {{ color: #444; max-width: 60em; }} li {{ margin: 0.3em 0; }}
.warning {{ color: #b00; font-weight: bold; }}
</style></head><body>
<h1>Inside GKNet</h1>
<ul>
{items}
</ul>
{sections}
</body></html>
"""


def _describe(model: torch.nn.Module) -> str:
    cfg = model.cfg
    parts = [f"widths {list(cfg.widths)}"]
    if cfg.use_kpb:
        parts.append(f"{cfg.kpb_levels} modulated levels, {cfg.kernel_size}x{cfg.kernel_size} kernels")
    parts += [name for name, on in (("LRE", cfg.use_lre), ("SCF", cfg.use_scf)) if on]
    return "model: " + ", ".join(parts)


def check_out_dir(out_dir: str | Path, overwrite: bool) -> Path:
    """``out_dir`` as a Path; GknetError if it is a file or already holds our files (unless ``overwrite``)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise GknetError(f"output path is not a directory: {out_dir}")
    existing = [name for name in FILES.values() if (out_dir / name).exists()]
    if existing and not overwrite:
        raise GknetError(f"{out_dir} already holds {', '.join(existing)} (pass --overwrite to replace them)")
    check_writable(out_dir / FILES["index"])
    remove_stale_temporaries(out_dir, FILES.values())  # left by a killed run
    return out_dir


def explain(
    model: torch.nn.Module,
    composite_pil: Image.Image,
    mask_pil: Image.Image,
    out_dir: str | Path,
    point: tuple[int, int] | None = None,
    clusters: int = 6,
    level: int | None = None,
    resolution: int = 256,
    *,
    seed: int = 0,
    overwrite: bool = False,
    notes: list[str] | tuple[str, ...] = (),
) -> dict[str, Path]:
    """Write the explanation pictures and ``index.html`` into ``out_dir``; returns {name: path}.

    ``point`` (x, y) is in the original composite's pixels (default: centre of the mask's
    bounding box); ``level`` is the SCF level in the paper's numbering (1 = deepest;
    default: the finest modulated level). Figures a model does not have (ablations
    without KPB, LRE or SCF) are skipped and listed in index.html. ``notes`` are extra
    lines for the page (for example which weights were used).
    """
    cfg = model.cfg
    if not 2 <= clusters <= MAX_CLUSTERS:
        raise GknetError(f"clusters must be between 2 and {MAX_CLUSTERS}, got {clusters}")
    has_scf = cfg.use_kpb and cfg.use_scf
    level = cfg.kpb_levels if level is None else level
    if has_scf and not 1 <= level <= cfg.kpb_levels:
        raise GknetError(f"level must be between 1 (deepest) and {cfg.kpb_levels}, got {level}")
    width, height = composite_pil.size
    if point is not None and not (0 <= point[0] < width and 0 <= point[1] < height):
        raise GknetError(f"point ({point[0]}, {point[1]}) is outside the {width}x{height} composite")

    out_dir = check_out_dir(out_dir, overwrite)

    run = run_model(model, composite_pil, mask_pil, resolution)
    if point is None:
        ys, xs = np.nonzero(np.asarray(mask_image(mask_pil)) > 127)
        if len(xs) == 0:  # a faint soft mask: fall back to its support
            ys, xs = np.nonzero(np.asarray(mask_image(mask_pil)))
        point = ((int(xs.min()) + int(xs.max())) // 2, (int(ys.min()) + int(ys.max())) // 2)

    h, w = run.size
    notes = [
        *notes,
        _describe(model),
        f"input {width}x{height}; network pass at {resolution}x{resolution} (the whole image resized, as "
        f"in gknet harmonize); pictures at {w}x{h}",
    ]
    images = {"composite_harmonized": draw_side_by_side(run), "change_map": draw_change_map(run)}
    if cfg.use_kpb:
        images["kernel_clusters"] = draw_kernel_clusters(run, kernel_clusters(run, clusters, seed), clusters)
    else:
        notes.append(
            "no kernel clusters, SCF or LRE pictures: this model has no kernel prediction (U-Net baseline)"
        )
    if has_scf:
        images["scf_features"] = draw_scf(run, *scf_features(model, run, level), level)
    elif cfg.use_kpb:
        notes.append("no SCF picture: this model fuses features by concatenation (SCF off)")
    if cfg.use_lre:
        images["lre_attention"] = draw_lre_attention(run, lre_attention(run, point), point)
        notes.append(
            f"LRE query point (x={point[0]}, y={point[1]}) in input pixels; token grid "
            f"{run.inter['lre_grid'][0]}x{run.inter['lre_grid'][1]}"
        )
    elif cfg.use_kpb:
        notes.append("no LRE attention picture: this model has no Long-distance Reference Extractor")

    written = {
        key: save_image_atomic(img, out_dir / FILES[key], overwrite=True) for key, img in images.items()
    }
    index = out_dir / FILES["index"]
    write_atomic(index, render_index(written, notes))
    return {**written, "index": index}


def load_model(weights: str, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, str]:
    """(model, note for the page) from a release file or ``"default"``, loaded by the Harmonizer.

    Without shipped default weights, ``"default"`` is the Harmonizer's randomly initialised
    model (it warns): its pictures show the model's mechanics, not what training taught it.
    """
    from gknet.checkpoint import DEFAULT_WEIGHTS
    from gknet.harmonizer import Harmonizer

    if weights != "default":
        return Harmonizer.from_file(weights, device=device).model, f"weights: {weights}"
    if Path(DEFAULT_WEIGHTS).exists():
        note = f"weights: shipped default ({Path(DEFAULT_WEIGHTS).name})"
    else:
        note = (
            "WARNING: no trained weights are shipped yet, so this is a RANDOMLY INITIALISED model: the "
            "pictures show its mechanics, not what a trained model learnt (use --weights PATH)"
        )
    return Harmonizer.from_pretrained(device=device).model, note
