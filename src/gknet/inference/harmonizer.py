"""Harmonizer: the public inference API. Any image type, any size, full-resolution output.

    from gknet import Harmonizer
    h = Harmonizer.from_pretrained()          # shipped "gknet_small", a release file or an .onnx export
    result = h(composite, mask)               # PIL image, numpy array or torch tensor
    softer = h(composite, mask, strength=0.5) # half the model's change (0 = none, up to 1.5)

The network runs on a ``resolution`` x ``resolution`` copy of the image (the whole image
resized, as in training and in the iHarmony4 protocol); its colour change is carried to
the input's own size by :mod:`gknet.inference.fullres`, so the result keeps every detail of the
input. The resolution and the transfer's parameters come from the release file's
inference settings (:class:`gknet.config.InferenceConfig`). The mask is used as alpha:
soft values blend, pixels where it is 0 come back bit-for-bit unchanged, and an empty
mask returns the input with a warning.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gknet.config import InferenceConfig
from gknet.errors import GknetError
from gknet.inference.fullres import resize, transfer_to_full_resolution
from gknet.inference.strength import apply_strength, check_strength
from gknet.io.images import mask_image, rgb_image, to_pil_image, to_tensor_image, to_uint8_array
from gknet.models import Intermediates
from gknet.models.memory import check_resolution
from gknet.runtime.device import resolve_device

BACKENDS = ("auto", "torch", "onnxruntime")


class EmptyMaskWarning(UserWarning):
    """The mask selects nothing: the output is the input."""


class Harmonizer:
    """A model wrapped for inference on users' images.

    ``model(composite [B,3,h,w], mask [B,1,h,w]) -> [B,3,h,w]`` in [0, 1]; ``settings`` are the
    inference settings (defaults: :class:`gknet.config.InferenceConfig`), ``resolution``
    overrides theirs; ``device`` is ``"auto"``, ``"cpu"``, ``"cuda"`` or a torch.device.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        resolution: int | None = None,
        device: str | torch.device = "auto",
        settings: InferenceConfig | None = None,
        name: str = "model",
    ):
        settings = settings or InferenceConfig()
        if resolution is not None:
            if not isinstance(resolution, int) or isinstance(resolution, bool):
                raise GknetError(f"resolution must be an integer, got {resolution!r}")
            settings = dataclasses.replace(settings, resolution=resolution)  # validated: ConfigError
        if getattr(model, "cfg", None) is not None:
            check_resolution(model.cfg, settings.resolution)
        self.settings, self.name = settings, name
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        # oneDNN's convolutions run in channels-last layout: a torch network on the CPU is
        # converted to it, in place (gknet_small at 256 px on 2 threads: 42 ms against 49 ms per
        # pass, same outputs up to float rounding). An ONNX Runtime model has no parameters
        # and is left alone.
        self.channels_last = self.device.type == "cpu" and next(model.parameters(), None) is not None
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    @property
    def resolution(self) -> int:
        """Side of the square network pass, in pixels."""
        return self.settings.resolution

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path = "gknet_small",
        *,
        resolution: int | None = None,
        device: str | torch.device = "auto",
        backend: str = "auto",
    ) -> Harmonizer:
        """Release weights by shipped name (``"gknet_small"``, ``"default"``) or by path, or an
        ONNX export (a path ending in .onnx, written by ``gknet export --onnx``).

        The release's JSON (an export's metadata) sets the model, the network resolution
        (``resolution`` overrides it), the input normalisation and the full-resolution transfer.
        ``backend``: ``"torch"``, ``"onnxruntime"`` (release weights are exported to ONNX in
        memory first, which takes seconds) or ``"auto"`` (ONNX Runtime for .onnx files, torch
        otherwise).
        """
        from gknet.inference.release import read_release, weights_path

        if backend not in BACKENDS:
            raise GknetError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        path = weights_path(name_or_path)
        if path.suffix.lower() == ".onnx":
            if backend == "torch":
                raise GknetError(f"{path} is an ONNX model: it runs with backend 'onnxruntime', not 'torch'")
            return cls._on_onnxruntime(path, resolution, device)
        model, _cfg, settings, meta = read_release(path)
        name = str((meta or {}).get("name") or path.stem)
        if backend == "onnxruntime":
            from gknet.inference.onnx_backend import export_onnx

            return cls._on_onnxruntime(export_onnx(model, settings=settings, name=name), resolution, device)
        return cls(model, resolution, device, settings=settings, name=name)

    @classmethod
    def _on_onnxruntime(cls, source: Path | bytes, resolution: int | None, device) -> Harmonizer:
        """An ONNX export run by ONNX Runtime, with the inference settings stored in it."""
        from gknet.inference.onnx_backend import OnnxRuntimeModel

        runtime = OnnxRuntimeModel(source, device)
        return cls(runtime, resolution, runtime.device, settings=runtime.settings, name=runtime.name)

    def harmonize_tensor(
        self, composite: torch.Tensor, mask: torch.Tensor, strength: float = 1.0
    ) -> torch.Tensor:
        """composite [B, 3, H, W] float in [0, 1], mask [B, 1, H, W] in [0, 1] -> [B, 3, H, W].

        Same dtype and device as ``composite``; where ``mask`` is 0 the output equals it exactly.
        ``strength``: the share of the model's change applied (:mod:`gknet.inference.strength`).
        """
        return self.harmonize_tensors([composite], [mask], strength=strength)[0]

    def harmonize_tensors(
        self,
        composites: list[torch.Tensor],
        masks: list[torch.Tensor],
        labels: list[str] | None = None,
        strength: float = 1.0,
    ) -> list[torch.Tensor]:
        """Several :meth:`harmonize_tensor` inputs, each of its own size, with one network pass.

        The network sees every input at ``resolution`` x ``resolution``, so the resized inputs
        are stacked into one batch; each result is then carried to its input's own size.
        ``labels`` name the inputs in warnings. Equal to harmonizing one input at a time up to
        float rounding (the convolution kernels may sum in another order for another batch size).
        ``strength`` scales every result's change (0 = the composite, 1 = the model, up to 1.5).
        """
        strength = check_strength(strength)
        results = self._harmonize(composites, masks, labels, trace=False)[0]
        return [
            apply_strength(c, out, m.to(c.device), strength)
            for c, out, m in zip(composites, results, masks, strict=True)
        ]

    def trace_tensor(self, composite: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, Intermediates]:
        """``harmonize_tensor``'s result and the intermediates of its network pass, in one pass.

        The intermediates are at the network resolution (see :class:`gknet.models.Intermediates`).
        """
        (out,), inter = self._harmonize([composite], [mask], None, trace=True)
        if inter is None:
            raise GknetError("the mask is empty: the network does not run, there is nothing to trace")
        return out, inter

    def _network(self, composite: torch.Tensor, mask: torch.Tensor, trace: bool):
        if self.channels_last:
            composite = composite.contiguous(memory_format=torch.channels_last)
            mask = mask.contiguous(memory_format=torch.channels_last)
        if not trace:
            return self.model(composite, mask), None
        if not hasattr(self.model, "trace"):
            raise GknetError(f"{type(self.model).__name__} cannot report its intermediates (no trace method)")
        inter = self.model.trace(composite, mask)
        return inter.output, inter

    def _harmonize(
        self, composites: list[torch.Tensor], masks: list[torch.Tensor], labels: list[str] | None, trace: bool
    ) -> tuple[list[torch.Tensor], Intermediates | None]:
        labels = labels or [None] * len(composites)
        if not len(composites) == len(masks) == len(labels):
            raise GknetError(f"got {len(composites)} composites, {len(masks)} masks and {len(labels)} labels")
        results, work = [], []
        for composite, mask, label in zip(composites, masks, labels, strict=True):
            empty = self._check_pair(composite, mask, label)
            results.append(composite.clone() if bool(empty.all()) else None)
            if results[-1] is None:
                work.append((len(results) - 1, composite, mask))
        if not work:
            return results, None
        with torch.no_grad():
            prepared = [self._network_inputs(composite, mask) for _, composite, mask in work]
            low_out, inter = self._network(
                torch.cat([p[2] for p in prepared]), torch.cat([p[3] for p in prepared]), trace
            )
            low_outs = low_out.split([len(p[0]) for p in prepared])
            for (index, composite, mask), inputs, low in zip(work, prepared, low_outs, strict=True):
                comp, alpha, low_comp, low_alpha = inputs
                out = self._full_resolution(comp, alpha, low_comp, low, low_alpha)
                if not bool(torch.isfinite(out).all()):
                    raise GknetError("the model produced NaN or infinite values: its weights are broken")
                out = out.to(composite.device, composite.dtype)
                results[index] = torch.where(mask.to(composite.device) > 0, out, composite)
        return results, inter

    def _check_pair(self, composite: torch.Tensor, mask: torch.Tensor, label: str | None) -> torch.Tensor:
        """Validate shapes and warn about empty masks; returns which masks of the batch are empty."""
        if composite.ndim != 4 or composite.shape[1] != 3 or not composite.is_floating_point():
            raise GknetError(f"composite must be a float tensor [B, 3, H, W], got {_describe(composite)}")
        b, _, h, w = composite.shape
        if tuple(mask.shape) != (b, 1, h, w):
            raise GknetError(f"mask must be [B, 1, H, W] = [{b}, 1, {h}, {w}], got {list(mask.shape)}")
        _check_unit_range(composite, "composite")  # as __call__ does: values are never clamped silently
        _check_unit_range(mask, "mask")
        empty = (mask.reshape(b, -1) <= 0).all(dim=1)
        for i in empty.nonzero().flatten().tolist():
            where = f" (image {i} of the batch)" if b > 1 else ""
            message = f"the mask is empty{where}: the output equals the input"
            warnings.warn(f"{label}: {message}" if label else message, EmptyMaskWarning, stacklevel=4)
        return empty

    def _network_inputs(self, composite: torch.Tensor, mask: torch.Tensor):
        """(composite, alpha) on the model's device and their ``resolution`` x ``resolution`` copies."""
        comp = composite.to(self.device, torch.float32)
        alpha = mask.to(self.device, torch.float32).clamp(0, 1)
        low = (self.resolution, self.resolution)
        return comp, alpha, resize(comp, low), resize(alpha, low).clamp(0, 1)

    def _full_resolution(self, comp, alpha, low_comp, low_out, low_alpha) -> torch.Tensor:
        """The network output carried to the input's own size (itself if that is the network's)."""
        if comp.shape[-2:] == low_out.shape[-2:]:
            return low_out
        return transfer_to_full_resolution(comp, alpha, low_comp, low_out, low_alpha, self.settings.fullres)

    def to_tensors(
        self, composite, mask, *, threshold: float | None = None, resize_mask: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, Callable[[torch.Tensor], Image.Image | np.ndarray | torch.Tensor]]:
        """Validate and convert one :meth:`__call__` input: (composite [B,3,H,W], mask [B,1,H,W], restore).

        ``restore`` turns a result tensor back into the composite's type (see :meth:`__call__`).
        """
        comp, restore = _composite_to_tensor(composite)
        _check_not_empty(comp, "composite")
        alpha = _mask_to_tensor(mask, comp.shape[0])
        _check_not_empty(alpha, "mask")
        if alpha.shape[-2:] != comp.shape[-2:]:
            if not resize_mask:
                (mh, mw), (ch, cw) = alpha.shape[-2:], comp.shape[-2:]
                raise GknetError(
                    f"mask is {mw}x{mh} but the composite is {cw}x{ch} "
                    "(pass --resize-mask / resize_mask=True to resize the mask)"
                )
            alpha = resize(alpha, tuple(comp.shape[-2:])).clamp(0, 1)
        if threshold is not None:
            if not 0 < threshold <= 1:
                raise GknetError(f"threshold must be in (0, 1], got {threshold}")
            alpha = (alpha >= threshold).to(alpha.dtype)
        return comp, alpha.to(comp.device), restore

    def __call__(
        self,
        composite,
        mask,
        *,
        threshold: float | None = None,
        resize_mask: bool = False,
        strength: float = 1.0,
    ) -> Image.Image | np.ndarray | torch.Tensor:
        """Harmonize one image; returns the composite's type, dtype and size.

        composite: PIL image (any mode; returns RGB), numpy array H x W x 3 (uint8 or float in
        [0, 1]) or torch tensor [3, H, W] / [B, 3, H, W] (float in [0, 1]).
        mask: PIL image, numpy array H x W (x 1) (bool, uint8, uint16 or float in [0, 1]) or
        tensor [H, W] / [1, H, W] / [B, 1, H, W]; soft values act as alpha.
        threshold: if given, the mask becomes binary (foreground where mask >= threshold).
        resize_mask: resize a mask of another size to the composite's instead of failing.
        strength: the share of the model's change applied, 0-1.5 (0 = the composite, 1 = the model).
        """
        strength = check_strength(strength)  # before any work
        comp, alpha, restore = self.to_tensors(composite, mask, threshold=threshold, resize_mask=resize_mask)
        return restore(self.harmonize_tensor(comp, alpha, strength))


def _describe(x) -> str:
    return f"{type(x).__name__} of shape {list(x.shape)} and dtype {x.dtype}"


def _composite_to_tensor(composite):
    """-> ([B, 3, H, W] float tensor, function turning a result tensor back into the input's type)."""
    if isinstance(composite, Image.Image):
        tensor = to_tensor_image(rgb_image(composite))[None]
        return tensor, lambda out: to_pil_image(out[0])
    if isinstance(composite, np.ndarray):
        if composite.ndim != 3 or composite.shape[2] != 3:
            raise GknetError(f"composite array must be H x W x 3, got {_describe(composite)}")
        if composite.dtype == np.uint8:
            tensor = torch.from_numpy(composite.astype(np.float32) / 255.0)
            return tensor.permute(2, 0, 1)[None], lambda out: to_uint8_array(out[0])
        if not np.issubdtype(composite.dtype, np.floating):
            raise GknetError(f"composite array must be uint8 or float in [0, 1], got dtype {composite.dtype}")
        _check_unit_range(composite, "composite")
        tensor = torch.from_numpy(np.ascontiguousarray(composite)).permute(2, 0, 1)[None]
        return tensor, lambda out: np.ascontiguousarray(out[0].permute(1, 2, 0).numpy())
    if isinstance(composite, torch.Tensor):
        if not composite.is_floating_point() or composite.ndim not in (3, 4) or composite.shape[-3] != 3:
            expected = "float [3, H, W] or [B, 3, H, W]"
            raise GknetError(f"composite tensor must be {expected}, got {_describe(composite)}")
        _check_unit_range(composite, "composite")
        if composite.ndim == 3:
            return composite[None], lambda out: out[0]
        return composite, lambda out: out
    kind = type(composite).__name__
    raise GknetError(f"composite must be a PIL image, numpy array or torch tensor, not {kind}")


def _mask_to_tensor(mask, batch: int) -> torch.Tensor:
    """Any supported mask -> float tensor [B, 1, H, W] in [0, 1]."""
    if isinstance(mask, Image.Image):
        return to_tensor_image(mask_image(mask))[None].expand(batch, -1, -1, -1)
    if isinstance(mask, np.ndarray):
        if mask.ndim == 3 and mask.shape[2] == 1:
            mask = mask[..., 0]
        if mask.ndim != 2:
            raise GknetError(f"mask array must be H x W or H x W x 1, got {_describe(mask)}")
        scale = {np.dtype(bool): 1.0, np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(mask.dtype)
        if scale is None and not np.issubdtype(mask.dtype, np.floating):
            expected = "bool, uint8, uint16 or float in [0, 1]"
            raise GknetError(f"mask array must be {expected}, got dtype {mask.dtype}")
        if scale is None:
            _check_unit_range(mask, "mask")
        mask = torch.from_numpy(mask.astype(np.float32) / (scale or 1.0))
    if not isinstance(mask, torch.Tensor):
        raise GknetError(f"mask must be a PIL image, numpy array or torch tensor, not {type(mask).__name__}")
    if mask.dtype == torch.bool:
        mask = mask.float()
    if not mask.is_floating_point() or mask.ndim not in (2, 3, 4) or (mask.ndim > 2 and mask.shape[-3] != 1):
        expected = "float [H, W], [1, H, W] or [B, 1, H, W]"
        raise GknetError(f"mask tensor must be {expected}, got {_describe(mask)}")
    _check_unit_range(mask, "mask")
    while mask.ndim < 4:
        mask = mask[None]
    if mask.shape[0] not in (1, batch):
        raise GknetError(f"a batch of {mask.shape[0]} masks for {batch} composites (give 1 or {batch} masks)")
    return mask.expand(batch, -1, -1, -1)


def _check_not_empty(x, name: str) -> None:
    if 0 in x.shape:
        raise GknetError(f"{name} is empty: shape {list(x.shape)} (an image needs at least 1x1 pixels)")


def _check_unit_range(x, name: str) -> None:
    """GknetError unless every value of ``x`` (array or tensor) is a number in [0, 1]."""
    _check_not_empty(x, name)
    lo, hi = float(x.min()), float(x.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):  # NaN propagates through min and max
        raise GknetError(f"{name} holds NaN or infinite values, not numbers in [0, 1]: the input is broken")
    if not (lo >= 0.0 and hi <= 1.0):
        raise GknetError(f"{name} values must lie in [0, 1], got [{lo:g}, {hi:g}] (use uint8 for 0-255 data)")
