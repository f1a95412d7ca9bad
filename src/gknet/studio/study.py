"""The images of the user study and every method's result for them.

A study set is a folder with ``composites/`` and ``masks/`` paired by file stem (for example
the Lalonde composites). Built-in methods (``composite``, ``reinhard``, ``histogram`` and the
loaded GKNet model) are computed on first request and cached as PNG files in
``cache_dir/<method>/<stem>.png``; a registered folder method (``gknet study add``) is read
from its folder, where result files share the composites' stems.

Every result is served as a PNG without metadata, whatever its file's format, so that nothing
but the pixels tells the methods apart. A registered file is served only while it is a regular
file inside its folder (a symlink out of the folder is not followed). A result that cannot be
produced (unreadable composite, result file deleted or corrupt) is logged on one line and left
out of later pairs.
"""

from __future__ import annotations

import io
import logging
import random
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from PIL import Image

from gknet.data import FolderDataset, match_by_stem
from gknet.errors import GknetError
from gknet.evaluation.baselines import BASELINES, get_baseline
from gknet.io.atomic import remove_stale_temporaries
from gknet.io.images import load_rgb, save_image_atomic, to_pil_image, to_tensor_image

LOG = logging.getLogger("gknet.studio")

ImageMethod = Callable[[Image.Image, Image.Image], Image.Image]
MODEL_METHOD = "gknet"
BUILTIN_METHODS = (*BASELINES, MODEL_METHOD)
DEFAULT_METHODS = ("composite", "reinhard", MODEL_METHOD)
# A cache PNG is written in well under a second: a temporary untouched this long was left by a
# studio killed mid-write (the cache may be shared by several live studios).
STALE_TEMPORARY_S = 3600.0


class UnavailableResult(GknetError):
    """A method's result for a study image cannot be shown; the message is safe for any client."""


def png_bytes(img: Image.Image) -> bytes:
    """RGB pixels as a PNG with no metadata (encoded as the cache files are)."""
    img = img.convert("RGB")
    img.info = {}  # no ICC profile, EXIF or text chunks carried over from the source file
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


def baseline_method(name: str) -> ImageMethod:
    """A tensor baseline of :mod:`gknet.evaluation.baselines` as a PIL -> PIL function."""
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
        self._roots = {name: Path(folder).resolve() for name, folder in (folders or {}).items()}
        self.folders = {name: self._results_in(name) for name in self._roots}
        # Results of a different model must not be served from the cache of another one.
        tag = f"-{model_tag}" if model_tag else ""
        self._cache_names = {name: name + tag if name == MODEL_METHOD else name for name in self.methods}
        for name in self._cache_names.values():  # left by studios killed mid-write, not by live ones
            remove_stale_temporaries(self.cache_dir / name, older_than_s=STALE_TEMPORARY_S)
        self._lock = threading.Lock()
        self._unavailable: set[tuple[str, str]] = set()

    def _results_in(self, method: str) -> dict[str, Path]:
        """Image stem -> result file, for the study images that the folder has a servable result for."""
        matched = match_by_stem(self._roots[method]).matched
        results = {stem: paths[0] for stem, paths in matched.items() if stem in self.samples}
        for stem, path in list(results.items()):
            try:
                self._servable(method, path)
            except UnavailableResult as exc:
                LOG.warning("study: %s for %s left out of the study: %s (%s)", method, stem, exc, path)
                del results[stem]
        return results

    def _servable(self, method: str, path: Path) -> Path:
        """The real file behind a registered result: a regular file inside the method's folder."""
        try:
            real = path.resolve(strict=True)
            regular = real.is_file()
        except (OSError, RuntimeError):  # deleted, or a symlink loop
            raise UnavailableResult(f"the result file of {method!r} is gone") from None
        if not (regular and real.is_relative_to(self._roots[method])):
            raise UnavailableResult(f"the result file of {method!r} is not a regular file in its folder")
        return real

    @property
    def method_names(self) -> list[str]:
        return [*self.methods, *self.folders]

    def methods_for(self, stem: str) -> list[str]:
        """Methods that have a result for image ``stem`` (none found unavailable so far)."""
        names = [*self.methods, *(name for name, files in self.folders.items() if stem in files)]
        return [name for name in names if (name, stem) not in self._unavailable]

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
            return self._servable(method, self.folders[method][stem])
        if method not in self.methods or stem not in self.samples:
            raise GknetError(f"unknown method or image: {method!r}, {stem!r}")
        path = self.cache_dir / self._cache_names[method] / f"{stem}.png"
        if not path.exists():
            with self._lock:  # one computation at a time: the model already uses every core
                if not path.exists():
                    composite, mask, _ = self.samples[stem].load()
                    save_image_atomic(self.methods[method](composite, mask), path, overwrite=True)
        return path

    def png(self, method: str, stem: str) -> bytes:
        """``method``'s result for image ``stem`` as PNG bytes; UnavailableResult (a message without
        server paths) if it cannot be produced, and the pair (method, image) is not drawn again."""
        try:
            path = self.result(method, stem)
            return path.read_bytes() if method in self.methods else png_bytes(load_rgb(path))
        except (GknetError, OSError) as exc:
            # A built-in method fails for an unreadable composite: so would the other built-ins.
            self._unavailable.update(
                (name, stem) for name in (self.methods if method in self.methods else [method])
            )
            LOG.warning("study: %s for %s left out of the study: %s", method, stem, exc)
            if isinstance(exc, UnavailableResult):
                raise
            raise UnavailableResult(f"the result of {method!r} for image {stem!r} cannot be read") from None
