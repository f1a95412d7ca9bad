"""End to end: the real studio server driven by Debian's Chromium through Playwright.

Needs the ``playwright`` Python package (not its browser download) and ``/usr/bin/chromium``
(``apt-get install -y chromium``); skipped with the reason when either is missing.
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import require_shared

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SESSION_RE = re.compile(r"(\d+) votes? from 1 session")

sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")
uvicorn = pytest.importorskip("uvicorn", reason="the studio extra (uvicorn) is not installed")
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is absent (install it with: apt-get install -y chromium)", allow_module_level=True
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_release):
    """The studio on a free localhost port, served by uvicorn in a thread: (base URL, db path)."""
    from gknet import Harmonizer
    from gknet.studio.server import create_app

    lalonde = require_shared("data", "lalonde_composites")
    root = tmp_path_factory.mktemp("studio")
    study = root / "study"
    for sub, suffix in (("composites", ".jpg"), ("masks", ".png")):  # three images keep the test fast
        (study / sub).mkdir(parents=True)
        for stem in ("image_000015", "image_000020", "image_000037"):
            shutil.copy(lalonde / sub / f"{stem}{suffix}", study / sub)
    harmonizer = Harmonizer.from_pretrained(tiny_release, resolution=32)
    app = create_app(root / "studio.sqlite", harmonizer=harmonizer, study_dir=study, seed=0)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the studio server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", study, root / "studio.sqlite"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def page():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 800}, accept_downloads=True)
        page.set_default_timeout(20_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        yield page
        browser.close()
        assert not errors, f"JavaScript errors: {errors}"


def test_harmonize_upload_and_download(server, page, tmp_path):
    base, study, _ = server
    composite = study / "composites" / "image_000020.jpg"
    page.goto(f"{base}/harmonize")
    assert page.locator("#run").is_disabled()
    page.set_input_files("#composite-file", str(composite))
    page.set_input_files("#mask-file", str(study / "masks" / "image_000020.png"))
    page.click("#run")
    page.wait_for_selector("#download:not([hidden])")
    assert page.locator("#status").inner_text().startswith("Done: 256×256")
    assert page.locator("#compare-area").is_visible()
    assert page.evaluate("document.getElementById('after').naturalWidth") == 256
    with page.expect_download() as download:
        page.click("#download")
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == "image_000020_harmonized.png"
    with Image.open(saved) as result, Image.open(composite) as original:
        assert result.format == "PNG" and result.size == original.size

    # paint a mask with the brush instead of uploading one
    page.click("#view-mask")
    page.click("#clear-mask")
    assert page.locator("#run").is_disabled()
    box = page.locator("#mask-canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.4)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6, steps=8)
    page.mouse.up()
    page.click("#run")
    page.wait_for_selector("#download:not([hidden])")
    assert page.locator("#status").inner_text().startswith("Done")


def test_wrong_upload_shows_the_server_message(server, page, tmp_path):
    base, study, _ = server
    page.goto(f"{base}/harmonize")
    page.set_input_files("#composite-file", str(study / "composites" / "image_000015.jpg"))
    Image.new("L", (64, 64), 255).save(tmp_path / "small_mask.png")
    page.set_input_files("#mask-file", str(tmp_path / "small_mask.png"))
    page.click("#run")
    page.wait_for_selector("#status.error")
    assert page.locator("#status").inner_text() == "mask is 64x64 but the composite is 256x256"


def test_votes_show_up_in_the_scores(server, page):
    from gknet.studio.db import StudyDB

    base, _, db_path = server
    page.goto(f"{base}/study")
    for k, press in enumerate(["ArrowLeft", "ArrowRight", "ArrowLeft", "#vote-right", "#pick-left"]):
        page.wait_for_selector("#vote-left:enabled")
        if press.startswith("#"):
            page.click(press)
        else:
            page.keyboard.press(press)
        page.wait_for_function(
            f"document.getElementById('count').textContent === '{k + 1} vote{'s' if k else ''}'"
        )
    votes = StudyDB(db_path).votes()
    assert len(votes) == 5 and len({v.session for v in votes}) == 1
    assert [v.winner == v.left for v in votes] == [True, False, True, False, True]

    page.goto(f"{base}/scores")
    page.wait_for_selector("#table tbody tr")
    assert SESSION_RE.search(page.locator("#summary").inner_text()).group(1) == "5"
    cells = page.locator("#table tbody tr").evaluate_all(
        "rows => rows.map(r => [...r.cells].map(c => c.textContent))"
    )
    assert sum(int(row[3]) for row in cells) == 5
    assert {row[0] for row in cells} == {name for v in votes for name in (v.left, v.right)}
    assert page.locator("#bars .bar-row").count() == len(cells)
