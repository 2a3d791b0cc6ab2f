"""Command line: `ascl download|check|pretrain|pseudo-labels|finetune|evaluate|dvc-yaml|...`.

Each job takes params files (merged in order, validated before anything runs) or, from the
workflow, the resolved settings of exactly that job as JSON (`--settings`), plus explicit input
and output paths. Errors are one line on stderr and a non-zero exit; outputs are written
atomically and only when the job succeeds.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import importlib
import json
import sys
from pathlib import Path

from ascl import timing
from ascl.errors import ParamsError, is_user_error


def _require_file(path: str, what: str) -> None:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what} not found: {path}")


def _job_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--params",
        action="append",
        metavar="FILE",
        help="params file; repeat to merge overrides (later files win)",
    )
    p.add_argument("--settings", metavar="JSON", help="resolved settings of this job (workflow)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", required=True, help="prepared data set (.npz)")
    p.add_argument("--out", required=True, help="output file (written atomically)")
    p.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    p.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra MLflow tag (repeatable)",
    )


def _checkpoint_args(p: argparse.ArgumentParser) -> None:
    """How often a training job checkpoints (params `resources.<kind>`; never a result)."""
    p.add_argument(
        "--checkpoint-every-epochs",
        type=int,
        default=1,
        metavar="N",
        help="checkpoint every N-th epoch (0: not by count)",
    )
    p.add_argument(
        "--checkpoint-every-minutes",
        type=float,
        default=0.0,
        metavar="M",
        help="checkpoint at the first epoch end M minutes after the last (0: off)",
    )


def _checkpoint_every(args: argparse.Namespace) -> dict:
    if args.checkpoint_every_epochs < 0 or args.checkpoint_every_minutes < 0:
        raise ParamsError("--checkpoint-every-epochs/-minutes: must be >= 0")
    return {
        "checkpoint_every_epochs": args.checkpoint_every_epochs,
        "checkpoint_every_minutes": args.checkpoint_every_minutes,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ascl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("download", help="download (or build, for offline sets) one data set")
    p.add_argument("name", help="cifar10, cifar100, stl10, cifar10c, digits10, ...")
    p.add_argument("--out", required=True, help=".npz file (a directory for cifar10c, digits10-c)")
    p.add_argument("--url", help="mirror URL overriding the official one")
    p.add_argument("--md5", help="expected md5 (with --url of a different archive)")
    p.add_argument(
        "--image-size",
        type=int,
        help="store the images downscaled to SIZE x SIZE (area averaging; divides 32)",
    )

    p = sub.add_parser("check", help="validate params files and print the merged result")
    p.add_argument("params", nargs="+")

    p = sub.add_parser("table", help="aggregate metrics files into one paper table")
    p.add_argument("--spec", required=True, help="JSON: title, metrics, rows, seeds")
    p.add_argument("--results", default="results", help="results directory")
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-html", help="also write the table as an HTML page")
    p.add_argument("--published", help="published numbers (default: the packaged transcription)")
    p.add_argument(
        "--partial", action="store_true", help="mark rows without metrics files 'not computed'"
    )

    p = sub.add_parser("claims", help="test the paper's claims on the tables and figures")
    p.add_argument("--claims", required=True, help="JSON: params.yaml `claims:`")
    p.add_argument("--tables", nargs="+", required=True, help="table CSV files (`ascl table`)")
    p.add_argument(
        "--figure",
        action="append",
        default=[],
        metavar="FIG/LABEL=FILE",
        help="one seed's corruptions or strength CSV of a figure model (repeatable)",
    )
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-json", help="also write {claim: holds, fails, effect, p} (DVC metrics)")
    p.add_argument("--out-html", help="also write the claims table as an HTML page")

    p = sub.add_parser("summary", help="collect table CSVs into one metrics JSON (DVC)")
    p.add_argument("tables", nargs="+", help="table CSV files")
    p.add_argument("--claims", help="claims JSON of `ascl claims --out-json` (added as 'claims')")
    p.add_argument("--out", required=True)

    p = sub.add_parser("pretrain", help="pre-train one method")
    _job_args(p)
    p.add_argument("--method", help="key of params.methods (with --params)")
    p.add_argument("--ckpt-dir", help="checkpoint directory (resumes from it)")
    _checkpoint_args(p)
    p.add_argument("--run-id-out", help="file receiving the MLflow run id")
    p.add_argument(
        "--pseudo-labels",
        metavar="NPZ",
        help="pseudo labels of `ascl pseudo-labels` (required by methods that use them: advcl)",
    )

    p = sub.add_parser(
        "pseudo-labels", help="k-means pseudo labels of an encoder's training-set features"
    )
    p.add_argument(
        "--params",
        action="append",
        metavar="FILE",
        help="params file; repeat to merge overrides (later files win)",
    )
    p.add_argument("--method", help="key of params.methods that uses the labels (with --params)")
    p.add_argument("--settings", metavar="JSON", help="resolved settings of this job (workflow)")
    p.add_argument("--encoder", required=True, help="pre-training checkpoint of the source method")
    p.add_argument("--data", required=True, help="prepared data set (.npz)")
    p.add_argument("--out", required=True, help="output .npz (written atomically)")
    p.add_argument("--seed", type=int, default=0, help="k-means random state")

    p = sub.add_parser("finetune", help="finetune a pre-trained encoder with one strategy")
    _job_args(p)
    p.add_argument("--strategy", help="key of params.finetune.strategies (with --params)")
    p.add_argument("--encoder", required=True, help="pre-training checkpoint")
    p.add_argument("--ckpt-dir", help="checkpoint directory (resumes from it)")
    _checkpoint_args(p)
    p.add_argument("--parent-run-id", help="MLflow parent run id (default: the encoder's)")
    p.add_argument("--run-id-out", help="file receiving the MLflow run id")

    p = sub.add_parser("evaluate", help="SA and PGD RA of a finetuned classifier")
    _job_args(p)
    p.add_argument("--model", required=True, help="finetuned classifier checkpoint")
    p.add_argument("--parent-run-id", help="MLflow parent run id (default: the model's)")

    p = sub.add_parser(
        "preflight", help="time every job kind at the configured scale; project the DAG's time"
    )
    p.add_argument("params", nargs="*", default=["params.yaml"], help="params files, merged")
    p.add_argument("--steps", type=int, default=2, help="timed steps per job kind")
    p.add_argument("--cpu-batch", type=int, default=16, help="batch size on a CPU")
    p.add_argument("--cpu-width", type=int, default=8, help="ResNet-18 base width on a CPU")

    p = sub.add_parser(
        "dvc-yaml", help="write dvc.yaml from the job registry and the params files' jobs"
    )
    p.add_argument("--root", default=".", help="the repository (params.yaml, config/, src/)")
    p.add_argument("--check", action="store_true", help="only compare: fail if dvc.yaml differs")

    from ascl.evaluations.cli import add_parsers as add_evaluation_parsers

    add_evaluation_parsers(sub)  # autoattack, blackbox-*, corruptions, ..., figure
    return parser


def _check(args: argparse.Namespace) -> None:
    """Print the merged, validated params."""
    from ascl import config

    params = config.load_params(*args.params)
    print(json.dumps(params, indent=2))


def _download(args: argparse.Namespace) -> None:
    """Prepare one data set (download or offline build) at its uniform .npz form."""
    from ascl.data import DATASETS, OFFLINE_DATASETS, prepare_cifar10c, prepare_dataset
    from ascl.data.corrupt import DIGITS10C, prepare_digits10c

    known = (*DATASETS, *OFFLINE_DATASETS, "cifar10c", DIGITS10C)
    if args.name not in known:
        raise ParamsError(f"download: unknown data set {args.name!r} (known: {', '.join(known)})")
    if args.name == DIGITS10C and (args.url or args.md5):
        raise ParamsError(f"download: {DIGITS10C} is built offline; no --url/--md5")
    out = Path(args.out)
    # At a reduced image size the full-size set is prepared under a hidden name first, so
    # that `out` only ever holds the downscaled set.
    full = out if not args.image_size else out.with_name(f".{out.name}.full")
    if args.name == DIGITS10C:
        prepare_digits10c(full)
    elif args.name == "cifar10c":
        prepare_cifar10c(full, url=args.url, md5=args.md5)
    else:
        prepare_dataset(args.name, full, url=args.url, md5=args.md5)
    if args.image_size:
        from ascl.data.formats import downscale_tree

        downscale_tree(full, out, args.image_size)
    from ascl.data import stamp_made_with

    stamp_made_with(out, {"dataset": args.name, "image_size": args.image_size})
    print(out)


def _table(args: argparse.Namespace) -> None:
    """Write one paper table (md/csv/html) from the evaluation outputs."""
    from ascl.report import write_table

    try:
        spec = json.loads(args.spec)
    except json.JSONDecodeError as err:
        raise ParamsError(f"--spec: not valid JSON ({err.msg})") from None
    from ascl.report import load_published

    published = load_published(args.published) if args.published else None
    write_table(
        spec,
        args.results,
        args.out_md,
        args.out_csv,
        published,
        args.partial,
        args.out_html,
    )
    from ascl.tracking import log_paper_outputs

    log_paper_outputs([args.out_md, args.out_csv, args.out_html], "tables")


def _claims(args: argparse.Namespace) -> None:
    """Evaluate the claims of params.yaml `claims:` over the tables; write the report."""
    from ascl.claims import write_claims

    try:
        claims = json.loads(args.claims)
    except json.JSONDecodeError as err:
        raise ParamsError(f"--claims: not valid JSON ({err.msg})") from None
    for path in args.tables:
        _require_file(path, "table")
    rows = write_claims(
        claims,
        args.tables,
        args.figure,
        out_md=args.out_md,
        out_csv=args.out_csv,
        out_json=args.out_json,
        out_html=args.out_html,
    )
    from ascl.tracking import log_paper_outputs

    log_paper_outputs([args.out_md, args.out_csv, args.out_json, args.out_html], "claims")
    for r in rows:
        print(f"{r['status']:>12}  {r['claim']}")


def _summary(args: argparse.Namespace) -> None:
    """Write the metrics summary (tables, claims) read by `dvc metrics show`."""
    from ascl.checkpoint import atomic_write_text
    from ascl.report import summarize

    for path in args.tables:
        _require_file(path, "table")
    summary = summarize(args.tables)
    if args.claims:
        _require_file(args.claims, "claims")
        summary["claims"] = json.loads(Path(args.claims).read_text())
    atomic_write_text(args.out, json.dumps(summary, indent=2) + "\n")


def _pretrain(args: argparse.Namespace) -> None:
    """Pre-train one method with one seed."""
    _require_file(args.data, "data set")
    from ascl import config

    if args.params and not args.method:
        raise ParamsError("pretrain: --method is required with --params")
    settings = config.job_settings(
        args.settings, args.params, lambda p: config.pretrain_settings(p, args.method)
    )
    if args.pseudo_labels:
        _require_file(args.pseudo_labels, "pseudo labels")
    from ascl.pretrain import run_pretrain

    metrics = run_pretrain(
        settings,
        data=args.data,
        out=args.out,
        seed=args.seed,
        ckpt_dir=args.ckpt_dir,
        run_id_out=args.run_id_out,
        tags=config.parse_tags(args.tag),
        track=not args.no_track,
        pseudo_labels=args.pseudo_labels,
        checkpoint_every=_checkpoint_every(args),
    )
    print(json.dumps(metrics, sort_keys=True))


def _pseudo_labels(args: argparse.Namespace) -> None:
    """Cluster an encoder's features into AdvCL's pseudo labels."""
    _require_file(args.data, "data set")
    from ascl import config

    _require_file(args.encoder, "encoder checkpoint")
    if args.params and not args.method:
        raise ParamsError("pseudo-labels: --method is required with --params")
    settings = config.job_settings(
        args.settings, args.params, lambda p: config.pseudo_label_settings(p, args.method)
    )
    from ascl.pseudo_labels import run_pseudo_labels

    metrics = run_pseudo_labels(
        settings, encoder=args.encoder, data=args.data, out=args.out, seed=args.seed
    )
    print(json.dumps(metrics, sort_keys=True))


def _finetune(args: argparse.Namespace) -> None:
    """Finetune an encoder with one strategy."""
    _require_file(args.data, "data set")
    from ascl import config

    _require_file(args.encoder, "encoder checkpoint")
    if args.params and not args.strategy:
        raise ParamsError("finetune: --strategy is required with --params")
    settings = config.job_settings(
        args.settings, args.params, lambda p: config.finetune_settings(p, args.strategy)
    )
    from ascl.finetune import run_finetune

    metrics = run_finetune(
        settings,
        encoder=args.encoder,
        data=args.data,
        out=args.out,
        seed=args.seed,
        ckpt_dir=args.ckpt_dir,
        parent_run_id=args.parent_run_id,
        run_id_out=args.run_id_out,
        tags=config.parse_tags(args.tag),
        track=not args.no_track,
        checkpoint_every=_checkpoint_every(args),
    )
    print(json.dumps(metrics, sort_keys=True))


def _evaluate(args: argparse.Namespace) -> None:
    """SA and PGD RA of a finetuned classifier."""
    _require_file(args.data, "data set")
    from ascl import config

    _require_file(args.model, "model checkpoint")
    settings = config.job_settings(args.settings, args.params, config.evaluate_settings)
    from ascl.evaluations.pgd import run_pgd

    metrics = run_pgd(
        settings,
        model_path=args.model,
        data=args.data,
        out=args.out,
        seed=args.seed,
        parent_run_id=args.parent_run_id,
        tags=config.parse_tags(args.tag),
        track=not args.no_track,
    )
    print(json.dumps(metrics, sort_keys=True))


def _preflight(args: argparse.Namespace) -> None:
    """Time every job kind at the configured scale and project the DAG's wall time."""
    from ascl import config
    from ascl.preflight import main as preflight_main

    params = config.load_params(*args.params)
    preflight_main(params, n_steps=args.steps, cpu_batch=args.cpu_batch, cpu_width=args.cpu_width)


def _dvc_yaml(args: argparse.Namespace) -> None:
    """Write (or check) dvc.yaml as `ascl.dag.dvc_yaml` makes it."""
    from ascl.checkpoint import atomic_write_text
    from ascl.dag import dvc_yaml

    root = Path(args.root)
    text = dvc_yaml(root)
    path = root / "dvc.yaml"
    if args.check:
        if not path.is_file() or path.read_text() != text:
            raise ParamsError(f"{path} is not what `ascl dvc-yaml` writes: run `make dvc-yaml`")
        print(f"{path}: up to date")
        return
    atomic_write_text(path, text)
    print(path)


COMMANDS = {
    "preflight": _preflight,
    "dvc-yaml": _dvc_yaml,
    "check": _check,
    "download": _download,
    "table": _table,
    "claims": _claims,
    "summary": _summary,
    "pretrain": _pretrain,
    "pseudo-labels": _pseudo_labels,
    "finetune": _finetune,
    "evaluate": _evaluate,
}


def _command_module(command: str) -> str | None:
    """The module of the job a command runs (`ascl.registry.KINDS`), imported first so that the
    job's log can tell import time from work (`ascl.timing`); None for other commands."""
    from ascl.registry import command_module

    return command_module(command)


def run(args: argparse.Namespace) -> None:
    """Run one command: a job, a data set, a table, the claims, or an evaluation / figure."""
    from ascl.registry import REGISTRY as EVALUATION_COMMANDS

    module = _command_module(args.command)
    if module is not None:  # a job: its log tells import time from work (`ascl.timing`)
        with timing.phase("imports"):
            importlib.import_module(module)
    if args.command in COMMANDS:
        COMMANDS[args.command](args)
    elif args.command in EVALUATION_COMMANDS or args.command == "figure":
        from ascl.evaluations.cli import print_result
        from ascl.evaluations.cli import run as run_evaluation

        print_result(run_evaluation(args))
    else:  # argparse allows only the commands above
        raise AssertionError(f"unknown command {args.command!r}")


def main(argv: list[str] | None = None) -> int:
    # A crash in native code (a segfault in a kernel, an abort) prints the Python traceback of
    # every thread to stderr, i.e. into the job's log, before the process dies.
    if not faulthandler.is_enabled():
        # (no real stderr file, as in an embedding host: nothing to write to)
        with contextlib.suppress(AttributeError, ValueError):
            faulthandler.enable(file=sys.__stderr__)
    timing.reset()
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except KeyboardInterrupt:
        print("ascl: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - every failure becomes one line
        if not is_user_error(err):
            raise
        print(f"ascl: error: {err}", file=sys.stderr)
        return 2
    if _command_module(args.command) is not None:  # a job: where its time went
        print(timing.line(args.command), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
