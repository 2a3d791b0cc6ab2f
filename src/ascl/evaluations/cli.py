"""Command line of the evaluations and figures (registered by `ascl.cli`).

    ascl autoattack        --model CKPT --data NPZ --out JSON [--state FILE]
    ascl blackbox-craft    --model CKPT --data NPZ --out NPZ [--name SOURCE]
    ascl blackbox-eval     --model CKPT --name TARGET --source NAME=NPZ ... --out JSON
    ascl corruptions       --model CKPT --data DIR --out JSON --out-csv CSV
    ascl tsne              --model CKPT --data NPZ --out CSV
    ascl inversion         --model CKPT --data NPZ --out CSV --out-npz NPZ
    ascl landscape-input   --model CKPT --data NPZ --out CSV
    ascl landscape-weight  --model CKPT --data NPZ --out CSV
    ascl strength          --model CKPT --data NPZ --out CSV
    ascl figure figN --input LABEL=PATH ... --out PNG [--caption TEXT] [--title TEXT]

Every evaluation also takes `--params FILE` (repeatable) or `--settings JSON` (the resolved
settings of that evaluation, `ascl.config.evaluation_settings`), `--seed`, `--parent-run-id`,
`--tag KEY=VALUE` and `--no-track`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ascl.errors import ParamsError

# command -> settings key (ascl.config.evaluation_settings)
COMMANDS = {
    "autoattack": "autoattack",
    "blackbox-craft": "blackbox",
    "blackbox-eval": "blackbox",
    "corruptions": "corruptions",
    "tsne": "tsne",
    "inversion": "inversion",
    "landscape-input": "landscape_input",
    "landscape-weight": "landscape_weight",
    "strength": "strength",
}
HELP = {
    "autoattack": "RA under AutoAttack (standard) and SA (Tables 1, 5)",
    "blackbox-craft": "craft PGD examples on a source model (Table 2)",
    "blackbox-eval": "accuracy of a target model on crafted sets of other sources (Table 2)",
    "corruptions": "accuracy per corruption and severity (Fig. 1, 7)",
    "tsne": "t-SNE of the penultimate features (Fig. 3)",
    "inversion": "feature inversion maps (Fig. 2)",
    "landscape-input": "input loss landscape (Fig. 4)",
    "landscape-weight": "weight loss landscape (Fig. 5)",
    "strength": "RA vs PGD steps and radius (Fig. 6)",
}


def _pairs(items: list[str], option: str) -> dict[str, str]:

    out = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[0]:
            raise ParamsError(f"{option} {item!r}: expected LABEL=PATH")
        label, path = item.split("=", 1)
        if label in out:
            raise ParamsError(f"{option}: label {label!r} given twice")
        out[label] = path
    return out


def add_parsers(sub) -> None:
    """Add the evaluation and figure subcommands to `sub` (argparse subparsers)."""
    for command in COMMANDS:
        p = sub.add_parser(command, help=HELP[command])
        p.add_argument(
            "--params",
            action="append",
            metavar="FILE",
            help="params file; repeat to merge overrides (later files win)",
        )
        p.add_argument("--settings", metavar="JSON", help="resolved settings of this evaluation")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--model", required=True, help="finetuned classifier checkpoint")
        if command == "corruptions":
            p.add_argument("--data", required=True, help="directory of <corruption>.npz files")
        elif command != "blackbox-eval":
            p.add_argument("--data", required=True, help="prepared data set (.npz)")
        out_help = {
            "blackbox-craft": "crafted set (.npz)",
            "tsne": "CSV (x, y, label)",
            "inversion": "CSV (seed, seed_kind, component, before, after)",
            "landscape-input": "CSV (a, b, loss)",
            "landscape-weight": "CSV (alpha, loss, clean_loss)",
            "strength": "CSV (kind, value, ra)",
        }.get(command, "metrics JSON")
        p.add_argument("--out", required=True, help=out_help + " (written atomically)")
        p.add_argument("--parent-run-id", help="MLflow parent run id (default: the model's)")
        p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
        p.add_argument(
            "--tag", action="append", default=[], metavar="KEY=VALUE", help="extra MLflow tag"
        )
        if command == "autoattack":
            p.add_argument("--state", help="resume file (default: .<out>.state.json)")
        if command == "blackbox-craft":
            p.add_argument("--name", help="source name stored in the set (default: file stem)")
        if command == "blackbox-eval":
            p.add_argument("--name", required=True, help="the target's name (as a source)")
            p.add_argument(
                "--source",
                action="append",
                required=True,
                metavar="NAME=NPZ",
                help="crafted set of one source (repeatable)",
            )
        if command == "corruptions":
            p.add_argument("--out-csv", required=True, help="CSV (corruption, severity, accuracy)")
        if command == "inversion":
            p.add_argument("--out-npz", required=True, help="images (.npz)")

    from ascl.figures import FIGURES

    p = sub.add_parser("figure", help="draw one paper figure from evaluation outputs")
    p.add_argument("name", choices=sorted(FIGURES), help="figure")
    p.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="LABEL=PATH",
        help="one model's evaluation output, labelled (repeatable; order kept)",
    )
    p.add_argument("--out", required=True, help="PNG (written atomically)")
    p.add_argument("--caption", default="", help="subtitle, e.g. the data used")
    p.add_argument("--title", help="title (default: the figure's)")


def _require(path: str, what: str) -> None:
    if not Path(path).exists():
        raise FileNotFoundError(f"{what} not found: {path}")


def run(args: argparse.Namespace) -> dict | str:
    """Run one evaluation or figure command; returns its metrics (or the PNG path)."""
    from ascl import config

    if args.command == "figure":
        from ascl.figures import draw

        inputs = _pairs(args.input, "--input")
        for path in inputs.values():
            _require(path, "figure input")
        return str(draw(args.name, inputs, out=args.out, caption=args.caption, title=args.title))
    key = COMMANDS[args.command]
    _require(args.model, "model checkpoint")
    if args.command == "blackbox-eval":
        sources = _pairs(args.source, "--source")
        for path in sources.values():
            _require(path, "crafted set")
    elif args.command == "corruptions":
        if not Path(args.data).is_dir():
            raise FileNotFoundError(f"corruption directory not found: {args.data}")
    else:
        _require(args.data, "data set")
    settings = config.job_settings(
        args.settings, args.params, lambda p: config.evaluation_settings(p, key)
    )
    if settings.get("kind") != key:
        raise config.ParamsError(
            f"--settings: kind {settings.get('kind')!r} does not fit {args.command} "
            f"(expected {key!r})"
        )
    common = {
        "model_path": args.model,
        "seed": args.seed,
        "parent_run_id": args.parent_run_id,
        "tags": config.parse_tags(args.tag),
        "track": not args.no_track,
    }
    if args.command == "autoattack":
        from ascl.evaluations.autoattack import run_autoattack

        return run_autoattack(
            settings, data=args.data, out=args.out, state_path=args.state, **common
        )
    if args.command == "blackbox-craft":
        from ascl.evaluations.blackbox import run_blackbox_craft

        return run_blackbox_craft(settings, data=args.data, out=args.out, name=args.name, **common)
    if args.command == "blackbox-eval":
        from ascl.evaluations.blackbox import run_blackbox_eval

        return run_blackbox_eval(settings, sources=sources, out=args.out, name=args.name, **common)
    if args.command == "corruptions":
        from ascl.evaluations.corruptions import run_corruptions

        return run_corruptions(
            settings, data=args.data, out=args.out, out_csv=args.out_csv, **common
        )
    if args.command == "inversion":
        from ascl.evaluations.inversion import run_inversion

        return run_inversion(settings, data=args.data, out=args.out, out_npz=args.out_npz, **common)
    import importlib

    module = importlib.import_module(f"ascl.evaluations.{key}")
    return getattr(module, f"run_{key}")(settings, data=args.data, out=args.out, **common)


def print_result(result: dict | str) -> None:
    print(result if isinstance(result, str) else json.dumps(result, sort_keys=True))
