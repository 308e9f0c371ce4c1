"""`spinebench`: data and reporting commands (training and evaluation are the Hydra apps
`spinebench-train` / `spinebench-eval`). Errors a user can cause print one line and a non-zero exit code."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from spinebench.data.fetch import FetchError
from spinebench.data.layout import SPLITS, TASKS
from spinebench.errors import DataError, SpinebenchError

console = Console(stderr=True, soft_wrap=True)


def _data_fetch(args: argparse.Namespace) -> int:
    from spinebench.data.fetch import fetch

    manifest = fetch(args.task, args.out, archive=args.archive, force=args.force, expected_sha256=args.sha256)
    differences = manifest["release"]["differences"]
    console.print(
        (
            f"[green]{args.task} release ready in {args.out}[/]"
            if not differences
            else f"[yellow]extracted into {args.out}, but it is not the {args.task} release the manuscript "
            f"describes ({'; '.join(differences[:3])}): runs on it are labelled unverified[/]"
        )
        + f": {manifest['n_files']} files, "
        f"splits {', '.join(f'{k}={v}' for k, v in manifest['splits'].items())}; manifest written"
    )
    return 0


def _splits(text: str) -> tuple[str, ...]:
    splits = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise argparse.ArgumentTypeError(f"{text!r}: splits are among {', '.join(SPLITS)}")
    return splits


def _data_check(args: argparse.Namespace) -> int:
    from spinebench.data.check import check_dataset

    try:
        report = check_dataset(args.root, args.task, workers=args.workers, splits=args.splits)
    except DataError as error:
        console.print(f"[red]error:[/] {error}")
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    table = Table(
        title=f"{args.task} dataset {args.root}: " + ", ".join(f"{k} {v}" for k, v in report.split_counts.items())
    )
    for column in ("problem", "count", "what it means"):
        table.add_column(column)
    for kind, entry in report.problems.items():
        table.add_row(kind, str(entry["count"]), entry["description"])
    console.print(table if report.problems else f"[green]clean[/]: {args.root} ({args.task}, {report.split_counts})")
    for kind, entry in report.problems.items():  # below the table, whole: a table cell cut long paths short
        for example in entry["examples"][:3]:
            console.print(f"{kind}: {example}", markup=False, highlight=False)
    for name, value in report.stats.items():
        console.print(f"{name}: {json.dumps(value)}")
    return 0 if report.clean else 1


def _data_phantom(args: argparse.Namespace) -> int:
    from spinebench.data.phantom import write_phantom

    out = write_phantom(
        task=args.task,
        out=args.out,
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        seed=args.seed,
        domain=args.domain,
        workers=args.workers,
    )
    console.print(f"[yellow]SYNTHETIC PHANTOM[/] ({args.task}, {args.domain}, seed {args.seed}) written to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spinebench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="download, validate or synthesise a dataset").add_subparsers(
        dest="data_command", required=True
    )
    fetch = data.add_parser("fetch", help="download the real release (Google Drive) or extract an archive you have")
    fetch.add_argument("--task", choices=TASKS, required=True)
    fetch.add_argument("--out", type=Path, required=True)
    fetch.add_argument("--archive", type=Path, help="an archive already downloaded by hand: extract it instead")
    fetch.add_argument("--force", action="store_true", help="extract into a non-empty --out")
    fetch.add_argument("--sha256", help="the archive's known SHA-256: a different archive is refused")
    fetch.set_defaults(func=_data_fetch)

    check = data.add_parser("check", help="validate a dataset folder (exit 0 clean, 1 problems, 2 unusable)")
    check.add_argument("root", type=Path)
    check.add_argument("--task", choices=TASKS, required=True)
    check.add_argument("--json", type=Path, help="also write the full report as JSON")
    check.add_argument("--workers", type=int, default=1)
    check.add_argument(
        "--splits",
        type=_splits,
        default=SPLITS,
        help="the splits the folder should hold, comma-separated (a zero-shot set: test)",
    )
    check.set_defaults(func=_data_check)

    phantom = data.add_parser("phantom", help="write a synthetic phantom in the release's exact layout")
    phantom.add_argument("--task", choices=TASKS, required=True)
    phantom.add_argument("--out", type=Path, required=True)
    phantom.add_argument("--n-train", type=int, default=64)
    phantom.add_argument("--n-val", type=int, default=16)
    phantom.add_argument("--n-test", type=int, default=16)
    phantom.add_argument("--seed", type=int, default=0)
    phantom.add_argument("--domain", choices=("porcine", "human"), default="porcine")
    phantom.add_argument("--workers", type=int, default=1)
    phantom.set_defaults(func=_data_phantom)

    from spinebench.report import add_report_parser  # noqa: PLC0415 - keeps `spinebench data` start-up light

    add_report_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FetchError as error:  # the input was fine; the download was not possible here
        console.print(f"[red]error:[/] {error}")
        return 1
    except SpinebenchError as error:
        console.print(f"[red]error:[/] {error}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
