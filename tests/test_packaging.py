"""Packaging: one version, the declared licence, typing marker, matplotlib as an extra."""

from __future__ import annotations

import importlib.metadata
import sys

import pytest

import gknet
from gknet.cli import main
from tests.conftest import REPO


def test_version_is_defined_once_and_the_licence_matches():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "version" not in project and project["dynamic"] == ["version"]
    assert importlib.metadata.version("gknet") == gknet.__version__
    assert project["license"] == {"text": "MIT"}
    assert (REPO / "LICENSE").read_text().startswith("MIT License")
    assert (REPO / "src" / "gknet" / "py.typed").is_file()
    assert "matplotlib" not in " ".join(project["dependencies"])
    assert any(dep.startswith("matplotlib") for dep in project["optional-dependencies"]["plot"])


def test_plotting_commands_without_matplotlib_say_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "loss": 0.5}\n')
    assert main(["plot-log", str(log), "-o", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "gknet plot-log: error: gknet plot-log needs matplotlib: pip install 'gknet[plot]'"
    assert not (tmp_path / "c.png").exists()
