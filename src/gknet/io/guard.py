"""Inputs are never outputs: every command checks the paths it will write against what it reads.

A command gathers its inputs (files, and the folders whose contents it scans) in an
:class:`Inputs` and calls :meth:`Inputs.check` with every path it will write, before any
work. Files are compared by what they are, not by how they are named: ``(st_dev, st_ino)``
after following symlinks, so a symlink, a hard link or ``a/../a`` all count as the input.
An output inside a scanned folder (or that folder itself) is refused as well: it would be
read as an input by the next run. ``--overwrite`` never lifts this check.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from gknet.errors import GknetError

Identity = tuple[int, int]


def identity(path: str | Path) -> Identity | None:
    """``(st_dev, st_ino)`` of what ``path`` names (symlinks followed), None if nothing is there."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):  # missing, unreadable, or a name the OS refuses (NUL)
        return None
    return st.st_dev, st.st_ino


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop: the OS will refuse the write itself
        return Path(os.path.abspath(path))


class Inputs:
    """What one command reads; :meth:`check` refuses outputs that are among it."""

    def __init__(self, files: Iterable[str | Path | None] = (), folders: Iterable[str | Path | None] = ()):
        self._files: dict[Identity, Path] = {}
        self._folders: dict[Identity, Path] = {}
        self._clear: set[Path] = set()  # folders (as given and resolved) in no input folder
        self.add_files(*files)
        self.add_folders(*folders)

    def add_files(self, *paths: str | Path | None) -> Inputs:
        """Files the command reads (missing ones are skipped: they cannot be overwritten)."""
        for path in paths:
            key = identity(path) if path is not None else None
            if key is not None:
                self._files.setdefault(key, Path(path))
        return self

    def add_folders(self, *paths: str | Path | None) -> Inputs:
        """Folders whose contents the command reads: nothing may be written inside them."""
        for path in paths:
            key = identity(path) if path is not None else None
            if key is not None:
                self._folders.setdefault(key, Path(path))
                self._clear.clear()
        return self

    def add_samples(self, samples: Iterable) -> Inputs:
        """A dataset's files (``composite``, ``mask``, ``target``) and the folders they lie in."""
        folders = set()
        for sample in samples:
            for path in (sample.composite, sample.mask, sample.target):
                if path is not None:
                    self.add_files(path)
                    folders.add(Path(path).parent)
        return self.add_folders(*sorted(folders))

    def check(self, *outputs: str | Path) -> None:
        """GknetError if an output is an input file, an input folder or lies inside one."""
        for output in outputs:
            output = Path(output)
            key = identity(output)
            if key in self._files:
                raise GknetError(
                    f"output {output} is the input {self._files[key]}; refusing to overwrite an input"
                )
            self._check_folders(output, key)

    def _check_folders(self, output: Path, key: Identity | None) -> None:
        if key in self._folders:
            found = self._folders[key]
            raise GknetError(f"output {output} is the input folder {found}; refusing to write there")
        if not self._folders or output.parent in self._clear:  # a folder's outputs: checked once
            return
        parent = _resolved(output.parent)
        chain = [output.parent]
        for folder in (parent, *parent.parents):
            if folder in self._clear:
                break
            chain.append(folder)
            found = self._folders.get(identity(folder))
            if found is not None:
                raise GknetError(
                    f"output {output} lies inside the input folder {found}; refusing to write among inputs"
                )
        self._clear.update(chain)
