"""The pictures (paper Figures 9-11, change map, side by side), drawn with matplotlib at exact sizes."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from gknet.explain.capture import Capture

SCF_PANELS = 16

# Figure layout in pixels at DPI: exact sizes, so every picture's size is predictable.
DPI = 100
PANEL = 256  # width of an image panel (height follows the image's aspect ratio)
SMALL_PANEL = 160  # SCF feature-map panels
PAD = 10
TITLE = 30  # room above each panel for its title
HEADER = 46  # room for the figure title and its subtitle
COLORBAR = 80  # colour bar strip on the right (bar + ticks + label)


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
    cap: Capture,
    title: str,
    image: torch.Tensor | None = None,
    dim: bool = False,
    outline: bool = True,
) -> None:
    """Draw the composite (or ``image``), dimmed to grey under overlays, with the mask outlined."""
    rgb = _rgb(cap.composite if image is None else image)
    if dim:
        rgb = np.repeat(rgb.mean(axis=2, keepdims=True), 3, axis=2) * 0.6 + 0.2
    ax.imshow(rgb, interpolation="bilinear")
    if outline:
        ax.contour(cap.mask[0, 0].numpy(), levels=[0.5], colors="white", linewidths=1.0)
    ax.set_title(title, fontsize=10)


def _mark(ax, xy: tuple[float, float]) -> None:
    x, y = xy
    ax.plot(x, y, marker="o", markersize=10, markerfacecolor="none", markeredgecolor="cyan", mew=2)
    ax.plot(x, y, marker="+", markersize=10, color="cyan", mew=1.5)


def draw_side_by_side(cap: Capture) -> Image.Image:
    grid = _Grid(1, 2, cap.size[0] / cap.size[1], "Composite | harmonized")
    _show_image(grid.axes[0][0], cap, "composite (mask outlined)")
    _show_image(grid.axes[0][1], cap, "harmonized", image=cap.output, outline=False)
    return grid.to_image()


def draw_change_map(cap: Capture) -> Image.Image:
    change = (cap.output - cap.composite).abs().mean(dim=1)[0].numpy() * 255
    grid = _Grid(1, 1, cap.size[0] / cap.size[1], "Change map", "|harmonized - composite|", colorbar=True)
    ax = grid.axes[0][0]
    im = ax.imshow(change, cmap="magma", vmin=0, vmax=max(1.0, float(change.max())), interpolation="nearest")
    mask = cap.mask[0, 0].numpy()
    ax.contour(mask, levels=[0.5], colors="cyan", linewidths=0.8)
    inside = mask > 0.5 if (mask > 0.5).any() else mask > 0  # a mask thinner than a picture pixel
    mean = f"{change[inside].mean():.1f}" if inside.any() else "n/a"
    ax.set_title(f"max {change.max():.1f}, mean in mask {mean}", fontsize=10)
    grid.colorbar(im, "mean abs. change over RGB (0-255)")
    return grid.to_image()


def draw_kernel_clusters(cap: Capture, labels: list[torch.Tensor], k: int) -> Image.Image:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"].resampled(k)
    grid = _Grid(
        1,
        len(labels) + 1,
        cap.size[0] / cap.size[1],
        "Harmony-kernel clusters",
        f"K-means (K={k}) over each pixel's predicted kernel; level 1 = deepest",
    )
    _show_image(grid.axes[0][0], cap, "composite")
    for j, (lab, level) in enumerate(zip(labels, cap.inter.kernels, strict=True)):
        ax = grid.axes[0][j + 1]
        stride, kern = level.stride, level.kernels
        _show_image(
            ax,
            cap,
            f"level {j + 1}: 1/{stride} res, {kern.shape[1]}ch x {kern.shape[2]} taps",
            dim=True,
            outline=False,
        )
        ax.imshow(
            cap.to_pixels(lab, stride, "nearest"),
            cmap=cmap,
            vmin=-0.5,
            vmax=k - 0.5,
            alpha=0.7,
            interpolation="nearest",
        )
        ax.contour(cap.mask[0, 0].numpy(), levels=[0.5], colors="white", linewidths=1.0)
    return grid.to_image()


def draw_lre_attention(cap: Capture, maps: torch.Tensor, point: tuple[int, int]) -> Image.Image:
    """One panel per layer (rows) and head (columns); attention in units of the uniform weight 1/T."""
    layers, heads, gh, gw = maps.shape
    stride = cap.inter.lre_stride
    relative = maps * gh * gw
    vmax = float(relative.max())
    grid = _Grid(
        layers,
        heads,
        cap.size[0] / cap.size[1],
        "LRE attention",
        f"from point (x={point[0]}, y={point[1]}); one map per layer (rows) and head (columns)",
        colorbar=True,
    )
    for layer in range(layers):
        for head in range(heads):
            ax = grid.axes[layer][head]
            _show_image(ax, cap, f"layer {layer + 1}, head {head + 1}", dim=True)
            im = ax.imshow(
                cap.to_pixels(relative[layer, head], stride, "bilinear"),
                cmap="inferno",
                vmin=0,
                vmax=vmax,
                alpha=0.75,
                interpolation="bilinear",
            )
            _mark(ax, cap.to_display(point))
    grid.colorbar(im, "attention x tokens (1 = uniform)")
    return grid.to_image()


def draw_scf(cap: Capture, maps: torch.Tensor, weights: torch.Tensor, stride: int, level: int) -> Image.Image:
    """Channels with the highest and the lowest S_E, each map scaled to its own range."""
    order = torch.argsort(weights, descending=True)
    shown = f"all {len(weights)} channels"
    if len(order) > SCF_PANELS:
        order = torch.cat([order[: SCF_PANELS // 2], order[-(SCF_PANELS // 2) :]])
        shown = f"the {SCF_PANELS // 2} highest and lowest of {len(weights)} channels"
    cols = min(4, len(order))
    rows = math.ceil(len(order) / cols)
    grid = _Grid(
        rows,
        cols,
        cap.size[0] / cap.size[1],
        f"SCF feature maps, level {level}",
        f"Conv(F_E): {shown} by channel weight S_E (red)",
        panel=SMALL_PANEL,
    )
    for i, ax in enumerate(ax for row in grid.axes for ax in row):
        if i >= len(order):
            continue
        c = int(order[i])
        ax.imshow(cap.to_pixels(maps[c], stride, "bilinear"), cmap="viridis", interpolation="bilinear")
        ax.contour(cap.mask[0, 0].numpy(), levels=[0.5], colors="white", linewidths=0.8)
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
