"""Users' own data: a folder of composites, a folder of masks and optionally targets.

Files are paired by stem (``photo1.jpg`` <-> ``photo1.png``); only image files are
considered (suffixes in :data:`gknet.io.images.IMAGE_SUFFIXES`, any case).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gknet.data.samples import Sample, SampleDataset
from gknet.errors import GknetError
from gknet.io.images import IMAGE_SUFFIXES


def _images_by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise GknetError(f"not a directory: {folder}")
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise GknetError(f"cannot read folder {folder}: {exc.strerror or exc}") from None
    found: dict[str, Path] = {}
    for path in entries:
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        if path.stem in found:
            raise GknetError(f"two images share the stem {path.stem!r}: {found[path.stem]} and {path}")
        found[path.stem] = path
    return found


@dataclass
class StemMatch:
    """Result of :func:`match_by_stem`.

    ``matched``: stem -> one path per input folder (same order as the folders), sorted by
    stem. ``unmatched``: image files whose stem is missing from at least one other folder,
    with a message naming the folders that lack it.
    """

    matched: dict[str, tuple[Path, ...]] = field(default_factory=dict)
    unmatched: list[tuple[Path, str]] = field(default_factory=list)

    def report(self) -> str:
        """One line per unmatched file, or an empty string."""
        return "\n".join(f"{path}: {message}" for path, message in self.unmatched)


def match_by_stem(*dirs: str | Path) -> StemMatch:
    """Pair the image files of several folders by file stem.

    Raises GknetError if a folder is missing, holds no images, or has two images with
    the same stem (ambiguous pairing).
    """
    if not dirs:
        raise GknetError("match_by_stem needs at least one folder")
    folders = [Path(d) for d in dirs]
    by_stem = [_images_by_stem(folder) for folder in folders]
    for folder, images in zip(folders, by_stem, strict=True):
        if not images:
            raise GknetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    result = StemMatch()
    all_stems = sorted(set().union(*by_stem))
    for stem in all_stems:
        present = [images.get(stem) for images in by_stem]
        if all(p is not None for p in present):
            result.matched[stem] = tuple(present)
            continue
        lacking = ", ".join(str(folder) for folder, p in zip(folders, present, strict=True) if p is None)
        for path in present:
            if path is not None:
                result.unmatched.append((path, f"no file with stem {stem!r} in {lacking}"))
    return result


class FolderDataset(SampleDataset):
    """Composites paired with masks (and targets, if given) by file stem.

    Composites lacking a mask or target are listed in ``problems`` (and are not samples);
    masks and targets without a composite are ignored. Every sample's subset name is
    ``subset`` (default ``"folder"``).
    """

    def __init__(
        self,
        composites: str | Path,
        masks: str | Path,
        targets: str | Path | None = None,
        subset: str = "folder",
    ):
        dirs = [composites, masks] + ([targets] if targets is not None else [])
        match = match_by_stem(*dirs)
        samples = [
            Sample(
                name=paths[0].name,
                subset=subset,
                composite=paths[0],
                mask=paths[1],
                target=paths[2] if targets is not None else None,
            )
            for paths in match.matched.values()
        ]
        composites = Path(composites)
        super().__init__(samples, [(p, msg) for p, msg in match.unmatched if p.parent == composites])
