"""The images of the user study and every method's result for them.

A study set is a folder with ``composites/`` and ``masks/`` paired by file stem (for example
the Lalonde composites). Built-in methods (``composite``, ``reinhard``, ``histogram`` and the
loaded GKNet model) are computed on first request and cached as PNG files in
``cache_dir/<method>/<stem>.png``; a registered folder method (``gknet study add``) is read
from its folder, where result files share the composites' stems.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from PIL import Image

from gknet.baselines import BASELINES, get_baseline
from gknet.data import FolderDataset, match_by_stem
from gknet.data.imageio import save_image_atomic, to_pil_image, to_tensor_image
from gknet.errors import GknetError

ImageMethod = Callable[[Image.Image, Image.Image], Image.Image]
MODEL_METHOD = "gknet"
BUILTIN_METHODS = (*BASELINES, MODEL_METHOD)
DEFAULT_METHODS = ("composite", "reinhard", MODEL_METHOD)


def baseline_method(name: str) -> ImageMethod:
    """A tensor baseline of :mod:`gknet.baselines` as a PIL -> PIL function."""
    import torch

    fn = get_baseline(name)

    def run(composite: Image.Image, mask: Image.Image) -> Image.Image:
        with torch.no_grad():
            out = fn(to_tensor_image(composite)[None], to_tensor_image(mask)[None])[0]
        return to_pil_image(out)

    return run


def builtin_methods(names: Sequence[str], harmonizer: ImageMethod | None) -> dict[str, ImageMethod]:
    """Computable methods by name; ``gknet`` needs a harmonizer and is left out without one."""
    methods: dict[str, ImageMethod] = {}
    for name in names:
        if name == MODEL_METHOD:
            if harmonizer is not None:
                methods[name] = harmonizer
        elif name in BASELINES:
            methods[name] = baseline_method(name)
        else:
            raise GknetError(f"unknown study method {name!r}; built-in: {', '.join(BUILTIN_METHODS)}")
    return methods


class StudySet:
    """Study images, the methods compared on them, and the cache of their results."""

    def __init__(
        self,
        study_dir: str | Path,
        cache_dir: str | Path,
        methods: Mapping[str, ImageMethod],
        folders: Mapping[str, Path] | None = None,
        model_tag: str = "",
    ):
        study_dir = Path(study_dir)
        dataset = FolderDataset(study_dir / "composites", study_dir / "masks")
        self.samples = {sample.composite.stem: sample for sample in dataset}
        if not self.samples:
            raise GknetError(f"no composite has a mask in {study_dir} (expected composites/ and masks/)")
        self.cache_dir = Path(cache_dir)
        self.methods = dict(methods)
        clash = set(self.methods) & set(folders or {})
        if clash:
            raise GknetError(f"registered methods clash with built-in methods: {', '.join(sorted(clash))}")
        self.folders = {name: self._results_in(folder) for name, folder in (folders or {}).items()}
        # Results of a different model must not be served from the cache of another one.
        tag = f"-{model_tag}" if model_tag else ""
        self._cache_names = {name: name + tag if name == MODEL_METHOD else name for name in self.methods}
        self._lock = threading.Lock()

    def _results_in(self, folder: Path) -> dict[str, Path]:
        """Image stem -> result file, for the study images that ``folder`` has a result for."""
        return {
            stem: paths[0] for stem, paths in match_by_stem(folder).matched.items() if stem in self.samples
        }

    @property
    def method_names(self) -> list[str]:
        return [*self.methods, *self.folders]

    def methods_for(self, stem: str) -> list[str]:
        """Methods that have a result for image ``stem``."""
        return [*self.methods, *(name for name, files in self.folders.items() if stem in files)]

    def random_pair(self, rng: random.Random) -> tuple[str, str, str]:
        """(image stem, left method, right method): a uniformly random image and two of its methods."""
        stems = [stem for stem in self.samples if len(self.methods_for(stem)) >= 2]
        if not stems:
            raise GknetError("the study needs at least two methods with results for the same image")
        stem = rng.choice(stems)
        left, right = rng.sample(self.methods_for(stem), 2)
        return stem, left, right

    def result(self, method: str, stem: str) -> Path:
        """Path of ``method``'s result for image ``stem``, computed and cached if needed."""
        if method in self.folders:
            if stem not in self.folders[method]:
                raise GknetError(f"method {method!r} has no result for {stem!r}")
            return self.folders[method][stem]
        if method not in self.methods or stem not in self.samples:
            raise GknetError(f"unknown method or image: {method!r}, {stem!r}")
        path = self.cache_dir / self._cache_names[method] / f"{stem}.png"
        if not path.exists():
            with self._lock:  # one computation at a time: the model already uses every core
                if not path.exists():
                    composite, mask, _ = self.samples[stem].load()
                    save_image_atomic(self.methods[method](composite, mask), path, overwrite=True)
        return path
