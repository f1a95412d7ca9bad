"""Checkpoints, release weights, configs, API arguments, odd files and studio requests are checked
where they are read: one clear error (one line and exit code 2 on the command line), nothing
written, every input byte-identical afterwards."""

from __future__ import annotations

import io
import math
import os
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

from gknet.cli import main
from gknet.config import to_dict
from gknet.errors import GknetError
from gknet.inference.harmonizer import Harmonizer
from gknet.inference.release import save_release
from gknet.models import build_model
from gknet.training import train
from gknet.training.state import load_state, save_state
from tests.conftest import tiny_config
from tests.test_hostile_inputs import _image, _mask, snapshot
from tests.train_helpers import tiny_train_config, write_triplet_folder

pytestmark = pytest.mark.usefixtures("one_thread")
DEEP = 10_000  # levels of nesting: Python's parsers recurse once per level (limit 1,000)


def _first_moment(state):
    return next(iter(state["optimizer"]["state"].values()))["exp_avg"]


def _set(key, value):
    def change(state):
        state[key] = value

    return change


def _nan_weight(state):
    state["model"]["head.weight"][0, 0] = math.nan


def _integer_weight(state):
    state["model"]["head.weight"] = state["model"]["head.weight"].long()


def _wrong_shape(state):
    state["model"]["head.weight"] = state["model"]["head.weight"][:1]


def _extra_tensor(state):
    state["model"]["stray.weight"] = torch.zeros(1)


def _bad_config_value(state):
    state["config"]["train"]["lr"] = -1.0


# name -> (change to a good state, message)
BROKEN_CHECKPOINTS = {
    "NaN weights": (_nan_weight, "non-finite values"),
    "NaN optimiser state": (lambda s: _first_moment(s).fill_(math.nan), "non-finite values"),
    "step -5": (_set("step", -5), "step must be an integer >= 0, got -5"),
    "step 'abc'": (_set("step", "abc"), "step must be an integer >= 0, got 'abc'"),
    "epoch True": (_set("epoch", True), "epoch must be an integer >= 0"),
    "elapsed NaN": (_set("elapsed", math.nan), "elapsed must be a finite number"),
    "config as text": (_set("config", "model: {}"), "config must be a mapping"),
    "config lr -1": (_bad_config_value, "train.lr must be a finite number"),
    "no optimiser": (lambda s: s.pop("optimizer"), "it lacks optimizer"),
    "integer weights": (_integer_weight, "head.weight is torch.int64"),
    "weights of another shape": (_wrong_shape, "the config's model has torch.float32"),
    "a stray tensor": (_extra_tensor, "unexpected stray.weight"),
    "rng of text": (_set("rng", "seed"), "rng does not hold"),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("checked")
    root = write_triplet_folder(w / "triplets", count=8, size=40)
    cfg = tiny_train_config(root, max_steps=1)
    (w / "tiny.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    train(cfg, w / "run", device="cpu")
    good = load_state(w / "run" / "ckpt" / "last.pt")
    for name, (change, _) in BROKEN_CHECKPOINTS.items():
        state = load_state(w / "run" / "ckpt" / "last.pt")
        change(state)
        save_state(state, w / "ckpt" / f"{name.replace(' ', '_')}.pt")
    assert not math.isnan(float(good["model"]["head.weight"][0, 0]))

    model_cfg = tiny_config()
    save_release(build_model(model_cfg), model_cfg, w / "tiny.safetensors")
    tensors = load_file(str(w / "tiny.safetensors"))
    save_release(build_model(model_cfg), model_cfg, w / "int.safetensors")
    save_file(
        {k: v.to(torch.int32) if v.is_floating_point() else v for k, v in tensors.items()},
        str(w / "int.safetensors"),
    )
    save_release(build_model(model_cfg), model_cfg, w / "deep.safetensors")
    (w / "deep.json").write_text("[" * DEEP + "]" * DEEP)
    _image(w / "c.png"), _mask(w / "m.png")

    wide = to_dict(cfg)
    wide["model"].update(widths=[100_000, 200_000])
    (w / "wide.yaml").write_text(yaml.safe_dump(wide))
    (w / "deep.yaml").write_text("model: " + "[" * DEEP + "]" * DEEP + "\n")
    os.mkfifo(w / "fifo.png")
    return w


def _ckpt(name: str) -> str:
    return f"{{w}}/ckpt/{name.replace(' ', '_')}.pt"


TRAIN = ["train", "--config", "{w}/tiny.yaml", "--out", "{out}/run", "--device", "cpu"]
H = ["harmonize", "--device", "cpu", "--resolution", "32", "{w}/c.png", "{w}/m.png", "-o", "{out}/r.png"]

CLI_CASES = {
    **{
        f"resume: {name}": ([*TRAIN, "--resume", _ckpt(name)], m)
        for name, (_, m) in BROKEN_CHECKPOINTS.items()
    },
    **{
        f"export: {name}": (["export", _ckpt(name), "-o", "{out}/m.safetensors"], m)
        for name, (_, m) in BROKEN_CHECKPOINTS.items()
    },
    "resume with the stored config as text": (
        ["train", "--resume", _ckpt("config as text"), "--out", "{out}/run", "--device", "cpu"],
        "config must be a mapping",
    ),
    "integer release weights": (
        [*H, "--weights", "{w}/int.safetensors"],
        "is torch.int32, the model's is torch.float32",
    ),
    "release JSON nested 10,000 deep": ([*H, "--weights", "{w}/deep.safetensors"], "nested too deeply"),
    "train.image_size 1e9": (
        [*TRAIN, "--set", "train.image_size=1000000000"],
        "train.image_size: resolution 1000000000 is too large",
    ),
    "train widths 100000": ([*TRAIN, "--config", "{w}/wide.yaml"], "GB of weights (limit 16 GB)"),
    "info widths 100000": (["info", "--config", "{w}/wide.yaml"], "GB of weights (limit 16 GB)"),
    "info YAML nested 10,000 deep": (
        ["info", "--config", "{w}/deep.yaml"],
        "is not valid YAML: nested too deeply",
    ),
    "train --set nested 10,000 deep": (
        [*TRAIN, "--set", "train.betas=" + "[" * DEEP + "]" * DEEP],
        "the value is not valid YAML (nested too deeply)",
    ),
    "synth --size 1000000": (
        ["synth", "--root", "{w}/triplets", "--stats", "--size", "1000000"],
        "--size 1000000 is too large",
    ),
    "harmonize a FIFO": (
        ["harmonize", "--weights", "{w}/tiny.safetensors", "{w}/fifo.png", "{w}/m.png", "-o", "{out}/r.png"],
        "not a regular file",
    ),
}


def _no_hang(signum, frame):
    raise AssertionError("the command blocked (reading a FIFO?)")


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_case_is_one_line_and_writes_nothing(case, world, tmp_path, capsys):
    template, message = CLI_CASES[case]
    out = tmp_path / "out"
    out.mkdir()
    argv = [arg.format(w=world, out=out) for arg in template]
    before = snapshot(world)  # the FIFO is not a file: never read
    previous = signal.signal(signal.SIGALRM, _no_hang)
    signal.alarm(60)
    try:
        code = main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"gknet {argv[0]}: error: "), err
    assert message in lines[0] and "Traceback" not in err, err
    assert snapshot(world) == before, "an input was changed"
    assert not list(out.iterdir()), "something was written (a run folder?)"


def test_a_good_checkpoint_still_resumes_and_exports(world, tmp_path, capsys):
    last = str(world / "run" / "ckpt" / "last.pt")
    assert main(["export", last, "-o", str(tmp_path / "m.safetensors")]) == 0, capsys.readouterr().err
    argv = ["train", "--resume", last, "--out", str(tmp_path / "run"), "--device", "cpu"]
    assert main([*argv, "--set", "train.max_steps=2"]) == 0, capsys.readouterr().err
    assert load_state(tmp_path / "run" / "ckpt" / "last.pt")["step"] == 2


# ------------------------------------------------------------------------------- the Python API


@pytest.fixture(scope="module")
def harmonizer():
    return Harmonizer(build_model(tiny_config()), resolution=32)


API_CASES = {
    "0x0 image": (lambda h: h(Image.new("RGB", (0, 0)), Image.new("L", (0, 0))), "composite is empty"),
    "0-row array": (
        lambda h: h(np.zeros((0, 5, 3), np.uint8), np.zeros((0, 5), np.uint8)),
        "composite is empty",
    ),
    "batches 2 and 3": (
        lambda h: h(torch.rand(2, 3, 8, 8), torch.rand(3, 1, 8, 8)),
        "a batch of 3 masks for 2",
    ),
    "harmonize_tensor NaN": (
        lambda h: h.harmonize_tensor(torch.full((1, 3, 8, 8), math.nan), torch.ones(1, 1, 8, 8)),
        "composite holds NaN or infinite values, not numbers in [0, 1]: the input is broken",
    ),
    "harmonize_tensor mask inf": (
        lambda h: h.harmonize_tensor(torch.rand(1, 3, 8, 8), torch.full((1, 1, 8, 8), math.inf)),
        "mask holds NaN or infinite values",
    ),
    "harmonize_tensor 0-255 values": (
        lambda h: h.harmonize_tensor(torch.rand(1, 3, 8, 8) * 255, torch.ones(1, 1, 8, 8)),
        "composite values must lie in [0, 1]",
    ),
    "harmonize_tensors negative mask": (
        lambda h: h.harmonize_tensors([torch.rand(1, 3, 8, 8)], [-torch.ones(1, 1, 8, 8)]),
        "mask values must lie in [0, 1]",
    ),
}


@pytest.mark.parametrize("case", API_CASES)
def test_api_refuses_bad_input_with_the_reason(case, harmonizer):
    call, message = API_CASES[case]
    with pytest.raises(GknetError) as info:
        call(harmonizer)
    assert message in str(info.value)


def test_harmonize_tensor_refuses_what_call_refuses(harmonizer):
    for value in (1.5, -0.1, math.nan):
        composite = torch.full((1, 3, 8, 8), value)
        messages = []
        for call in (harmonizer, harmonizer.harmonize_tensor):
            with pytest.raises(GknetError) as info:
                call(composite, torch.ones(1, 1, 8, 8))
            messages.append(str(info.value))
        assert messages[0] == messages[1]


def test_every_image_read_refuses_a_fifo(world):
    from gknet.io.images import load_mask, load_rgb

    for load in (load_rgb, load_mask):
        with pytest.raises(GknetError, match="not a regular file"):
            load(world / "fifo.png")


# ----------------------------------------------------------------------------------- the studio


@pytest.fixture
def studio(world, tmp_path):
    pytest.importorskip("fastapi", reason="the studio extra (fastapi) is not installed")
    from fastapi.testclient import TestClient

    from gknet.studio.server import create_app

    _image(tmp_path / "study" / "composites" / "a.jpg"), _mask(tmp_path / "study" / "masks" / "a.png")
    harmonizer = Harmonizer.from_pretrained(world / "tiny.safetensors", resolution=32)
    app = create_app(tmp_path / "studio.sqlite", harmonizer=harmonizer, study_dir=tmp_path / "study", seed=0)
    with TestClient(app, base_url="http://localhost:7860") as client:
        yield client


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_studio_refuses_cross_site_requests(studio, world, monkeypatch):
    calls = []
    monkeypatch.setattr(Harmonizer, "__call__", lambda self, *a, **k: calls.append(1) or a[0])
    files = {
        "composite": ("c.png", (world / "c.png").read_bytes(), "image/png"),
        "mask": ("m.png", (world / "m.png").read_bytes(), "image/png"),
    }
    evil, own = "http://evil.example.com", "http://localhost:7860"
    cases = [
        ("POST", "/api/harmonize", {"origin": evil}, 403),
        ("POST", "/api/harmonize", {"referer": f"{evil}/page.html"}, 403),
        ("POST", "/api/harmonize", {"origin": "null"}, 403),
        ("POST", "/api/harmonize", {"origin": "http://localhost:8888"}, 403),  # another local server
        ("GET", "/api/study/pair?session=session-0001", {"origin": evil}, 403),  # stores a pair
        ("POST", "/api/harmonize", {"origin": own}, 200),
        ("POST", "/api/harmonize", {"referer": f"{own}/harmonize"}, 200),
        ("POST", "/api/harmonize", {}, 200),  # no web page: curl, scripts
        ("GET", "/harmonize", {"referer": f"{evil}/links.html"}, 200),  # a link to the studio works
    ]
    for method, url, headers, status in cases:
        kwargs = {"files": files} if method == "POST" else {}
        response = studio.request(method, url, headers=headers, **kwargs)
        assert response.status_code == status, (url, headers, response.text)
        if status == 403:
            assert "cross-site request refused" in response.json()["detail"]
    assert len(calls) == 3, "a refused request reached the model"


def test_studio_arguments_and_port_are_checked_before_anything_is_created(world, tmp_path, capsys):
    pytest.importorskip("fastapi", reason="the studio extra (fastapi) is not installed")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    db = tmp_path / "studio.sqlite"
    common = ["studio", "--db", str(db), "--weights", str(world / "tiny.safetensors"), "--device", "cpu"]
    cases = [
        (["--port", str(busy.getsockname()[1])], "cannot listen on 127.0.0.1:"),
        (["--methods", "composite,../../etc"], "unknown study method '../../etc'"),
        (["--study-dir", str(tmp_path / "nonexistent")], "study folder not found"),
    ]
    try:
        for extra, message in cases:
            assert main([*common, *extra]) == 2
            lines = capsys.readouterr().err.strip().splitlines()
            assert len(lines) == 1 and message in lines[0], lines
            assert list(tmp_path.iterdir()) == [], "the database was created"
    finally:
        busy.close()
