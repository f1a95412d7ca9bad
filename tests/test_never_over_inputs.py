"""No command writes over, or among, what it reads (gknet.io.guard): one case per command that
writes, each refused with one error line and exit code 2 (``--overwrite`` given where the command
takes it), every input byte-identical afterwards and nothing written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from gknet.cli import main
from gknet.config import to_dict
from gknet.errors import GknetError
from gknet.inference.release import save_release
from gknet.io.guard import Inputs
from gknet.studio.db import StudyDB
from tests.conftest import tiny_config, tiny_model
from tests.test_hostile_inputs import _image, _mask, snapshot
from tests.train_helpers import tiny_train_config, write_triplet_folder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The inputs of every case, with hard links and symlinks to some of them."""
    w = tmp_path_factory.mktemp("inputs")
    save_release(tiny_model(), tiny_config(), w / "tiny.safetensors")
    _image(w / "c.png"), _mask(w / "m.png"), _image(w / "r_compare.jpg", format="JPEG")
    os.link(w / "c.png", w / "c_link.png")  # a hard link: another name, the same file
    (w / "c_sym.png").symlink_to(w / "c.png")
    _image(w / "folder" / "c" / "a.png"), _mask(w / "folder" / "m" / "a.png")
    _image(w / "folder" / "t" / "a.png", seed=1)
    _image(w / "ex" / "change_map.png"), _mask(w / "ex" / "mask.png")  # named like explain's pictures

    ih4 = w / "ih4"  # iHarmony4 layout, one image
    (ih4 / "HAdobe5k_test.txt").parent.mkdir()
    (ih4 / "HAdobe5k_test.txt").write_text("a0041_1_3.jpg\n")
    _image(ih4 / "HAdobe5k" / "composite_images" / "a0041_1_3.jpg", format="JPEG")
    _mask(ih4 / "HAdobe5k" / "masks" / "a0041_1.png")
    _image(ih4 / "HAdobe5k" / "real_images" / "a0041.jpg", seed=1, format="JPEG")
    for k in (1, 2):  # finished shards (their content is never read: the outputs are refused first)
        shard = w / "shards" / f"shard-{k}-of-2"
        shard.mkdir(parents=True)
        (shard / "results.json").write_text("{}\n")

    _image(w / "photos" / "images" / "p1.jpg", format="JPEG"), _mask(w / "photos" / "masks" / "p1.png")
    (w / "photos" / "masks" / "p1.png").chmod(0o444)  # read-only: root writes it all the same

    (w / "ckpt.pt").write_bytes(b"a training checkpoint")
    os.link(w / "ckpt.pt", w / "ckpt_link.safetensors")
    os.link(w / "tiny.safetensors", w / "tiny_link.onnx")

    root = write_triplet_folder(w / "triplets", count=8, size=40)
    (w / "tiny.yaml").write_text(yaml.safe_dump(to_dict(tiny_train_config(root, max_steps=1))))
    (w / "oldrun").mkdir()
    (w / "oldrun" / "config.yaml").write_text((w / "tiny.yaml").read_text())

    db = StudyDB(w / "study.sqlite")
    db.add_vote(db.add_pair("session-0001", "a", "composite", "reinhard").id, "session-0001", "left")
    os.link(w / "study.sqlite", w / "study_link.png")
    (w / "log.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 1, "val": {"fmse": 1, "psnr": 2}}\n')
    os.link(w / "log.jsonl", w / "log_link.png")
    _image(w / "study" / "composites" / "a.jpg", format="JPEG"), _mask(w / "study" / "masks" / "a.png")
    return w


H = ["harmonize", "--weights", "{w}/tiny.safetensors", "--device", "cpu", "--resolution", "32", "--overwrite"]
H += ["--no-progress"]
EVAL = ["evaluate", "--baseline", "composite", "--no-progress"]
FOLDERS = ["--composites", "{w}/folder/c", "--masks", "{w}/folder/m"]
IS_INPUT, IS_FOLDER = "refusing to overwrite an input", "is the input folder"
INSIDE = "lies inside the input folder"

CASES = {
    "harmonize -o the composite": ([*H, "{w}/c.png", "{w}/m.png", "-o", "{w}/c.png"], IS_INPUT),
    "harmonize -o a hard link of it": ([*H, "{w}/c.png", "{w}/m.png", "-o", "{w}/c_link.png"], IS_INPUT),
    "harmonize -o a symlink to it": ([*H, "{w}/c.png", "{w}/m.png", "-o", "{w}/c_sym.png"], IS_INPUT),
    "harmonize -o dir/../composite": ([*H, "{w}/c.png", "{w}/m.png", "-o", "{w}/ex/../c.png"], IS_INPUT),
    "harmonize --compare sheet over the composite": (
        [*H, "{w}/r_compare.jpg", "{w}/m.png", "-o", "{w}/r.png", "--compare"],
        IS_INPUT,
    ),
    "harmonize folder -o the masks folder": ([*H, *FOLDERS, "-o", "{w}/folder/m"], IS_FOLDER),
    "harmonize folder -o inside the composites": ([*H, *FOLDERS, "-o", "{w}/folder/c/out"], INSIDE),
    "evaluate --figure over a dataset composite": (
        [*EVAL, "--data-root", "{w}/ih4", "--out", "{out}", "--limit", "1", "--figure"]
        + ["{w}/ih4/HAdobe5k/composite_images/a0041_1_3.jpg"],
        IS_INPUT,
    ),
    "evaluate --out among the data": (
        [*EVAL, "--data-root", "{w}/ih4", "--out", "{w}/ih4/HAdobe5k/masks/results"],
        INSIDE,
    ),
    "evaluate paired.md into the targets": (
        [*EVAL, "--baseline", "reinhard", *FOLDERS, "--targets", "{w}/folder/t", "--out", "{w}/folder/t"],
        INSIDE,
    ),
    "evaluate --merge into a shard": (
        ["evaluate", "--merge", "{w}/shards", "--out", "{w}/shards/shard-1-of-2"],
        IS_FOLDER,
    ),
    "synth --preview over a read-only input mask": (
        ["synth", "--root", "{w}/photos", "--preview", "-o", "{w}/photos/masks/p1.png", "--n", "1"]
        + ["--size", "16", "--overwrite", "--split", "train"],
        INSIDE,
    ),
    "synth --export into the photos": (
        ["synth", "--root", "{w}/photos", "--export", "{w}/photos"],
        IS_FOLDER,
    ),
    "export -o a hard link of the checkpoint": (
        ["export", "{w}/ckpt.pt", "-o", "{w}/ckpt_link.safetensors", "--overwrite"],
        IS_INPUT,
    ),
    "export --onnx over the weights": (
        ["export", "--weights", "{w}/tiny.safetensors", "--onnx", "{w}/tiny_link.onnx", "--overwrite"],
        IS_INPUT,
    ),
    "explain into the composite's folder": (
        ["explain", "{w}/ex/change_map.png", "{w}/ex/mask.png", "-o", "{w}/ex", "--overwrite"]
        + ["--weights", "{w}/tiny.safetensors"],
        IS_INPUT,
    ),
    "train --out inside its data": (
        ["train", "--config", "{w}/tiny.yaml", "--out", "{w}/triplets/run", "--device", "cpu"],
        INSIDE,
    ),
    "train --out inside its realistic composites": (
        ["train", "--config", "{w}/tiny.yaml", "--out", "{w}/photos/run", "--device", "cpu"]
        + ["--set", "data.realistic_composites={w}/photos", "--set", "data.realistic_share=0.1"],
        INSIDE,
    ),
    "train --config the run's config.yaml": (
        ["train", "--config", "{w}/oldrun/config.yaml", "--out", "{w}/oldrun", "--device", "cpu"],
        IS_INPUT,
    ),
    "study scores --plot over the database": (
        ["study", "scores", "--db", "{w}/study.sqlite", "--plot", "{w}/study_link.png", "--overwrite"],
        IS_INPUT,
    ),
    "study add --db inside the folder": (
        ["study", "add", "mine", "{w}/folder/c", "--db", "{w}/folder/c/studio.sqlite"],
        INSIDE,
    ),
    "plot-log over the log": (
        ["plot-log", "{w}/log.jsonl", "-o", "{w}/log_link.png", "--overwrite"],
        IS_INPUT,
    ),
    "studio --db among the study images": (
        ["studio", "--study-dir", "{w}/study", "--db", "{w}/study/masks/studio.sqlite", "--port", "1"],
        INSIDE,
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_no_command_writes_over_or_among_its_inputs(case, world, tmp_path, capsys):
    if case.startswith("studio"):
        pytest.importorskip("fastapi", reason="the studio extra (fastapi) is not installed")
    template, message = CASES[case]
    out = tmp_path / "out"
    out.mkdir()
    argv = [arg.format(w=world, out=out) for arg in template]
    before = snapshot(world)
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    command = " ".join(argv[:2]) if argv[0] == "study" else argv[0]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"gknet {command}: error: "), err
    assert message in lines[0] and "Traceback" not in err, err
    assert snapshot(world) == before, "an input was changed, or a file written among them"
    assert not list(out.iterdir()), "something was written"


def test_the_documented_merge_into_the_shards_parent_is_allowed(world):
    shards = world / "shards"
    Inputs(folders=[shards / "shard-1-of-2", shards / "shard-2-of-2"]).check(shards / "results.json")


def test_outputs_beside_the_inputs_are_allowed(world, tmp_path):
    inputs = Inputs([world / "c.png", world / "m.png"], [world / "folder" / "c"])
    inputs.check(world / "c_out.png", world / "folder" / "c_result.png", tmp_path / "new" / "x.png")


def test_a_symlinked_output_folder_into_an_input_folder_is_refused(world, tmp_path):
    (tmp_path / "results").symlink_to(world / "folder" / "m")
    inputs = Inputs(folders=[world / "folder" / "m"])
    with pytest.raises(GknetError, match="is the input folder"):
        inputs.check(tmp_path / "results")
    with pytest.raises(GknetError, match="lies inside the input folder"):
        inputs.check(tmp_path / "results" / "a_new.png")


def test_a_harmonize_folder_run_still_writes_beside_its_inputs(world, tmp_path, capsys):
    argv = [arg.format(w=world) for arg in [*H, *FOLDERS, "-o", str(tmp_path / "out")]]
    assert main(argv) == 0, capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.png"]
