"""``gknet studio``: the local web app (harmonize page, pairwise user study, scores)."""

from __future__ import annotations

import hashlib
import ipaddress
import sys
from pathlib import Path

from gknet.cli._args import integer, number


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "studio",
        help="local web app: harmonize your images and run a pairwise user study",
        description="Start the studio web server (see docs/studio.md). Needs the 'studio' extra: "
        "pip install 'gknet[studio]'.",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)"
    )
    p.add_argument("--port", type=integer(1, 65535), default=7860, help="default: 7860")
    p.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests for this host name (repeatable; '*' answers any). By default only "
        "localhost, 127.0.0.1, ::1 and the --host address are answered (no DNS rebinding)",
    )
    p.add_argument(
        "--db", default="studio.sqlite", help="SQLite file of the study votes (default: studio.sqlite)"
    )
    p.add_argument(
        "--weights",
        default="default",
        metavar="NAME|PATH",
        help="shipped weights (default: gknet_small) or a release .safetensors file",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    p.add_argument(
        "--study-dir",
        metavar="DIR",
        help="folder with composites/ and masks/ for the study (without it the study page is disabled)",
    )
    p.add_argument(
        "--methods",
        default="composite,reinhard,gknet",
        help="built-in methods in the study, comma separated (default: composite,reinhard,gknet); "
        "folders registered with 'gknet study add' are always included",
    )
    p.add_argument(
        "--max-upload-mb",
        type=number(0, low_open=True),
        default=25.0,
        help="upload limit per request (default: 25)",
    )
    p.add_argument(
        "--max-pixels", type=integer(1), default=50_000_000, help="pixel limit per image (default: 50e6)"
    )
    p.set_defaults(func=run)


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _listen(host: str, port: int):
    """A socket bound to (host, port), for uvicorn to serve on: a busy port is one clear error
    before anything is loaded or created."""
    import socket

    from gknet.errors import GknetError

    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(info[0], socket.SOCK_STREAM)
    except OSError as exc:
        raise GknetError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restarts reuse the port
        sock.bind(info[4])
    except OSError as exc:
        sock.close()
        raise GknetError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _check_arguments(args) -> tuple[Path | None, tuple[str, ...]]:
    """(study folder, methods), every argument checked before anything is created."""
    from gknet.errors import GknetError
    from gknet.inference.release import release_files
    from gknet.io.atomic import check_writable
    from gknet.io.guard import Inputs
    from gknet.studio.db import StudyDB
    from gknet.studio.study import BUILTIN_METHODS

    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [name for name in methods if name not in BUILTIN_METHODS]
    if unknown:
        raise GknetError(f"unknown study method {unknown[0][:40]!r}; built-in: {', '.join(BUILTIN_METHODS)}")
    study_dir = Path(args.study_dir) if args.study_dir else None
    if study_dir is not None and not study_dir.is_dir():
        raise GknetError(f"study folder not found: {study_dir} (it holds composites/ and masks/)")
    db = Path(args.db)
    if db.exists():
        StudyDB(db, readonly=True)  # refuse another program's database without touching it
    else:
        check_writable(db)
    folders = [study_dir / "composites", study_dir / "masks"] if study_dir else []
    Inputs(release_files(args.weights), folders).check(db, db.with_name(f"{db.stem}_cache"))
    return study_dir, methods


def run(args) -> int:
    from gknet.errors import GknetError

    try:
        import uvicorn

        from gknet.studio.server import allowed_hosts, create_app
    except ImportError as exc:
        raise GknetError(
            f"the studio needs extra packages ({exc.name}): pip install 'gknet[studio]'"
        ) from None
    from gknet import Harmonizer
    from gknet.inference.release import weights_path

    study_dir, methods = _check_arguments(args)
    hosts = allowed_hosts(args.host, args.allow_host)
    sock = _listen(args.host, args.port)
    try:
        weights = weights_path(args.weights)
        harmonizer = Harmonizer.from_pretrained(weights, device=args.device)
        # Cached study results are keyed by the weights' content, so new weights never reuse old results.
        model_tag = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
        if study_dir is None:
            print("gknet studio: no --study-dir given; the study page is disabled", file=sys.stderr)
        app = create_app(
            args.db,
            harmonizer=harmonizer,
            study_dir=study_dir,
            methods=methods,
            model_tag=model_tag,
            max_upload_mb=args.max_upload_mb,
            max_pixels=args.max_pixels,
            hosts=hosts,
        )
        if not _is_loopback(args.host):
            print(
                f"gknet studio: warning: listening on {args.host}: other machines can reach the studio; "
                f"it answers requests for {', '.join(hosts)} (add names with --allow-host)",
                file=sys.stderr,
            )
        print(f"gknet studio: http://{args.host}:{args.port}/  (votes in {args.db}; Ctrl+C to stop)")
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0
