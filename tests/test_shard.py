"""Shards: K/N parsing, exact cover, torchrun's environment; sharded evaluation merges into a single run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from gknet.cli import main
from gknet.errors import GknetError
from gknet.runtime.device import resolve_device
from gknet.runtime.shard import Shard, local_rank, parse_shard, resolve_shard, torchrun_shard
from tests.train_helpers import GKNET, write_triplet_folder

pytestmark = pytest.mark.usefixtures("one_thread")  # torchrun's workers use one thread each, too
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


@pytest.mark.parametrize("n", [0, 1, 5, 7, 100])
@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_shards_cover_every_item_exactly_once_in_order(n, count):
    items = list(range(n))
    parts = [Shard(k, count).select(items) for k in range(1, count + 1)]
    assert [x for part in parts for x in part] == items
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    aligned = [Shard(k, count).select(items, unit=4) for k in range(1, count + 1)]
    assert [x for part in aligned for x in part] == items
    assert all(part[0] % 4 == 0 for part in aligned if part)


def test_parse_and_environment():
    assert parse_shard("2/5") == Shard(2, 5) and parse_shard(" 1 / 1 ").name == "shard-1-of-1"
    for bad in ("0/3", "4/3", "1-3", "a/b", "3"):
        with pytest.raises(GknetError, match="K/N"):
            parse_shard(bad)
    assert torchrun_shard({}) is None and torchrun_shard({"RANK": "0", "WORLD_SIZE": "1"}) is None
    assert torchrun_shard({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Shard(2, 4)
    with pytest.raises(GknetError, match="integers"):
        torchrun_shard({"RANK": "x", "WORLD_SIZE": "2"})
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    assert resolve_shard("1/2", env) == Shard(1, 2) and resolve_shard(None, env) == Shard(4, 4)
    assert local_rank(env) == 1 and local_rank({}) == 0
    with pytest.raises(GknetError, match="LOCAL_RANK"):
        local_rank({"LOCAL_RANK": "x"})


def test_local_rank_picks_the_gpu_of_a_bare_cuda_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    assert resolve_device("cuda", local_rank(env)) == torch.device("cuda", 1)
    assert resolve_device("auto", local_rank(env)) == torch.device("cuda", 1)
    assert resolve_device("cuda:0", local_rank(env)) == torch.device("cuda", 0)
    assert resolve_device("cpu", local_rank(env)) == torch.device("cpu")


@pytest.fixture(scope="module")
def triplets(tmp_path_factory) -> Path:
    """9 triplets plus a composite without target (a listing problem) and a corrupt one (a load failure)."""
    root = write_triplet_folder(tmp_path_factory.mktemp("data"), count=9, size=40)
    shutil.copy(root / "composites" / "img000.png", root / "composites" / "lonely.png")
    shutil.copy(root / "masks" / "img000.png", root / "masks" / "lonely.png")
    (root / "composites" / "img004.png").write_bytes(b"not a png")
    return root


def _evaluate(root: Path, out: Path, *extra) -> int:
    folders = [f"--{sub}" for sub in ("composites", "masks", "targets")]
    paths = [str(root / sub) for sub in ("composites", "masks", "targets")]
    args = [x for pair in zip(folders, paths, strict=True) for x in pair]
    args += ["--baseline", "reinhard", "--batch-size", "2", "--out", str(out), "--no-progress"]
    return main(["evaluate", *args, *extra])


def _same_run(single: Path, merged: Path) -> None:
    for name in ("per_image.csv", "report.md"):
        assert (single / name).read_text() == (merged / name).read_text()
    a, b = (json.loads((d / "results.json").read_text()) for d in (single, merged))
    a.pop("seconds"), b.pop("seconds")
    assert a == b


def test_sharded_evaluation_merges_into_the_single_process_run(tmp_path, triplets, capsys):
    assert _evaluate(triplets, tmp_path / "single") == 1  # the two bad files fail in both runs
    # slices of whole batches of 2: samples 0-1, 2-5, 6-8; shard 1 reports the listing problem,
    # shard 2 holds the corrupt file (sample 4)
    codes = {k: _evaluate(triplets, tmp_path / "sharded", "--shard", f"{k}/3") for k in (3, 1, 2)}
    assert codes == {1: 1, 2: 1, 3: 0}
    shards = sorted(p.name for p in (tmp_path / "sharded").iterdir())
    assert shards == ["shard-1-of-3", "shard-2-of-3", "shard-3-of-3"]
    records = [json.loads((tmp_path / "sharded" / s / "results.json").read_text())["shard"] for s in shards]
    assert [r["samples"] for r in records] == [2, 4, 3] and {r["total_samples"] for r in records} == {9}
    assert main(["evaluate", "--merge", str(tmp_path / "sharded"), "--out", str(tmp_path / "merged")]) == 1
    _same_run(tmp_path / "single", tmp_path / "merged")
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert merged["n_images"] == 8 and merged["n_failed"] == 2 and "shard" not in merged
    # explicit folders in any order give the same result
    dirs = [str(tmp_path / "sharded" / s) for s in reversed(shards)]
    assert main(["evaluate", "--merge", *dirs, "--out", str(tmp_path / "merged2")]) == 1
    _same_run(tmp_path / "single", tmp_path / "merged2")
    capsys.readouterr()


def test_merge_refuses_incomplete_or_mixed_shards(tmp_path, triplets, capsys):
    # a file another process is writing into the shards' shared folder: no shard may remove it
    (tmp_path / "a").mkdir()
    live = tmp_path / "a" / ".results.json.0123456789ab.tmp"
    live.touch()
    for k in (1, 2):  # both hold a bad file
        assert _evaluate(triplets, tmp_path / "a", "--shard", f"{k}/2") == 1, capsys.readouterr().err
    assert live.exists()
    assert _evaluate(triplets, tmp_path / "b", "--shard", "1/3") == 1, capsys.readouterr().err
    capsys.readouterr()
    cases = [
        ([tmp_path / "a" / "shard-1-of-2"], "need each of shards 1..2 once"),
        ([tmp_path / "a", tmp_path / "a" / "shard-2-of-2"], "need each of shards 1..2 once, got 1, 2, 2"),
        ([tmp_path / "a" / "shard-1-of-2", tmp_path / "b" / "shard-1-of-3"], "shard counts differ"),
        ([tmp_path / "nothing"], "no results.json"),
    ]
    for dirs, message in cases:
        code = main(["evaluate", "--merge", *map(str, dirs), "--out", str(tmp_path / "m")])
        err = capsys.readouterr().err
        assert code == 2 and message in err, err
    code = main(["evaluate", "--merge", str(tmp_path / "a"), "--baseline", "reinhard", "--out", "x"])
    assert code == 2 and "does not take --baseline" in capsys.readouterr().err
    assert main(["evaluate", "--merge", str(tmp_path / "a")]) == 2
    assert "needs --out" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_sharded_run_of_several_methods_writes_each_methods_shard(tmp_path, triplets, capsys):
    """Each method's shards go to OUT/<method>/shard-K-of-N and merge into that method's single run."""
    for k in (1, 2):
        assert _evaluate(triplets, tmp_path / "sharded", "--baseline", "composite", "--shard", f"{k}/2") == 1
    for method in ("reinhard", "composite"):
        shards = sorted(p.name for p in (tmp_path / "sharded" / method).iterdir())
        assert shards == ["shard-1-of-2", "shard-2-of-2"]
        merged = tmp_path / "merged" / method
        assert main(["evaluate", "--merge", str(tmp_path / "sharded" / method), "--out", str(merged)]) == 1
    assert _evaluate(triplets, tmp_path / "single", "--baseline", "composite") == 1
    for method in ("reinhard", "composite"):
        _same_run(tmp_path / "single" / method, tmp_path / "merged" / method)
    capsys.readouterr()


def test_a_figure_needs_the_whole_evaluation(tmp_path, triplets, capsys, monkeypatch):
    figure = ["--figure", str(tmp_path / "f.png")]
    assert _evaluate(triplets, tmp_path / "a", "--baseline", "composite", "--shard", "1/2", *figure) == 2
    assert "--figure needs the whole evaluation" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")  # a torchrun process: its shard comes from the environment
    assert _evaluate(triplets, tmp_path / "a", *figure) == 2
    assert "--figure needs the whole evaluation" in capsys.readouterr().err
    assert main(["evaluate", "--merge", str(tmp_path / "a"), "--out", str(tmp_path / "m"), *figure]) == 2
    assert "does not take --figure" in capsys.readouterr().err
    assert not any((tmp_path / name).exists() for name in ("a", "m", "f.png"))


def test_torchrun_two_processes_evaluate_their_shards(tmp_path, triplets):
    folders = [f"--{s}={triplets / s}" for s in ("composites", "masks", "targets")]
    cmd = [*TORCHRUN, GKNET, "evaluate", *folders, "--baseline", "reinhard", "--out", str(tmp_path / "tr")]
    cmd += ["--batch-size", "2", "--no-progress", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1, proc.stderr[-3000:]  # the bad files fail, as in one process
    assert sorted(p.name for p in (tmp_path / "tr").iterdir()) == ["shard-1-of-2", "shard-2-of-2"]
    assert main(["evaluate", "--merge", str(tmp_path / "tr"), "--out", str(tmp_path / "merged")]) == 1
    assert _evaluate(triplets, tmp_path / "single") == 1
    _same_run(tmp_path / "single", tmp_path / "merged")


def _write_pairs(root: Path, count: int) -> tuple[Path, Path]:
    comps, masks = root / "c", root / "m"
    source = write_triplet_folder(root / "src", count=count, size=40)
    shutil.copytree(source / "composites", comps)
    shutil.copytree(source / "masks", masks)
    (masks / "img000.png").rename(masks / "orphan.png")  # one composite and one mask unmatched
    return comps, masks


def test_harmonize_shards_and_torchrun_cover_each_image_once(tmp_path, capsys, tiny_release):
    weights = tiny_release
    comps, masks = _write_pairs(tmp_path, 7)
    common = ["--composites", str(comps), "--masks", str(masks), "--weights", str(weights), "--device", "cpu"]
    common += ["--resolution", "64", "--no-progress", "--batch-size", "1"]  # same network batches
    codes = [main(["harmonize", *common, "-o", str(tmp_path / "single")])]
    for k in (1, 2, 3):
        codes.append(main(["harmonize", *common, "-o", str(tmp_path / "sharded"), "--shard", f"{k}/3"]))
    out, err = capsys.readouterr()
    assert codes == [1, 1, 0, 0]  # the unmatched files are reported once, by shard 1
    assert err.count("orphan.png") == 2 and "(shard 2 of 3)" in out
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*TORCHRUN, GKNET, "harmonize", *common, "-o", str(tmp_path / "torchrun")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.count("orphan.png") == 1
    names = sorted(p.name for p in (tmp_path / "single").iterdir())
    assert len(names) == 6
    for folder in ("sharded", "torchrun"):
        assert sorted(p.name for p in (tmp_path / folder).iterdir()) == names
        for name in names:
            a, b = (Image.open(tmp_path / d / name) for d in ("single", folder))
            assert a.tobytes() == b.tobytes()
    single_file = [str(comps / "img001.png"), str(masks / "img001.png"), "-o", str(tmp_path / "x.png")]
    assert main(["harmonize", *single_file, "--weights", str(weights), "--shard", "1/2"]) == 2
    assert "needs --composites DIR --masks DIR" in capsys.readouterr().err
