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
import importlib
import json
from pathlib import Path

from ascl.errors import ParamsError
from ascl.registry import REGISTRY

# Extra command-line options of some evaluations (Evaluation.options): option name ->
# (argparse flags, argparse keywords, job-function keyword).
OPTIONS = {
    "state": (
        ("--state",),
        {"help": "resume file (default: .<out>.state.json)"},
        "state_path",
    ),
    "name": (
        ("--name",),
        {"help": "source name stored in the set (default: file stem)"},
        "name",
    ),
    "target_name": (
        ("--name",),
        {"required": True, "help": "the target's name (as a source)"},
        "name",
    ),
    "source": (
        ("--source",),
        {
            "action": "append",
            "required": True,
            "metavar": "NAME=NPZ",
            "help": "crafted set of one source (repeatable)",
        },
        "sources",
    ),
    "out_csv": (
        ("--out-csv",),
        {"required": True, "help": "CSV (corruption, severity, accuracy)"},
        "out_csv",
    ),
    "out_npz": (("--out-npz",), {"required": True, "help": "images (.npz)"}, "out_npz"),
}
DATA_HELP = {"npz": "prepared data set (.npz)", "dir": "directory of <corruption>.npz files"}


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
    for command, evaluation in REGISTRY.items():
        p = sub.add_parser(command, help=evaluation.help)
        p.add_argument(
            "--params",
            action="append",
            metavar="FILE",
            help="params file; repeat to merge overrides (later files win)",
        )
        p.add_argument("--settings", metavar="JSON", help="resolved settings of this evaluation")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--model", required=True, help="finetuned classifier checkpoint")
        if evaluation.data is not None:
            p.add_argument("--data", required=True, help=DATA_HELP[evaluation.data])
        p.add_argument("--out", required=True, help=evaluation.out + " (written atomically)")
        p.add_argument("--parent-run-id", help="MLflow parent run id (default: the model's)")
        p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
        p.add_argument(
            "--tag", action="append", default=[], metavar="KEY=VALUE", help="extra MLflow tag"
        )
        for option in evaluation.options:
            flags, kwargs, _ = OPTIONS[option]
            p.add_argument(*flags, **kwargs)

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
        png = draw(args.name, inputs, out=args.out, caption=args.caption, title=args.title)
        from ascl.tracking import log_paper_outputs

        log_paper_outputs([png], "figures")
        return str(png)
    evaluation = REGISTRY[args.command]
    _require(args.model, "model checkpoint")
    if evaluation.data == "dir":
        if not Path(args.data).is_dir():
            raise FileNotFoundError(f"corruption directory not found: {args.data}")
    elif evaluation.data == "npz":
        _require(args.data, "data set")
    settings = config.job_settings(
        args.settings, args.params, lambda p: config.evaluation_settings(p, evaluation.key)
    )
    if settings.get("kind") != evaluation.key:
        raise ParamsError(
            f"--settings: kind {settings.get('kind')!r} does not fit {args.command} "
            f"(expected {evaluation.key!r})"
        )
    job_args = {
        "model_path": args.model,
        "seed": args.seed,
        "parent_run_id": args.parent_run_id,
        "tags": config.parse_tags(args.tag),
        "track": not args.no_track,
        "out": args.out,
    }
    if evaluation.data is not None:
        job_args["data"] = args.data
    for option in evaluation.options:
        flags, _, kwarg = OPTIONS[option]
        value = getattr(args, flags[0].lstrip("-").replace("-", "_"))
        if option == "source":
            value = _pairs(value, "--source")
            for path in value.values():
                _require(path, "crafted set")
        job_args[kwarg] = value
    module = importlib.import_module(f"ascl.evaluations.{evaluation.key}")
    return getattr(module, evaluation.function)(settings, **job_args)


def print_result(result: dict | str) -> None:
    print(result if isinstance(result, str) else json.dumps(result, sort_keys=True))
