"""How well does the full-resolution colour transfer carry a low-resolution result to full size?

By default the "network output" is an oracle, the real image shrunk to the network
resolution and blended with the shrunk mask (what a perfect model would return): this
isolates the transfer step. With ``--weights PATH|default`` it is a trained model's output.
Compared at full resolution against the real image, after rounding to 8 bits as a saved
output would be:

- composite:  the input itself;
- naive:      the low-resolution result upsampled bilinearly, pasted inside the mask;
- transfer:   gknet.inference.fullres (local affine colour transform fitted at low resolution).

Detail is measured inside the mask (dilated by nothing, thresholded at 0.5): the energy of
the image gradient relative to the real image's (1.0 = as sharp as the real image), and the
PSNR of the high-frequency band (image minus its 5x5 box blur) against the real image's.

Usage: python benchmarks/fullres_transfer.py [--root ../shared/examples/iharmony4_mini] [--weights default]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gknet.config import FullResConfig
from gknet.evaluation.metrics import image_metrics
from gknet.inference.fullres import resize, transfer_to_full_resolution
from gknet.io.images import load_mask, load_rgb, to_tensor_image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "examples" / "iharmony4_mini"


def _rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _quantise(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round()


def _gradient_energy(x: torch.Tensor, fg: torch.Tensor) -> float:
    dx = (x[..., :, 1:] - x[..., :, :-1]).pow(2) * fg[..., :, 1:]
    dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2) * fg[..., 1:, :]
    return float(dx.double().sum() + dy.double().sum())


def _high_pass(x: torch.Tensor) -> torch.Tensor:
    return x - F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)


def detail_scores(pred255: torch.Tensor, real255: torch.Tensor, fg: torch.Tensor) -> dict[str, float]:
    ratio = _gradient_energy(pred255, fg) / _gradient_energy(real255, fg)
    hf_err = (_high_pass(pred255) - _high_pass(real255)).pow(2) * fg
    hf_mse = float(hf_err.double().sum() / (3 * fg.double().sum()))
    return {"grad_ratio": ratio, "hf_psnr": 10 * torch.log10(torch.tensor(255.0**2 / hf_mse)).item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--radius", type=int, default=FullResConfig.radius)
    parser.add_argument("--eps", type=float, default=FullResConfig.eps)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default: 2)")
    parser.add_argument("--weights", help="release weights (PATH or 'default') instead of the oracle")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    sub = args.root / "HAdobe5k"
    comp = to_tensor_image(load_rgb(sub / "composite_images" / "a0002_1_4.jpg"))[None]
    mask = to_tensor_image(load_mask(sub / "masks" / "a0002_1.png"))[None]
    real = to_tensor_image(load_rgb(sub / "real_images" / "a0002.jpg"))[None]
    low = (args.resolution, args.resolution)
    low_comp, low_mask = resize(comp, low), resize(mask, low)
    if args.weights:
        from gknet.inference.harmonizer import Harmonizer

        # At the network resolution the Harmonizer returns the model's own output.
        oracle = Harmonizer.from_pretrained(args.weights, resolution=args.resolution).harmonize_tensor(
            low_comp, low_mask
        )
    else:
        oracle = low_mask * resize(real, low) + (1 - low_mask) * low_comp

    naive = comp + mask * (resize(oracle, comp.shape[-2:]) - comp)
    rss_before = _rss_mib()
    start = time.perf_counter()
    settings = FullResConfig(radius=args.radius, eps=args.eps)
    ours = transfer_to_full_resolution(comp, mask, low_comp, oracle, low_mask, settings)
    seconds = time.perf_counter() - start
    extra_mib = _peak_rss_mib() - rss_before

    real255, fg = _quantise(real), (mask > 0.5).float()
    height, width = comp.shape[-2:]
    source = f"model {args.weights}" if args.weights else "oracle"
    print(f"image {width}x{height}, {source} at {args.resolution}px, radius {args.radius}, eps {args.eps}")
    print(f"{'method':<10} {'MSE':>9} {'fMSE':>9} {'PSNR':>7} {'grad_ratio':>11} {'HF-PSNR':>8}")
    for name, pred in (("composite", comp), ("naive", naive), ("transfer", ours)):
        pred255 = _quantise(pred)
        m = {k: v.item() for k, v in image_metrics(pred255, real255, mask).items()}
        d = detail_scores(pred255, real255, fg)
        scores = f"{m['mse']:9.2f} {m['fmse']:9.2f} {m['psnr']:7.2f}"
        print(f"{name:<10} {scores} {d['grad_ratio']:11.3f} {d['hf_psnr']:8.2f}")
    print(
        f"transfer: {seconds:.2f} s on {args.threads} thread(s), "
        f"peak RSS above the loaded images: {max(extra_mib, 0):.0f} MiB"
    )


if __name__ == "__main__":
    main()
