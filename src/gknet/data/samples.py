"""Sample records shared by the benchmark and folder datasets, and the training item they become.

A dataset is a sequence of :class:`Sample` (file paths only, cheap to list); images are
read through :mod:`gknet.io.images` when a sample is loaded, so a missing or
unreadable file surfaces as a :class:`GknetError` naming the path, at load time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from gknet.errors import GknetError
from gknet.io.images import load_mask, load_rgb, to_tensor_image


@dataclass(frozen=True)
class Sample:
    """One composite with its foreground mask and (optional) ground-truth target."""

    name: str  # the composite's file name, unique within its subset
    subset: str
    composite: Path
    mask: Path
    target: Path | None = None

    def load(self) -> tuple[Image.Image, Image.Image, Image.Image | None]:
        """(composite RGB, mask L, target RGB or None); all three must have the same size."""
        composite = load_rgb(self.composite)
        mask = load_mask(self.mask)
        target = load_rgb(self.target) if self.target is not None else None
        for other, path in ((mask, self.mask), (target, self.target)):
            if other is not None and other.size != composite.size:
                raise GknetError(
                    f"size mismatch: {path} is {other.size[0]}x{other.size[1]} but "
                    f"{self.composite} is {composite.size[0]}x{composite.size[1]}"
                )
        return composite, mask, target


def triplet_item(images: list[Image.Image], name: str) -> dict:
    """(composite, mask, target) PIL images -> a training item."""
    composite, mask, target = images
    return {
        "composite": to_tensor_image(composite),
        "mask": (to_tensor_image(mask) > 0.5).float(),
        "target": to_tensor_image(target),
        "name": name,
    }


class SampleDataset(Sequence):
    """A list of samples plus the problems found while listing them.

    ``problems`` holds ``(path, message)`` pairs for inputs that could not be paired up
    (for example a composite without a mask); consumers report them as failed files.
    """

    def __init__(self, samples: list[Sample], problems: list[tuple[Path, str]] | None = None):
        self.samples = samples
        self.problems = problems or []

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index):
        return self.samples[index]

    def load(self, index: int) -> tuple[Image.Image, Image.Image, Image.Image | None]:
        """Loaded PIL triplet (composite, mask, target) of sample ``index``."""
        return self.samples[index].load()

    @property
    def subsets(self) -> list[str]:
        """Subset names in order of first appearance."""
        return list(dict.fromkeys(s.subset for s in self.samples))
