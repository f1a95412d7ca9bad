"""Studio web API through FastAPI's TestClient: harmonize, bad requests, study votes, scores, CLI."""

from __future__ import annotations

import csv
import io
import itertools
import os

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the studio extra (fastapi) is not installed")
pytest.importorskip("httpx", reason="httpx (FastAPI's test client) is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from gknet.cli import main  # noqa: E402
from gknet.io.atomic import temporary_path  # noqa: E402
from gknet.studio.db import StudyDB  # noqa: E402
from gknet.studio.server import create_app  # noqa: E402
from tests.conftest import box_mask, random_rgb, write_image  # noqa: E402

SESSION = "test-session-1"
LOCAL = "http://localhost"  # the studio answers only the host names it serves (see HostCheck)
STUDY_SIZES = {"a": (40, 32), "b": (36, 36), "c": (48, 30)}


def png_bytes(image: Image.Image | np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    (Image.fromarray(image) if isinstance(image, np.ndarray) else image).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def harmonizer(tiny_release):
    from gknet import Harmonizer

    return Harmonizer.from_pretrained(tiny_release, resolution=32)  # small working size: fast on a shared CPU


@pytest.fixture
def study_dir(tmp_path):
    root = tmp_path / "study"
    (root / "composites").mkdir(parents=True)
    (root / "masks").mkdir()
    for seed, (stem, size) in enumerate(STUDY_SIZES.items()):
        write_image(root / "composites" / f"{stem}.jpg", random_rgb(size, seed))
        write_image(root / "masks" / f"{stem}.png", box_mask(size))
    return root


@pytest.fixture
def client(tmp_path, harmonizer, study_dir):
    app = create_app(tmp_path / "studio.sqlite", harmonizer=harmonizer, study_dir=study_dir, seed=0)
    with TestClient(app, base_url=LOCAL) as test_client:
        yield test_client


def upload(client, composite: bytes, mask: bytes, names=("c.png", "m.png"), types=("image/png", "image/png")):
    files = {"composite": (names[0], composite, types[0]), "mask": (names[1], mask, types[1])}
    return client.post("/api/harmonize", files=files)


def test_pages_and_info(client):
    for page in ("/harmonize", "/study", "/scores", "/static/style.css", "/static/harmonize.js"):
        assert client.get(page).status_code == 200, page
    assert client.get("/", follow_redirects=False).headers["location"] == "/harmonize"
    info = client.get("/api/info").json()
    assert info["model"] is True and info["study_images"] == 3
    assert info["study_methods"] == ["composite", "reinhard", "gknet"]
    assert info["max_upload_mb"] == 25.0


def test_harmonize_returns_the_full_resolution_result(client, harmonizer):
    composite = Image.fromarray(random_rgb((70, 50), 7))
    painted = np.zeros((50, 70, 4), dtype=np.uint8)
    painted[10:40, 5:45] = (255, 45, 45, 255)  # what the brush canvas exports: red, alpha = coverage
    response = upload(
        client, png_bytes(composite), png_bytes(Image.fromarray(painted)), ("été 1.png", "mask.png")
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    disposition = response.headers["content-disposition"]  # non-ASCII names survive, percent-encoded
    assert 'filename="_t__1_harmonized.png"' in disposition
    assert "filename*=UTF-8''%C3%A9t%C3%A9%201_harmonized.png" in disposition
    result = np.asarray(Image.open(io.BytesIO(response.content)))
    assert result.shape == (50, 70, 3)
    np.testing.assert_array_equal(result, np.asarray(harmonizer(composite, Image.fromarray(painted[..., 3]))))
    outside = painted[..., 3] == 0
    np.testing.assert_array_equal(result[outside], np.asarray(composite)[outside])
    assert not np.array_equal(result[~outside], np.asarray(composite)[~outside])


SMALL = png_bytes(random_rgb((40, 30), 1))
SMALL_MASK = png_bytes(box_mask((40, 30)))
PNG = "image/png"


@pytest.fixture
def limited_client(tmp_path, harmonizer):
    app = create_app(tmp_path / "s.sqlite", harmonizer=harmonizer, max_upload_mb=0.05, max_pixels=5000)
    with TestClient(app, base_url=LOCAL) as test_client:
        yield test_client


@pytest.mark.parametrize(
    "files, status, message",
    [
        ({"composite": ("c.png", SMALL, PNG)}, 422, "missing field 'mask'"),
        (
            {"composite": ("notes.txt", b"hello", "text/plain"), "mask": ("m.png", SMALL_MASK, PNG)},
            415,
            "not an image",
        ),
        (
            {"composite": ("c.png", b"\0" * 100, PNG), "mask": ("m.png", SMALL_MASK, PNG)},
            415,
            "not a JPEG, PNG",
        ),
        (
            {"composite": ("c.png", SMALL[:300], PNG), "mask": ("m.png", SMALL_MASK, PNG)},
            400,
            "cannot decode composite",
        ),
        ({"composite": ("c.png", b"", PNG), "mask": ("m.png", SMALL_MASK, PNG)}, 400, "'c.png' is empty"),
        (
            {
                "composite": ("c.png", png_bytes(Image.new("RGB", (100, 80))), PNG),
                "mask": ("m.png", SMALL_MASK, PNG),
            },
            413,
            "composite is 100x80 (0.008 MP); the limit is 0.005 MP",
        ),
        (
            {
                "composite": ("c.png", png_bytes(random_rgb((150, 120), 2)), PNG),
                "mask": ("m.png", SMALL_MASK, PNG),
            },
            413,
            "the limit is 0.05 MB",
        ),
        (
            {"composite": ("c.png", SMALL, PNG), "mask": ("m.png", png_bytes(box_mask((30, 30))), PNG)},
            422,
            "mask is 30x30 but the composite is 40x30",
        ),
        (
            {"composite": ("c.png", SMALL, PNG), "mask": ("m.png", png_bytes(Image.new("L", (40, 30))), PNG)},
            422,
            "the mask is empty",
        ),
    ],
    ids=[
        "missing",
        "text",
        "garbage",
        "truncated",
        "empty-file",
        "pixels",
        "bytes",
        "mismatch",
        "empty-mask",
    ],
)
def test_bad_harmonize_requests_get_clear_4xx(limited_client, files, status, message):
    response = limited_client.post("/api/harmonize", files=files)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_streamed_upload_is_cut_off_at_the_limit(limited_client):
    chunks = (b"x" * 10_000 for _ in range(10))  # no Content-Length header: counted while received
    response = limited_client.post(
        "/api/harmonize", content=chunks, headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert response.status_code == 413 and "limit" in response.json()["detail"]


def test_harmonize_without_model_is_unavailable(tmp_path):
    with TestClient(create_app(tmp_path / "s.sqlite"), base_url=LOCAL) as client:
        response = upload(client, png_bytes(random_rgb((8, 8), 0)), png_bytes(box_mask((8, 8))))
        assert response.status_code == 503 and "--weights" in response.json()["detail"]
        assert client.get("/api/study/pair", params={"session": SESSION}).status_code == 503


def vote(client, pair_id, choice, session=SESSION):
    return client.post("/api/study/vote", json={"session": session, "pair_id": pair_id, "choice": choice})


def test_study_pairs_votes_and_scores_persist(tmp_path, client, study_dir, harmonizer):
    seen = set()
    for k in range(24):
        pair = client.get("/api/study/pair", params={"session": SESSION}).json()
        left, right = client.get(pair["left"]), client.get(pair["right"])
        assert left.status_code == right.status_code == 200
        stored = StudyDB(tmp_path / "studio.sqlite").get_pair(pair["pair_id"])
        assert stored.left != stored.right
        assert Image.open(io.BytesIO(left.content)).size == STUDY_SIZES[stored.image]
        seen.add((stored.left, stored.right))
        assert vote(client, pair["pair_id"], "left" if k % 3 else "right").json() == {"votes": k + 1}
    # random order and random sides: every ordered pair of the three methods came up
    assert seen == set(itertools.permutations(["composite", "reinhard", "gknet"], 2))

    # results are cached beside the database and match the method run directly
    cached = tmp_path / "studio_cache" / "gknet" / "a.png"
    composite = Image.open(study_dir / "composites" / "a.jpg").convert("RGB")
    expected = harmonizer(composite, Image.open(study_dir / "masks" / "a.png").convert("L"))
    np.testing.assert_array_equal(np.asarray(Image.open(cached)), np.asarray(expected))
    assert (tmp_path / "studio_cache" / "reinhard" / "a.png").is_file()

    # a fresh app on the same file (as after a killed server) sees every vote, and removes the
    # cache temporaries a killed server left (an hour old), not those of a live one
    left_behind, live = (temporary_path(cached.with_name(n)) for n in ("b.png", "c.png"))
    for path in (left_behind, live):
        path.write_bytes(b"partial")
    os.utime(left_behind, (left_behind.stat().st_mtime - 7200,) * 2)
    votes = StudyDB(tmp_path / "studio.sqlite").votes()
    assert len(votes) == 24 and all(v.session == SESSION and v.winner in (v.left, v.right) for v in votes)
    with TestClient(
        create_app(tmp_path / "studio.sqlite", harmonizer=harmonizer, study_dir=study_dir), base_url=LOCAL
    ) as again:
        scores = again.get("/api/scores", params={"bootstrap": 50}).json()
        assert scores["votes"] == 24 and scores["sessions"] == 1
        by_method = {row["method"]: row for row in scores["rows"]}
        for name, row in by_method.items():
            assert row["wins"] == sum(v.winner == name for v in votes)
            assert row["comparisons"] == sum(name in (v.left, v.right) for v in votes)
            assert row["low"] <= row["score"] <= row["high"]
        rows = list(csv.DictReader(io.StringIO(again.get("/api/votes.csv").text)))
        assert [r["winner"] for r in rows] == [v.winner for v in votes]
    assert not left_behind.exists() and live.exists()


def test_bad_votes(client):
    pair = client.get("/api/study/pair", params={"session": SESSION}).json()
    assert vote(client, pair["pair_id"], "middle").status_code == 422
    assert vote(client, pair["pair_id"], "left", session="someone-else").status_code == 403
    assert vote(client, "no-such-pair", "left").status_code == 404
    assert vote(client, pair["pair_id"], "left").status_code == 200
    duplicate = vote(client, pair["pair_id"], "right")
    assert duplicate.status_code == 409 and "already" in duplicate.json()["detail"]
    assert client.post("/api/study/vote", json={"session": SESSION}).json()["detail"] == (
        "missing field 'pair_id'; missing field 'choice'"
    )
    assert client.get("/api/study/pair", params={"session": "x y"}).status_code == 422
    assert client.get("/api/study/pair").status_code == 422
    assert client.get("/api/study/pair/nope/left").status_code == 404


def test_registered_folder_joins_the_study(tmp_path, study_dir, harmonizer, capsys):
    results = tmp_path / "mine"
    results.mkdir()
    for stem, size in list(STUDY_SIZES.items())[:2]:  # a folder may cover only some images
        Image.new("RGB", size, (0, 200, 0)).save(results / f"{stem}.png")
    db = tmp_path / "studio.sqlite"
    assert main(["study", "add", "mine", str(results), "--db", str(db)]) == 0
    assert "registered mine: 2 images" in capsys.readouterr().out
    assert main(["study", "add", "reinhard", str(results), "--db", str(db)]) == 2
    assert main(["study", "add", "bad name", str(results), "--db", str(db)]) == 2
    assert main(["study", "add", "x", str(tmp_path / "missing"), "--db", str(db)]) == 2

    app = create_app(
        db, harmonizer=harmonizer, study_dir=study_dir, methods=("composite", "reinhard"), seed=1
    )
    with TestClient(app, base_url=LOCAL) as client:
        assert client.get("/api/info").json()["study_methods"] == ["composite", "reinhard", "mine"]
        shown = []
        for _ in range(30):
            pair = client.get("/api/study/pair", params={"session": SESSION}).json()
            stored = StudyDB(db).get_pair(pair["pair_id"])
            shown.append(stored)
            if "mine" in (stored.left, stored.right):
                side = "left" if stored.left == "mine" else "right"
                assert Image.open(io.BytesIO(client.get(pair[side]).content)).getpixel((0, 0)) == (0, 200, 0)
            vote(client, pair["pair_id"], "left")
    assert any("mine" in (p.left, p.right) for p in shown)
    assert not any("mine" in (p.left, p.right) and p.image == "c" for p in shown)


def test_scores_cli(tmp_path, capsys):
    db = StudyDB(tmp_path / "votes.sqlite")
    outcomes = [("gknet", "composite")] * 9 + [("composite", "gknet")] * 3 + [("gknet", "reinhard")] * 6
    for k, (winner, loser) in enumerate(outcomes):
        pair = (
            db.add_pair(SESSION, f"img{k}", winner, loser)
            if k % 2
            else db.add_pair(SESSION, f"img{k}", loser, winner)
        )
        db.add_vote(pair.id, SESSION, "left" if pair.left == winner else "right")
    plot = tmp_path / "scores.png"
    args = ["study", "scores", "--db", str(db.path), "--bootstrap", "100", "--plot", str(plot)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "18 votes on 18 images, 1 session(s)" in out
    table = out.splitlines()[2:5]
    assert [line.split()[0] for line in table] == ["gknet", "composite", "reinhard"]
    assert Image.open(plot).format == "PNG"
    assert main(args) == 2  # the plot is not overwritten without --overwrite
    assert main(["study", "scores", "--db", str(tmp_path / "none.sqlite")]) == 2
