"""The iHarmony4 benchmark layout (DoveNet, Cong et al. CVPR 2020).

::

    ROOT/<Subset>/composite_images/a_b_c.jpg   composite c of foreground b of photo a
    ROOT/<Subset>/masks/a_b.png                foreground b of photo a
    ROOT/<Subset>/real_images/a.jpg            the real photo (ground truth)
    ROOT/<Subset>_train.txt, <Subset>_test.txt one composite file name per line

Subsets: HCOCO, HAdobe5k, HFlickr, Hday2night, and any other folder laid out the same way
with its ``<Name>_<split>.txt`` list (for example ``RainNet_examples``).
"""

from __future__ import annotations

from pathlib import Path

from gknet.data.samples import Sample, SampleDataset
from gknet.errors import GknetError
from gknet.io.images import IMAGE_SUFFIXES

SUBSETS = ("HCOCO", "HAdobe5k", "HFlickr", "Hday2night")
SPLITS = ("train", "test")


def related_names(composite_name: str) -> tuple[str, str]:
    """Composite file name ``a_b_c.jpg`` -> (real image stem ``a``, mask stem ``a_b``).

    ``a`` may itself contain underscores; the last two fields are the foreground and
    composite indices.
    """
    stem = Path(composite_name).stem
    parts = stem.rsplit("_", 2)
    if len(parts) != 3 or not all(parts):
        raise GknetError(f"composite name {composite_name!r} does not follow the iHarmony4 a_b_c pattern")
    return parts[0], f"{parts[0]}_{parts[1]}"


def _find(folder: Path, stem: str, preferred: str) -> Path:
    """``folder/stem+preferred`` if present, else the same stem with another image suffix.

    Falls back to the preferred path so that a missing file is reported under the name
    the benchmark uses.
    """
    path = folder / f"{stem}{preferred}"
    if path.exists():
        return path
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.exists():
                return candidate
    return path


def canonical_subset(name: str, known: list[str]) -> str:
    """Case-insensitive subset name -> its spelling among ``known`` (unknown names unchanged)."""
    return next((subset for subset in known if subset.lower() == name.lower()), name)


def listed_subsets(root: Path, split: str) -> list[str]:
    """Subsets under ``root`` with a ``<Name>_<split>.txt`` list: iHarmony4's four first, then the rest.

    Another name counts only with its ``<Name>/composite_images/`` folder, so iHarmony4's
    combined ``IHD_<split>.txt`` list is not taken for a subset.
    """
    suffix = f"_{split}.txt"
    found = sorted(p.name[: -len(suffix)] for p in root.glob(f"?*{suffix}") if p.is_file())
    others = [s for s in found if s not in SUBSETS and (root / s / "composite_images").is_dir()]
    return [s for s in SUBSETS if s in found] + others


def _read_list(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: a byte-order mark is dropped
    except OSError as exc:
        raise GknetError(f"cannot read split list {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise GknetError(f"split list {path} is not UTF-8 text (byte {exc.start})") from None
    # Lines are file names; tolerate "Subset/composite_images/name.jpg" forms.
    return [Path(line.strip().replace("\\", "/")).name for line in lines if line.strip()]


class IHarmony4(SampleDataset):
    """Samples of the given subsets and split, in the order of the split lists.

    ``subsets=None`` takes every subset whose ``<Subset>_<split>.txt`` exists under root, and
    reports each subset folder (one holding ``composite_images/``) without that list in
    ``problems``; an explicitly requested subset without its list is an error.
    """

    def __init__(
        self, root: str | Path, subsets: list[str] | tuple[str, ...] | None = None, split: str = "test"
    ):
        root = Path(root)
        if split not in SPLITS:
            raise GknetError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if not root.is_dir():
            raise GknetError(f"iHarmony4 root is not a directory: {root}")
        listed = listed_subsets(root, split)
        problems = []
        if subsets is None:
            chosen = listed
            if not chosen:
                raise GknetError(
                    f"no iHarmony4 split lists under {root} (expected e.g. {root / f'HCOCO_{split}.txt'})"
                )
            for folder in sorted(p for p in root.iterdir() if (p / "composite_images").is_dir()):
                if folder.name not in chosen:
                    message = f"subset folder without a {folder.name}_{split}.txt list: not evaluated"
                    problems.append((folder, message))
        else:
            known = listed + [s for s in SUBSETS if s not in listed]
            chosen = list(dict.fromkeys(canonical_subset(s, known) for s in subsets))
            missing = [
                str(root / f"{s}_{split}.txt") for s in chosen if not (root / f"{s}_{split}.txt").is_file()
            ]
            if missing:
                raise GknetError(f"missing iHarmony4 split list: {', '.join(missing)}")
        self.root, self.split = root, split
        super().__init__([], problems)
        for subset in chosen:
            self._add_subset(subset)

    def _add_subset(self, subset: str) -> None:
        base = self.root / subset
        for name in _read_list(self.root / f"{subset}_{self.split}.txt"):
            try:
                real_stem, mask_stem = related_names(name)
            except GknetError as exc:
                self.problems.append((base / "composite_images" / name, str(exc)))
                continue
            self.samples.append(
                Sample(
                    name=name,
                    subset=subset,
                    composite=base / "composite_images" / name,
                    mask=_find(base / "masks", mask_stem, ".png"),
                    target=_find(base / "real_images", real_stem, ".jpg"),
                )
            )
