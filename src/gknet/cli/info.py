"""``gknet info``: the shipped weights, or a config's parameters per component, MACs at 256x256
and model settings."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("info", help="the shipped weights, or model size and cost for a config file")
    p.add_argument(
        "--config", help="YAML config file (its model section is used); without it: the shipped weights"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.config is None:
        return _shipped(args.json)
    from gknet.config import load_config, to_dict
    from gknet.models.info import model_info

    cfg = load_config(args.config)
    info = model_info(cfg.model)
    info["config"] = to_dict(cfg.model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"config: {args.config}")
    print(f"{'component':<12}{'params':>14}")
    for name, n in info["components"].items():
        print(f"{name:<12}{n:>14,}")
    print(f"{'total':<12}{info['params']:>14,}")
    if info["trainable"] != info["params"]:
        print(f"{'trainable':<12}{info['trainable']:>14,}  (the rest: a frozen pretrained backbone)")
    print(f"MACs at 256x256: {info['macs_256'] / 1e9:.2f} G")
    print("model config:")
    for key, value in info["config"].items():
        print(f"  {key}: {value}")
    return 0


def _shipped(as_json: bool) -> int:
    from gknet.inference.release import shipped_releases

    rows = shipped_releases()
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print("shipped weights (gknet harmonize --weights NAME; real_val fMSE ratio to the composite):")
    for row in rows:
        mark = " (default)" if row["default"] else ""
        if "missing" in row:
            print(f"  {row['name']}{mark}: {row['missing']}")
            continue
        ratios = ", ".join(f"{k} {v:.2f}" for k, v in row["real_val_fmse_ratio"].items())
        samples = f"{row['samples']:,} training samples" if row["samples"] else "training samples unknown"
        print(f"  {row['name']}{mark}: {samples}; {ratios}")
    print("model size and cost of a config: gknet info --config FILE")
    return 0
