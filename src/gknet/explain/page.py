"""index.html: every picture with its caption, then the notes."""

from __future__ import annotations

import html
from pathlib import Path

from gknet.config import ModelConfig

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


def describe_model(cfg: ModelConfig) -> str:
    """One line naming the architecture behind the pictures."""
    parts = [f"widths {list(cfg.widths)}"]
    if cfg.use_kpb:
        parts.append(f"{cfg.kpb_levels} modulated levels, {cfg.kernel_size}x{cfg.kernel_size} kernels")
    parts += [name for name, on in (("LRE", cfg.use_lre), ("SCF", cfg.use_scf)) if on]
    return "model: " + ", ".join(parts)
