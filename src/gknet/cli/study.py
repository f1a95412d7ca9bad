"""``gknet study``: register result folders for the user study and score its votes."""

from __future__ import annotations

from gknet.cli._args import integer, number


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "study", help="user-study results: register method folders, Bradley-Terry scores"
    )
    sub = p.add_subparsers(dest="study_command", metavar="ACTION", required=True)

    add = sub.add_parser(
        "add",
        help="register a folder of results (named like the study composites) as a method",
        description="Register DIR as method METHOD: its images, named like the study composites "
        "(same file stem), are compared with the other methods. Restart the studio afterwards.",
    )
    add.add_argument("method", metavar="METHOD", help="method name shown in the scores, e.g. dovenet")
    add.add_argument("dir", metavar="DIR", help="folder of result images")
    add.add_argument("--db", default="studio.sqlite", help="study database (default: studio.sqlite)")
    add.set_defaults(func=run_add, command="study add")  # errors read "gknet study add: ..."

    scores = sub.add_parser(
        "scores",
        help="Bradley-Terry scores of the votes with bootstrap intervals (paper Table 3)",
        description="Fit Bradley-Terry scores to the votes by maximum likelihood (MM algorithm) and "
        "print them with bootstrap confidence intervals. See docs/studio.md.",
    )
    scores.add_argument("--db", default="studio.sqlite", help="study database (default: studio.sqlite)")
    scores.add_argument(
        "--bootstrap", type=integer(0), default=1000, help="bootstrap resamples (default: 1000; 0: none)"
    )
    scores.add_argument(
        "--confidence",
        type=number(0, 1, low_open=True, high_open=True),
        default=0.95,
        help="interval level (default: 0.95)",
    )
    scores.add_argument("--seed", type=integer(0), default=0, help="bootstrap seed (default: 0)")
    scores.add_argument("--plot", metavar="PNG", help="also write a bar chart of the scores to this file")
    scores.add_argument("--overwrite", action="store_true", help="replace an existing --plot file")
    scores.set_defaults(func=run_scores, command="study scores")


def _open_db(path: str):
    from gknet.studio.db import StudyDB

    return StudyDB(path, readonly=True)  # a report: the file is never written


def run_add(args) -> int:
    from pathlib import Path

    from gknet.data import match_by_stem
    from gknet.errors import GknetError
    from gknet.io.guard import Inputs
    from gknet.studio.db import StudyDB, check_method_name
    from gknet.studio.study import BUILTIN_METHODS

    if check_method_name(args.method) in BUILTIN_METHODS:
        raise GknetError(f"{args.method!r} is a built-in method; choose another name")
    images = match_by_stem(args.dir).matched  # raises a clear error for a missing or empty folder
    Inputs([path for paths in images.values() for path in paths], [args.dir]).check(args.db)
    StudyDB(args.db).register_method(args.method, args.dir)
    print(f"registered {args.method}: {len(images)} images in {Path(args.dir).resolve()} ({args.db})")
    return 0


def run_scores(args) -> int:
    from pathlib import Path

    from gknet.io.atomic import remove_stale_temporaries
    from gknet.io.guard import Inputs
    from gknet.io.images import check_output_path, save_image_atomic
    from gknet.studio.bradley_terry import format_table, plot_scores, score_table

    if args.plot:
        Inputs([args.db]).check(args.plot)
        check_output_path(args.plot, args.overwrite)  # before the bootstrap
        remove_stale_temporaries(Path(args.plot).parent, [Path(args.plot).name])  # of a killed run
    votes = _open_db(args.db).votes()
    if not votes:
        print(f"no votes in {args.db} yet")
        return 0
    rows = score_table(
        [(v.winner, v.loser) for v in votes],
        n_boot=args.bootstrap,
        confidence=args.confidence,
        seed=args.seed,
    )
    images, sessions = len({v.image for v in votes}), len({v.session for v in votes})
    print(f"{args.db}: {len(votes)} votes on {images} images, {sessions} session(s)")
    print(format_table(rows, args.confidence))
    if args.plot:
        title = f"Bradley-Terry scores ({len(votes)} votes)"
        print(f"wrote {save_image_atomic(plot_scores(rows, title), args.plot, overwrite=args.overwrite)}")
    return 0
