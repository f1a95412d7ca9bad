"""The studio web app: a harmonize page, a pairwise study page and a scores page.

``create_app`` returns a FastAPI app serving plain HTML/JS pages from ``static/`` and a small
JSON API:

- ``POST /api/harmonize`` (multipart ``composite`` + ``mask`` files, optional ``strength``
  field, 0-1.5, default 1) -> the full-resolution harmonized PNG; the page's strength slider
  re-renders from the composite and the strength-1 result in the browser, without a new pass;
- ``GET /api/study/pair?session=S`` -> a new blind pair (image URLs only, no method names);
- ``POST /api/study/vote`` ``{"session", "pair_id", "choice": "left" | "right"}``;
- ``GET /api/scores`` -> Bradley-Terry scores; ``GET /api/votes.csv`` -> every vote;
- ``GET /api/info`` -> what is loaded and the upload limits.

Every error is a JSON ``{"detail": "one clear sentence"}`` with a 4xx status for bad requests.
Requests naming another host than the studio's in their Host header are refused (400), so that
a web page cannot reach the studio through DNS rebinding.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import math
import random
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated
from urllib.parse import quote

from fastapi import FastAPI, File, Form, HTTPException, Query, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image, ImageOps, UnidentifiedImageError
from pydantic import BaseModel

from gknet.errors import GknetError
from gknet.inference.strength import MAX_STRENGTH, check_strength
from gknet.io.images import IMAGE_SUFFIXES, mask_image, rgb_image
from gknet.studio import bradley_terry
from gknet.studio.db import StudyDB, VoteError
from gknet.studio.study import DEFAULT_METHODS, ImageMethod, StudySet, UnavailableResult, builtin_methods

STATIC = Path(__file__).resolve().parent / "static"
PAGES = ("harmonize", "study", "scores")
DEFAULT_MAX_UPLOAD_MB = 25.0
DEFAULT_MAX_PIXELS = 50_000_000
# Decoders for the suffixes of gknet.io.images.IMAGE_SUFFIXES; no exotic formats from the web.
FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP")
SESSION = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
VOTE_ERROR_STATUS = {"invalid": 422, "unknown_pair": 404, "other_session": 403, "duplicate": 409}
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
ANY_HOST = "*"


def host_name(header: str) -> str:
    """The host of a Host header, without port, brackets or a final dot, in lower case."""
    host = header.strip().lower()
    if host.startswith("["):  # [::1]:7860
        host = host[1 : host.find("]")] if "]" in host else ""
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def allowed_hosts(bound: str, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """Host names to answer for a studio listening on ``bound``: the local names, the bound
    address unless it is a wildcard (0.0.0.0, ::), and ``extra``."""
    try:
        wildcard = ipaddress.ip_address(bound.strip("[]")).is_unspecified
    except ValueError:
        wildcard = False
    names = [*LOCAL_HOSTS, *([] if wildcard else [bound]), *extra]
    return tuple(dict.fromkeys(host_name(name) if name != ANY_HOST else name for name in names))


class HostCheck:
    """ASGI middleware: 400 for a Host header naming a host that is not allowed (DNS rebinding)."""

    def __init__(self, app, hosts: Iterable[str]):
        self.app = app
        self.hosts = frozenset(hosts)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and ANY_HOST not in self.hosts:  # the studio has no websockets
            header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if host_name(header) not in self.hosts:
                message = "this studio does not answer for that host name (its --allow-host option adds one)"
                return await JSONResponse({"detail": message}, 400)(scope, receive, send)
        return await self.app(scope, receive, send)


class VoteRequest(BaseModel):
    session: str
    pair_id: str
    choice: str


class UploadLimit:
    """ASGI middleware: 413 for request bodies above ``max_bytes``, declared or streamed."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _message(self) -> str:
        return f"upload too large: the limit is {self.max_bytes / 1e6:g} MB per request"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.max_bytes:
            return await JSONResponse({"detail": self._message()}, 413)(scope, receive, send)
        received = 0

        async def counting_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise HTTPException(413, self._message())  # FastAPI re-raises it from body parsing
            return message

        return await self.app(scope, counting_receive, send)


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.3g} MP"


def _short(text: str, limit: int = 60) -> str:
    """A client-supplied name, cut so that an error message never echoes megabytes."""
    return text if len(text) <= limit else text[:limit] + "..."


def read_upload(upload: UploadFile, field: str, max_pixels: int) -> Image.Image:
    """Decode an uploaded image file (EXIF orientation applied), or raise a 4xx HTTPException."""
    name = _short(upload.filename or field)
    content_type = _short((upload.content_type or "").lower())
    if not content_type.startswith("image/") and Path(name).suffix.lower() not in IMAGE_SUFFIXES:
        raise HTTPException(
            415,
            f"{field} {name!r} is not an image ({content_type or 'unknown type'}): upload JPEG, PNG, "
            "BMP, TIFF or WebP",
        )
    data = upload.file.read()
    if not data:
        raise HTTPException(400, f"{field} {name!r} is empty")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = img.size
        if width * height > max_pixels:
            raise HTTPException(
                413,
                f"{field} is {width}x{height} ({_megapixels(width * height)}); "
                f"the limit is {_megapixels(max_pixels)}",
            )
        img.load()
        return ImageOps.exif_transpose(img)
    except Image.DecompressionBombError as exc:
        raise HTTPException(413, f"{field} is too large to decode safely: {exc}") from None
    except UnidentifiedImageError:
        raise HTTPException(415, f"{field} {name!r} is not a JPEG, PNG, BMP, TIFF or WebP image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise HTTPException(400, f"cannot decode {field} {name!r}: {exc}") from None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _png(img: Image.Image) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", compress_level=1)  # full-resolution results: speed over size
    return buffer.getvalue()


def _validation_message(exc: RequestValidationError) -> str:
    """One sentence for FastAPI's list of validation errors."""
    parts = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            return "the request body is not valid JSON"
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("body", "query"))
        missing = error.get("type") == "missing"
        parts.append(f"missing field '{where}'" if missing else f"{where}: {error['msg']}")
    return "; ".join(parts) or "invalid request"


def create_app(
    db_path: str | Path,
    harmonizer: ImageMethod | None = None,
    study_dir: str | Path | None = None,
    methods: tuple[str, ...] = DEFAULT_METHODS,
    cache_dir: str | Path | None = None,
    model_tag: str = "",
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    seed: int | None = None,
    hosts: Iterable[str] = LOCAL_HOSTS,
) -> FastAPI:
    """The studio app.

    db_path: SQLite file for the study (created if missing). harmonizer: ``h(composite, mask)``
    on PIL images (a :class:`gknet.Harmonizer`), or None for no model (harmonize answers 503 and
    the study leaves ``gknet`` out). study_dir: folder with composites/ and masks/, or None to
    disable the study. methods: built-in methods compared in the study, plus every folder
    registered in the database. cache_dir: where computed results are cached (default: beside
    the database, ``<db stem>_cache``). model_tag: names the model's cache folder so results of
    other weights are not reused. seed: fixes the order of pairs (tests). hosts: the host names
    answered (Host header; ``"*"`` answers any, see :func:`allowed_hosts`).
    """
    if not (math.isfinite(max_upload_mb) and max_upload_mb > 0):
        raise GknetError(f"the upload limit must be a positive number of MB, got {max_upload_mb}")
    if max_pixels < 1:
        raise GknetError(f"the pixel limit must be a positive number of pixels, got {max_pixels}")
    db = StudyDB(db_path)
    cache_dir = Path(cache_dir) if cache_dir else db.path.with_name(f"{db.path.stem}_cache")
    study = None
    if study_dir is not None:
        study = StudySet(
            study_dir, cache_dir, builtin_methods(methods, harmonizer), db.registered_methods(), model_tag
        )
    rng = random.Random(seed)
    rng_lock = threading.Lock()
    model_lock = threading.Lock()

    app = FastAPI(title="gknet studio", docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    app.add_middleware(UploadLimit, max_bytes=int(max_upload_mb * 1e6))
    app.add_middleware(HostCheck, hosts=hosts)  # added last: runs first
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        return JSONResponse({"detail": _validation_message(exc)}, 422)

    @app.exception_handler(GknetError)
    async def _gknet_error(request, exc: GknetError):
        return JSONResponse({"detail": str(exc)}, 503)  # the server's data, not the request, is at fault

    @app.get("/", include_in_schema=False)
    def index():
        return RedirectResponse("/harmonize")

    for page in PAGES:
        app.add_api_route(
            f"/{page}", lambda page=page: FileResponse(STATIC / f"{page}.html"), include_in_schema=False
        )

    @app.get("/api/info")
    def info():
        return {
            "model": harmonizer is not None,
            "study_images": len(study.samples) if study else 0,
            "study_methods": study.method_names if study else [],
            "votes": db.count_votes(),
            "max_upload_mb": max_upload_mb,
            "max_pixels": max_pixels,
            "max_strength": MAX_STRENGTH,
        }

    @app.post("/api/harmonize")
    def harmonize(
        composite: Annotated[UploadFile, File()],
        mask: Annotated[UploadFile, File()],
        strength: Annotated[float, Form()] = 1.0,
    ):
        if harmonizer is None:
            raise HTTPException(503, "no model loaded: start the studio with --weights PATH")
        try:
            strength = check_strength(strength)
        except GknetError as exc:
            raise HTTPException(422, str(exc)) from None
        image = rgb_image(read_upload(composite, "composite", max_pixels))
        alpha = mask_image(read_upload(mask, "mask", max_pixels))
        if alpha.size != image.size:
            (mw, mh), (cw, ch) = alpha.size, image.size
            raise HTTPException(422, f"mask is {mw}x{mh} but the composite is {cw}x{ch}")
        if alpha.getextrema()[1] == 0:
            raise HTTPException(422, "the mask is empty: upload a mask or paint the foreground")
        try:
            with model_lock:  # one image at a time: a forward pass already uses every core
                result = harmonizer(image, alpha, strength=strength)
        except GknetError as exc:
            raise HTTPException(422, str(exc)) from None
        name = f"{Path(composite.filename or 'image').stem}_harmonized.png"
        # RFC 6266: an ASCII fallback plus the UTF-8 name (headers themselves must be Latin-1).
        fallback = re.sub(r"[^A-Za-z0-9._-]", "_", name)
        disposition = f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name)}"
        return Response(_png(result), media_type="image/png", headers={"Content-Disposition": disposition})

    def _session(session: str) -> str:
        if not SESSION.match(session):
            raise HTTPException(422, "session must be 8-64 letters, digits, '-' or '_'")
        return session

    @app.get("/api/study/pair")
    def new_pair(session: Annotated[str, Query()]):
        if study is None:
            raise HTTPException(503, "no study images: start the studio with --study-dir DIR")
        session = _session(session)
        with rng_lock:
            stem, left, right = study.random_pair(rng)
        pair = db.add_pair(session, stem, left, right)
        return {
            "pair_id": pair.id,
            "left": f"/api/study/pair/{pair.id}/left",
            "right": f"/api/study/pair/{pair.id}/right",
            "votes": db.count_votes(session),
        }

    @app.get("/api/study/pair/{pair_id}/{side}")
    def pair_image(pair_id: str, side: str):
        pair = db.get_pair(pair_id)
        if pair is None or side not in ("left", "right") or study is None:
            raise HTTPException(404, "unknown pair or side")
        try:  # every method's result as the same kind of PNG: the format tells nothing
            png = study.png(pair.left if side == "left" else pair.right, pair.image)
        except UnavailableResult:
            raise HTTPException(
                404, f"the {side} image of this pair cannot be shown; skip the pair"
            ) from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @app.post("/api/study/vote")
    def vote(request: VoteRequest):
        try:
            db.add_vote(request.pair_id, _session(request.session), request.choice)
        except VoteError as exc:
            raise HTTPException(VOTE_ERROR_STATUS[exc.reason], str(exc)) from None
        return {"votes": db.count_votes(request.session)}

    @app.get("/api/scores")
    def scores(bootstrap: Annotated[int, Query(ge=0, le=5000)] = 200):
        votes = db.votes()
        rows = bradley_terry.score_table([(v.winner, v.loser) for v in votes], n_boot=bootstrap)
        return {
            "votes": len(votes),
            "sessions": len({v.session for v in votes}),
            "bootstrap": bootstrap,
            "rows": [
                {
                    "method": r.method,
                    "score": r.score,
                    "low": _finite(r.low),
                    "high": _finite(r.high),
                    "wins": r.wins,
                    "comparisons": r.comparisons,
                }
                for r in rows
            ],
        }

    @app.get("/api/votes.csv")
    def votes_csv():
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["time", "session", "image", "left", "right", "winner"])
        writer.writerows((v.time, v.session, v.image, v.left, v.right, v.winner) for v in db.votes())
        return Response(
            buffer.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="votes.csv"'},
        )

    return app
