"""Hostile and broken inputs, table-driven: every CLI case ends in exit code 2 and one line
``gknet CMD: error: ...`` (no traceback, no warning), every studio request in a short 4xx JSON
answer, and no input file is changed, added or removed."""

from __future__ import annotations

import hashlib
import json
import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import save_file

from gknet.cli import main
from gknet.config import to_dict
from gknet.inference.release import save_release
from gknet.studio.db import StudyDB
from tests.conftest import tiny_config, tiny_model
from tests.train_helpers import tiny_train_config, write_triplet_folder

pytestmark = pytest.mark.usefixtures("one_thread")
LONG = "x" * 300  # a file name longer than the 255 bytes a file system allows


def snapshot(root: Path) -> dict[str, str]:
    """Every file under root with the hash of its content."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file()
    }


def _image(path: Path, size=(60, 40), seed=0, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, **save)
    return path


def _mask(path: Path, size=(60, 40)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((size[1], size[0]), np.uint8)
    mask[size[1] // 4 : size[1] * 3 // 4, size[0] // 4 : size[0] * 3 // 4] = 255
    Image.fromarray(mask).save(path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Every input of the cases below, in one folder that no case may change."""
    w = tmp_path_factory.mktemp("world")
    cfg = tiny_config()
    save_release(tiny_model(), cfg, w / "tiny.safetensors")
    nan_model = tiny_model(seed=1)
    save_release(nan_model, cfg, w / "nan.safetensors")
    tensors = {k: v.clone() for k, v in nan_model.state_dict().items()}
    tensors["head.weight"][0, 0] = math.nan
    save_file(tensors, str(w / "nan.safetensors"))
    (w / "huge.safetensors").write_bytes((w / "tiny.safetensors").read_bytes())
    huge = json.loads((w / "tiny.json").read_text())
    huge["model"].update(widths=[65536, 131072, 262144, 524288], kpb_levels=2)
    (w / "huge.json").write_text(json.dumps(huge))

    _image(w / "c.png"), _mask(w / "m.png")
    data = (w / "c.png").read_bytes()
    _image(w / "c.jpg", format="JPEG")
    (w / "trunc.jpg").write_bytes((w / "c.jpg").read_bytes()[:-60])
    _image(w / "folder" / "composites" / "a.png"), _mask(w / "folder" / "masks" / "a.png")
    _image(w / "clash" / "composites" / "a.png"), _mask(w / "clash" / "masks" / "a.png")
    _image(w / "clash" / "composites" / "a_compare.jpg"), _mask(w / "clash" / "masks" / "a_compare.png")
    assert data == (w / "c.png").read_bytes()

    (w / "binary.jsonl").write_bytes(bytes(range(256)))
    (w / "nostep.jsonl").write_text('{"loss": 1.0}\n')
    bad_real = {"step": 1, "val": {"fmse": 1, "psnr": 2}, "real_val": {"HFlickr": 3}}
    (w / "badreal.jsonl").write_text(json.dumps(bad_real) + "\n")
    (w / "good.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 1, "val": {"fmse": 1, "psnr": 2}}\n')
    (w / "pickle.pt").write_bytes(b"\x80\x04\x95\x0b\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94K\x01s.")

    root = write_triplet_folder(w / "triplets", count=8, size=40)
    train_cfg = to_dict(tiny_train_config(root, max_steps=2))
    (w / "tiny.yaml").write_text(yaml.safe_dump(train_cfg))
    for name, change in (("headless", {"lre_heads": 0}), ("nanratio", {"lre_mlp_ratio": math.nan})):
        bad = json.loads(json.dumps(train_cfg))
        bad["model"].update(change)
        (w / f"{name}.yaml").write_text(yaml.safe_dump(bad))
    assert main(["train", "--config", str(w / "tiny.yaml"), "--out", str(w / "run"), "--device", "cpu"]) == 0
    from gknet.training.state import load_state, save_state

    state = load_state(w / "run" / "ckpt" / "last.pt")
    state["model"]["head.weight"][0, 0] = math.nan
    save_state(state, w / "nan.pt")

    db = StudyDB(w / "study.sqlite")
    pair = db.add_pair("session-0001", "a", "composite", "reinhard")
    db.add_vote(pair.id, "session-0001", "left")
    with sqlite3.connect(w / "foreign.sqlite") as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER, total REAL)")
    (w / "ih4").mkdir()
    (w / "ih4" / "HCOCO_test.txt").write_bytes("c1_1_1.jpg\n\xe9t\xe9_1_1.jpg\n".encode("latin-1"))
    return w


H = [
    "harmonize",
    "--weights",
    "{w}/tiny.safetensors",
    "--device",
    "cpu",
    "--resolution",
    "64",
    "--no-progress",
]
HC = [*H, "{w}/c.png", "{w}/m.png"]
FOLDER = ["--composites", "{w}/folder/composites", "--masks", "{w}/folder/masks"]
TRAIN = ["train", "--config", "{w}/tiny.yaml", "--out", "{out}/run", "--device", "cpu"]
SCORES = ["study", "scores", "--db", "{w}/study.sqlite", "--bootstrap", "10"]
EXPORT = ["export", "{w}/run/ckpt/last.pt"]
EXPLAIN = ["explain", "{w}/c.png", "{w}/m.png", "--weights", "{w}/tiny.safetensors", "--resolution", "32"]
EVAL = ["evaluate", "--baseline", "composite", "--no-progress"]
SYNTH = ["synth", "--root", "{w}/photos"]  # outputs are checked before the photos are read

CLI_CASES = {
    # harmonize: output formats Pillow can only read, sizes, names, places, weights
    "harmonize .psd": ([*HC, "-o", "{out}/r.psd"], "unknown image format"),
    "harmonize .mpeg": ([*HC, "-o", "{out}/r.mpeg"], "unknown image format"),
    "harmonize .pcd": ([*HC, "-o", "{out}/r.pcd"], "unknown image format"),
    "harmonize .blp": ([*HC, "-o", "{out}/r.blp"], "unknown image format"),
    "harmonize no suffix": ([*HC, "-o", "{out}/result"], "unknown image format"),
    "resolution 100000": ([*HC, "-o", "{out}/r.png", "--resolution", "100000"], "too large for this model"),
    "resolution 0": (
        [*HC, "-o", "{out}/r.png", "--resolution", "0"],
        "--resolution: must be an integer >= 16",
    ),
    "resolution text": (
        [*HC, "-o", "{out}/r.png", "--resolution", "big"],
        "must be an integer >= 16, got 'big'",
    ),
    "output name > 255 bytes": ([*HC, "-o", f"{{out}}/{LONG}.png"], "cannot write"),
    "input name > 255 bytes": (
        [*H, f"{{w}}/{LONG}.png", "{w}/m.png", "-o", "{out}/r.png"],
        "File name too long",
    ),
    "output in read-only folder": ([*HC, "-o", "{ro}/r.png"], "cannot write"),
    "folder mode into read-only folder": ([*H, *FOLDER, "-o", "{ro}"], "cannot write"),
    "folder mode output is a file": ([*H, *FOLDER, "-o", "{w}/c.png"], "output folder is a file"),
    "compare sheet name clash": (
        [
            *H,
            "--composites",
            "{w}/clash/composites",
            "--masks",
            "{w}/clash/masks",
            "-o",
            "{out}",
            "--compare",
        ],
        "two outputs would be named",
    ),
    "threshold nan": ([*HC, "-o", "{out}/r.png", "--threshold", "nan"], "--threshold must be in (0, 1]"),
    "truncated JPEG": ([*H, "{w}/trunc.jpg", "{w}/m.png", "-o", "{out}/r.png"], "cannot read image"),
    "NaN weights": ([*HC, "-o", "{out}/r.png", "--weights", "{w}/nan.safetensors"], "non-finite values"),
    "300 GB widths": ([*HC, "-o", "{out}/r.png", "--weights", "{w}/huge.safetensors"], "the config needs"),
    "output is the input": ([*HC, "-o", "{w}/c.png", "--overwrite"], "refusing to overwrite an input"),
    "folder --batch-size 0": ([*H, *FOLDER, "-o", "{out}", "--batch-size", "0"], "--batch-size: must be an"),
    "folder --workers -1": ([*H, *FOLDER, "-o", "{out}", "--workers", "-1"], "--workers: must be an integer"),
    "folder --shard 3/2": ([*H, *FOLDER, "-o", "{out}", "--shard", "3/2"], "1 <= K <= N, got 3/2"),
    # synth
    "synth preview .psd": ([*SYNTH, "--preview", "-o", "{out}/g.psd"], "unknown image format"),
    "synth preview read-only": ([*SYNTH, "--preview", "-o", "{ro}/g.png"], "cannot write"),
    "synth --n 0": ([*SYNTH, "--stats", "--n", "0"], "--n: must be an integer >= 1, got 0"),
    # study
    "scores --bootstrap -5": ([*SCORES, "--bootstrap", "-5"], "--bootstrap: must be an integer >= 0, got -5"),
    "scores --confidence 1.5": ([*SCORES, "--confidence", "1.5"], "--confidence: must be a number in (0, 1)"),
    "scores --seed -1": ([*SCORES, "--seed", "-1"], "--seed: must be an integer >= 0"),
    "scores --plot .blp": ([*SCORES, "--plot", "{out}/s.blp"], "unknown image format"),
    "scores --plot read-only": ([*SCORES, "--plot", "{ro}/s.png"], "cannot write"),
    "scores foreign database": (["study", "scores", "--db", "{w}/foreign.sqlite"], "not a gknet studio"),
    "scores missing database": (["study", "scores", "--db", "{out}/none.sqlite"], "study database not found"),
    "add to foreign database": (
        ["study", "add", "m", "{w}/folder/masks", "--db", "{w}/foreign.sqlite"],
        "not a",
    ),
    # studio: numbers and databases checked before anything starts
    "studio --port 99999": (["studio", "--port", "99999"], "--port: must be an integer from 1 to 65535"),
    "studio --port 0": (["studio", "--port", "0"], "--port: must be an integer from 1 to 65535, got 0"),
    "studio --max-upload-mb -1": (["studio", "--max-upload-mb", "-1"], "must be a number in (0, inf)"),
    "studio --max-upload-mb nan": (["studio", "--max-upload-mb", "nan"], "--max-upload-mb: must be a number"),
    "studio --max-pixels -5": (["studio", "--max-pixels", "-5"], "--max-pixels: must be an integer >= 1"),
    "studio foreign database": (["studio", "--db", "{w}/foreign.sqlite"], "not a gknet studio database"),
    # train
    "train lr -1e-3": ([*TRAIN, "--set", "train.lr=-1e-3"], "train.lr must be a finite number in [0, inf)"),
    "train lr .nan": ([*TRAIN, "--set", "train.lr=.nan"], "train.lr must be a finite number"),
    "train max_steps -5": ([*TRAIN, "--set", "train.max_steps=-5"], "train.max_steps must be an integer"),
    "train log_every 0": ([*TRAIN, "--set", "train.log_every=0"], "train.log_every must be an integer >= 1"),
    "train heads 0": ([*TRAIN, "--config", "{w}/headless.yaml"], "model.lre_heads must be an integer >= 1"),
    "train pickle resume": ([*TRAIN, "--resume", "{w}/pickle.pt"], "never unpickled"),
    # export
    "export -o ''": ([*EXPORT, "-o", ""], "output must name a file"),
    "export -o .": ([*EXPORT, "-o", "."], "output must name a file"),
    "export read-only": ([*EXPORT, "-o", "{ro}/m.safetensors"], "cannot write"),
    "export NaN checkpoint": (["export", "{w}/nan.pt", "-o", "{out}/m.safetensors"], "non-finite values"),
    "export --onnx read-only": (
        ["export", "--onnx", "{ro}/m.onnx", "--weights", "{w}/tiny.safetensors"],
        "cannot write",
    ),
    # plot-log
    "plot-log binary file": (["plot-log", "{w}/binary.jsonl", "-o", "{out}/p.png"], "is not a text log"),
    "plot-log no step": (["plot-log", "{w}/nostep.jsonl", "-o", "{out}/p.png"], "no numeric 'step'"),
    "plot-log bad real_val": (["plot-log", "{w}/badreal.jsonl", "-o", "{out}/p.png"], "'real_val' must hold"),
    "plot-log .gif": (["plot-log", "{w}/good.jsonl", "-o", "{out}/p.gif"], "unsupported plot format"),
    "plot-log --smooth 1.5": (["plot-log", "{w}/good.jsonl", "-o", "{out}/p.png", "--smooth", "2"], "[0, 1)"),
    "plot-log read-only": (["plot-log", "{w}/good.jsonl", "-o", "{ro}/p.png"], "cannot write"),
    # evaluate
    "evaluate --out is a file": (
        [*EVAL, "--data-root", "{w}/ih4", "--out", "{w}/c.png"],
        "output folder is a file",
    ),
    "evaluate --out read-only": ([*EVAL, "--data-root", "{w}/ih4", "--out", "{ro}"], "cannot write"),
    "evaluate non-UTF-8 list": ([*EVAL, "--data-root", "{w}/ih4", "--out", "{out}"], "is not UTF-8 text"),
    "evaluate --batch-size 0": ([*EVAL, "--batch-size", "0"], "--batch-size: must be an integer >= 1"),
    # explain and info
    "explain read-only": ([*EXPLAIN, "-o", "{ro}"], "cannot write"),
    "explain --clusters 1": (
        [*EXPLAIN, "-o", "{out}", "--clusters", "1"],
        "--clusters: must be an integer >= 2",
    ),
    "explain --point -1": (
        [*EXPLAIN, "-o", "{out}", "--point", "-1", "3"],
        "--point: must be an integer >= 0",
    ),
    "info heads 0": (["info", "--config", "{w}/headless.yaml"], "model.lre_heads must be an integer >= 1"),
    "info mlp ratio nan": (["info", "--config", "{w}/nanratio.yaml"], "model.lre_mlp_ratio must be a finite"),
}


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_case_fails_with_one_line_and_leaves_inputs_alone(case, world, tmp_path, readonly_dir, capsys):
    template, message = CLI_CASES[case]
    out = tmp_path / "out"
    out.mkdir()
    argv = [arg.format(w=world, out=out, ro=readonly_dir) for arg in template]
    before = snapshot(world)
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("harmonize:")]
    command = " ".join(argv[:2]) if argv[0] == "study" else argv[0]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"gknet {command}: error: "), err
    assert message in lines[0], err
    assert "Traceback" not in err and "warning" not in err
    assert snapshot(world) == before, "an input was changed"
    assert not list(out.rglob("*")), "something was written"


# ----------------------------------------------------------------------------------------- studio


@pytest.fixture(scope="module")
def studio(world, tmp_path_factory):
    pytest.importorskip("fastapi", reason="the studio extra (fastapi) is not installed")
    from fastapi.testclient import TestClient

    from gknet import Harmonizer
    from gknet.studio.server import create_app

    root = tmp_path_factory.mktemp("studio")
    for seed, stem in enumerate("abc"):
        _image(root / "study" / "composites" / f"{stem}.jpg", size=(40, 32), seed=seed, format="JPEG")
        _mask(root / "study" / "masks" / f"{stem}.png", size=(40, 32))
    _image(root / "mine" / "a.jpg", size=(40, 32), format="JPEG")
    db = root / "studio.sqlite"
    StudyDB(db).register_method("mine", root / "mine")
    harmonizer = Harmonizer.from_pretrained(world / "tiny.safetensors", resolution=32)
    app = create_app(db, harmonizer=harmonizer, study_dir=root / "study", seed=0)
    with TestClient(app, base_url="http://localhost") as client:
        pair = client.get("/api/study/pair", params={"session": "session-0001"}).json()
        yield client, root, pair


JSON = {"content-type": "application/json"}


def _vote(**fields):
    """A vote request as raw JSON (escapes let lone surrogates through, as any client may send them)."""
    body = {"session": "session-0001", "pair_id": "0" * 32, "choice": "left", **fields}
    return ("POST", "/api/study/vote", {"content": json.dumps(body).encode(), "headers": JSON})


STUDIO_CASES = {
    "Host evil.example.com": (
        "GET",
        "/api/info",
        {"headers": {"host": "evil.example.com"}},
        400,
        "host name",
    ),
    "Host localhost.evil.example": (
        "GET",
        "/api/info",
        {"headers": {"host": "localhost.evil.example"}},
        400,
        "host",
    ),
    "Host 127.0.0.1.nip.io": (
        "GET",
        "/harmonize",
        {"headers": {"host": "127.0.0.1.nip.io:7860"}},
        400,
        "host",
    ),
    "Host empty": ("GET", "/api/info", {"headers": {"host": ""}}, 400, "host name"),
    "pair id NUL + lone surrogate": ("GET", "/api/study/pair/%00%ED%A0%80/left", {}, 404, "unknown pair"),
    "pair id 60 kB": ("GET", "/api/study/pair/" + "a" * 60_000 + "/left", {}, 404, "unknown pair"),
    "unknown pair id": ("GET", "/api/study/pair/" + "f" * 32 + "/left", {}, 404, "unknown pair"),
    "vote pair id NUL + surrogate": (*_vote(pair_id="\u0000\ud800"), 404, "unknown pair"),
    "vote pair id 1 MB": (*_vote(pair_id="a" * 1_000_000), 404, "unknown pair"),
    "vote choice 100 kB": (*_vote(pair_id="{pair}", choice="x" * 100_000), 422, "choice must be"),
    "vote session surrogate": (*_vote(session="\ud800" * 10), 422, "session must be"),
    "vote not JSON": (
        "POST",
        "/api/study/vote",
        {"content": b"{not json", "headers": JSON},
        422,
        "not valid JSON",
    ),
    "pair session too short": ("GET", "/api/study/pair?session=abc", {}, 422, "session must be"),
    "scores bootstrap -1": ("GET", "/api/scores?bootstrap=-1", {}, 422, "bootstrap"),
    "body not UTF-8": (
        "POST",
        "/api/study/vote",
        {"content": b"\xff{", "headers": JSON},
        400,
        "parsing the body",
    ),
    "upload named 1000 chars": (
        "POST",
        "/api/harmonize",
        {
            "files": {
                "composite": ("x" * 1000 + ".txt", b"hi", "text/plain"),
                "mask": ("m.png", b"hi", "image/png"),
            }
        },
        415,
        "is not an image",
    ),
}


@pytest.mark.parametrize("case", STUDIO_CASES)
def test_studio_case_answers_one_short_4xx(case, studio):
    client, root, pair = studio
    method, url, kwargs, status, message = STUDIO_CASES[case]
    if b"{pair}" in kwargs.get("content", b""):
        kwargs = {**kwargs, "content": kwargs["content"].replace(b"{pair}", pair["pair_id"].encode())}
    before = snapshot(root / "study") | snapshot(root / "mine")
    response = client.request(method, url, **kwargs)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert message in detail and "\n" not in detail and len(response.content) < 1000, response.text
    assert str(root) not in detail and "Traceback" not in detail
    assert snapshot(root / "study") | snapshot(root / "mine") == before


# ------------------------------------------------------------------ one behaviour at a time


def _refuse(*_args, **_kwargs):
    raise AssertionError("work started before the outputs were checked")


def test_outputs_are_checked_before_the_model_is_loaded(world, tmp_path, readonly_dir, monkeypatch, capsys):
    monkeypatch.setattr("gknet.inference.harmonizer.Harmonizer.from_pretrained", _refuse)
    monkeypatch.setattr("gknet.evaluation.protocol.load_method", _refuse)
    monkeypatch.setattr("gknet.explain.capture", _refuse)
    runs = [
        [*H, "{w}/c.png", "{w}/m.png", "-o", "{ro}/big_result.jpg"],  # as for a 12 MP image
        [*H, *FOLDER, "-o", "{ro}/out"],
        [*EVAL, "--data-root", "{w}/ih4", "--out", "{ro}/eval"],
        [*EVAL, "--data-root", "{w}/ih4", "--figure", "{ro}/figure.png"],
        [*EXPLAIN, "-o", "{ro}/explain"],
    ]
    for template in runs:
        argv = [arg.format(w=world, ro=readonly_dir) for arg in template]
        assert main(argv) == 2
        assert "cannot write" in capsys.readouterr().err


def test_each_methods_evaluate_folder_is_checked_before_any_image_is_scored(
    world, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr("gknet.evaluation.protocol.evaluate", _refuse)
    out = tmp_path / "eval"
    out.mkdir()
    (out / "reinhard").write_text("a file where a method's folder goes")
    folders = ["--composites", "{w}/folder/composites", "--masks", "{w}/folder/masks", "--targets"]
    template = [*EVAL, "--baseline", "reinhard", *folders, "{w}/folder/composites", "--out", str(out)]
    assert main([arg.format(w=world) for arg in template]) == 2
    assert f"output folder is a file: {out / 'reinhard'}" in capsys.readouterr().err


def test_a_killed_harmonize_runs_temporaries_are_removed_by_the_next(world, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    stale = [out / ".a.png.0123456789ab.tmp", out / ".a_compare.jpg.ba9876543210.tmp"]  # gknet.io.atomic's
    kept = [out / ".unrelated.png.0123456789ab.tmp", out / ".a.png.tmp"]
    for path in stale + kept:
        path.write_bytes(b"partial")
    argv = [arg.format(w=world) for arg in [*H, *FOLDER, "--compare", "-o", str(out)]]
    assert main(argv) == 0, capsys.readouterr().err
    assert sorted(out.iterdir()) == sorted([out / "a.png", out / "a_compare.jpg", *kept])


def test_a_250_byte_output_name_is_written(world, tmp_path, capsys):
    name = "y" * 246 + ".png"
    argv = [arg.format(w=world) for arg in HC] + ["-o", str(tmp_path / name)]
    assert main(argv) == 0, capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_no_raw_warnings_for_gifs_truncated_jpegs_tiny_masks_and_pickles(world, tmp_path, capfd):
    import gc
    import warnings

    frames = [Image.new("RGB", (60, 40), (40 * i, 0, 0)) for i in range(3)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    dot = np.zeros((40, 60), np.uint8)
    dot[5, 5] = 255  # one pixel: thinner than a pixel of the explanation pictures
    Image.fromarray(dot).save(tmp_path / "dot.png")
    _image(tmp_path / "tall.png", size=(1, 300))  # its pictures would be 1 pixel wide
    Image.new("L", (1, 300), 255).save(tmp_path / "tallmask.png")
    runs = [
        ([*H, str(tmp_path / "anim.gif"), "{w}/m.png", "-o", str(tmp_path / "gif.png")], 0),
        ([*H, "{w}/trunc.jpg", "{w}/m.png", "-o", str(tmp_path / "t.png")], 2),
        (
            [
                "explain",
                "{w}/c.png",
                str(tmp_path / "dot.png"),
                "-o",
                str(tmp_path / "e1"),
                "--resolution",
                "64",
            ],
            0,
        ),
        (
            [
                "explain",
                str(tmp_path / "tall.png"),
                str(tmp_path / "tallmask.png"),
                "-o",
                str(tmp_path / "e2"),
                "--resolution",
                "64",
            ],
            0,
        ),
        ([*TRAIN, "--resume", "{w}/pickle.pt"], 2),
    ]
    for template, code in runs:
        argv = [arg.format(w=world, out=tmp_path) for arg in template]
        with warnings.catch_warnings():
            warnings.simplefilter("always")  # also ResourceWarning, hidden by default
            assert main(argv) == code, capfd.readouterr().err
            gc.collect()  # an unclosed file warns when it is collected
        err = capfd.readouterr().err
        assert "Warning" not in err and "warning" not in err.replace("RANDOMLY", ""), (argv, err)


def test_an_unreadable_composites_folder_is_one_line(world, tmp_path, monkeypatch, capsys):
    folder = world / "folder" / "composites"
    real_iterdir = Path.iterdir

    def iterdir(self):
        if self == folder:
            raise PermissionError(13, "Permission denied", str(self))
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)  # chmod 000 does not stop root
    argv = [arg.format(w=world) for arg in [*H, *FOLDER, "-o", str(tmp_path / "out")]]
    assert main(argv) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"gknet harmonize: error: cannot read folder {folder}: Permission denied"
    )


def test_split_lists_with_a_byte_order_mark_are_read(tmp_path):
    from gknet.data import IHarmony4

    (tmp_path / "HCOCO_test.txt").write_bytes("\ufeffc1_1_1.jpg\r\nc2_1_1.jpg\r\n".encode())
    assert [s.name for s in IHarmony4(tmp_path, ["HCOCO"])] == ["c1_1_1.jpg", "c2_1_1.jpg"]


def test_identical_images_score_the_documented_108_13_db():
    from gknet.evaluation.metrics import MSE_FLOOR, image_metrics

    image = torch.rand(1, 3, 8, 8) * 255
    psnr = float(image_metrics(image, image, torch.ones(1, 1, 8, 8, dtype=torch.bool))["psnr"][0])
    assert psnr == pytest.approx(10 * math.log10(255**2 / MSE_FLOOR)) and f"{psnr:.2f}" == "108.13"
    docs = (Path(__file__).resolve().parents[1] / "docs" / "evaluation.md").read_text()
    assert "108.13 dB" in docs and "120 dB" not in docs


def _png_chunks(data: bytes) -> list[bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = [], 8
    while at < len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        chunks.append(data[at + 4 : at + 8])
        at += 12 + length
    return chunks


@pytest.fixture
def study_app(world, tmp_path):
    """A study with three images, built-in methods and a registered folder of JPEG results
    (with an ICC profile and EXIF, which must not reach the participant)."""
    pytest.importorskip("fastapi", reason="the studio extra (fastapi) is not installed")
    from gknet import Harmonizer

    for seed, stem in enumerate("abc"):
        _image(tmp_path / "study" / "composites" / f"{stem}.jpg", size=(40, 32), seed=seed, format="JPEG")
        _mask(tmp_path / "study" / "masks" / f"{stem}.png", size=(40, 32))
    mine = tmp_path / "mine"
    exif = Image.Exif()
    exif[0x0131] = "dovenet-export 1.0"  # Software: would tell the method apart
    _image(mine / "a.jpg", size=(40, 32), format="JPEG", exif=exif.tobytes(), icc_profile=b"\0" * 128)
    _image(mine / "b.jpg", size=(40, 32), format="JPEG")
    (tmp_path / "secret.png").write_bytes((tmp_path / "study" / "masks" / "a.png").read_bytes())
    (mine / "c.png").symlink_to(tmp_path / "secret.png")  # points out of the registered folder
    db = StudyDB(tmp_path / "studio.sqlite")
    db.register_method("mine", mine)
    harmonizer = Harmonizer.from_pretrained(world / "tiny.safetensors", resolution=32)

    def make(**kwargs):
        from gknet.studio.server import create_app

        return create_app(db.path, harmonizer=harmonizer, study_dir=tmp_path / "study", seed=0, **kwargs)

    return make, db, tmp_path


def _client(app, host="localhost"):
    from fastapi.testclient import TestClient

    return TestClient(app, base_url=f"http://{host}")


def _pairs(client, n):
    return [client.get("/api/study/pair", params={"session": "session-0001"}).json() for _ in range(n)]


def test_study_images_are_png_without_metadata_and_never_follow_links_out(study_app):
    make, db, root = study_app
    with _client(make()) as client:
        seen = set()
        for pair in _pairs(client, 40):
            stored = db.get_pair(pair["pair_id"])
            assert not (stored.image == "c" and "mine" in (stored.left, stored.right)), (
                "the symlink was offered"
            )
            for side, method in (("left", stored.left), ("right", stored.right)):
                response = client.get(pair[side])
                assert response.status_code == 200 and response.headers["content-type"] == "image/png"
                assert set(_png_chunks(response.content)) <= {b"IHDR", b"IDAT", b"IEND"}, method
                seen.add(method)
        assert seen == {"composite", "reinhard", "gknet", "mine"}
        forced = db.add_pair("session-0001", "c", "mine", "composite")  # as if the link were made later
        response = client.get(f"/api/study/pair/{forced.id}/left")
        assert response.status_code == 404 and str(root) not in response.text
        assert response.json()["detail"] == "the left image of this pair cannot be shown; skip the pair"


def test_broken_study_items_answer_404_once_and_are_not_handed_out_again(study_app, caplog):
    make, db, root = study_app
    app = make(methods=("composite", "reinhard"))
    (root / "study" / "composites" / "b.jpg").write_bytes(b"\xff\xd8 not a jpeg any more")
    with _client(app) as client:
        (root / "mine" / "a.jpg").unlink()  # deleted while the studio runs
        for stem, left, right in (("a", "mine", "composite"), ("b", "composite", "reinhard")):
            pair = db.add_pair("session-0001", stem, left, right)
            response = client.get(f"/api/study/pair/{pair.id}/left")
            assert response.status_code == 404, response.text
            assert str(root) not in response.text and "\n" not in response.json()["detail"]
        for pair in _pairs(client, 40):
            stored = db.get_pair(pair["pair_id"])
            assert stored.image != "b" and not (stored.image == "a" and "mine" in (stored.left, stored.right))
    messages = [r.getMessage() for r in caplog.records if r.name == "gknet.studio"]
    assert len(messages) == 3 and all("\n" not in m for m in messages)  # the symlink, a.jpg, b.jpg
    assert "mine for a" in messages[1] and "gone" in messages[1]
    assert "composite for b" in messages[2] and "cannot read image" in messages[2]


def test_only_the_studios_own_host_names_are_answered(study_app):
    from gknet.studio.server import allowed_hosts

    make, _, _ = study_app
    assert allowed_hosts("0.0.0.0") == ("localhost", "127.0.0.1", "::1")
    assert allowed_hosts("192.168.1.5", ["Studio.Lan"]) == (
        "localhost",
        "127.0.0.1",
        "::1",
        "192.168.1.5",
        "studio.lan",
    )
    default, lan, anyone = make(), make(hosts=allowed_hosts("192.168.1.5", ["studio.lan"])), make(hosts=["*"])
    cases = [
        (default, "localhost:7860", 200),
        (default, "127.0.0.1:7860", 200),
        (default, "[::1]:7860", 200),
        (default, "LOCALHOST.", 200),
        (default, "evil.example.com", 400),
        (default, "192.168.1.5", 400),
        (lan, "192.168.1.5:7860", 200),
        (lan, "studio.lan", 200),
        (lan, "evil.example.com", 400),
        (anyone, "evil.example.com", 200),
    ]
    for app, host, status in cases:
        with _client(app) as client:
            assert client.get("/api/info", headers={"host": host}).status_code == status, host


def test_read_only_reports_never_write_the_database(world, tmp_path, capsys):
    for name in ("study.sqlite", "foreign.sqlite"):
        db = tmp_path / name
        db.write_bytes((world / name).read_bytes())
        code = main(["study", "scores", "--db", str(db), "--bootstrap", "10"])
        assert code == (0 if name == "study.sqlite" else 2), capsys.readouterr().err
        assert db.read_bytes() == (world / name).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if "foreign" in p.name) == ["foreign.sqlite"]
    assert main(["studio", "--db", str(tmp_path / "foreign.sqlite")]) == 2
    assert (tmp_path / "foreign.sqlite").read_bytes() == (world / "foreign.sqlite").read_bytes()
