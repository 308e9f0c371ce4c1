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


def _data_audit(args: argparse.Namespace) -> int:
    from spinebench.data.audit import TOP_PAIRS, audit_dataset, write_pairs_png

    try:
        report = audit_dataset(
            args.root,
            args.task,
            workers=args.workers,
            threshold=args.threshold,
            max_hash_distance=args.max_hash_distance,
            subject_pattern=args.subject_pattern,
        )
    except DataError as error:
        console.print(f"[red]error:[/] {error}")
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    if args.png:
        write_pairs_png(report.pairs, args.png)
    thresholds = report.thresholds
    table = Table(
        title=f"near-duplicates across splits in {args.root} ({args.task}; similarity >= {thresholds['similarity']}, "
        f"hash distance <= {thresholds['max_hash_distance']} bits)"
    )
    for column in ("splits", "pairs", "images involved", "share of the later split affected"):
        table.add_column(column)
    for name, entry in report.split_pairs.items():
        later = name.split("-")[1]
        table.add_row(name, str(entry["pairs"]), str(entry["images"]), f"{entry[f'share_of_{later}']:.1%}")
    console.print(table)
    for pair in report.pairs[:TOP_PAIRS]:  # whole lines: a table cell would cut long paths short
        console.print(
            f"{pair['similarity']:.3f} ({pair['hash_distance']} bits): {pair['a']} <-> {pair['b']}",
            markup=False,
            highlight=False,
        )
    for split, entry in report.clusters.items():
        console.print(
            f"within {split}: {entry['clusters']} near-duplicate cluster(s) holding {entry['images_in_clusters']} "
            f"of {entry['images']} images (largest {entry['largest']})"
        )
    subjects = report.subjects
    if not subjects["available"]:
        console.print(f"subjects: no file name matches {subjects['pattern']!r} (--subject-pattern sets it)")
    else:
        shared = ", ".join(f"{s} ({'/'.join(sp)})" for s, sp in subjects["shared"].items()) or "none"
        console.print(
            f"subjects per split: { {k: len(v) for k, v in subjects['per_split'].items()} }; in more than one split: {shared}"
        )
        if subjects["unmatched"]:
            console.print(
                f"{subjects['unmatched']} file name(s) without a subject id, e.g. {subjects['unmatched_examples'][0]}"
            )
    verdict = (
        "[red]leakage found[/]" if report.found else "[green]no near-duplicates or subjects shared across splits[/]"
    )
    console.print(verdict)
    return 1 if report.found else 0


def _data_resplit(args: argparse.Namespace) -> int:
    from spinebench.data.resplit import resplit, write_splits

    content = resplit(
        args.root, args.task, by=args.by, seed=args.seed, subject_pattern=args.subject_pattern, workers=args.workers
    )
    write_splits(content, args.out)
    console.print(
        f"[green]{args.out}[/]: split by {args.by} (seed {args.seed}): "
        + ", ".join(f"{s} {content['counts'][s]} (release {content['release_counts'].get(s, 0)})" for s in SPLITS)
        + f"; {content['moved_from_release_split']} image(s) moved from their release split"
    )
    console.print(f"train or evaluate on it with data.splits={Path(args.out).resolve()}")
    return 0


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
        sweep_frames=args.sweep_frames,
        leak_share=args.leak_share,
    )
    console.print(f"[yellow]SYNTHETIC PHANTOM[/] ({args.task}, {args.domain}, seed {args.seed}) written to {out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from spinebench.export import main as export_main  # noqa: PLC0415 - torch.onnx only when exporting

    return export_main(args.pairs)


def _plan(args: argparse.Namespace) -> int:
    from spinebench.launch import check_gpus
    from spinebench.plan import markdown, plan, summary

    rows = [row.strip() for row in args.rows.split(",") if row.strip()] if args.rows else None
    seeds = [seed for seed in args.seeds.split(",") if seed.strip()]
    plans = plan(rows)
    print(markdown(plans) if args.markdown else summary(plans, len(seeds), check_gpus(args.gpus)))
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

    from spinebench.data.audit import MAX_HASH_DISTANCE, SIMILARITY, SUBJECT_PATTERN  # noqa: PLC0415

    audit = data.add_parser(
        "audit", help="near-duplicate frames and subjects shared across splits (exit 0 none, 1 found, 2 unusable)"
    )
    audit.add_argument("root", type=Path)
    audit.add_argument("--task", choices=TASKS, required=True)
    audit.add_argument("--json", type=Path, help="also write the report, every pair included, as JSON")
    audit.add_argument("--png", type=Path, help="write the closest cross-split pairs side by side to this PNG")
    audit.add_argument("--threshold", type=float, default=SIMILARITY, help="similarity (0..1) from which a pair counts")
    audit.add_argument("--max-hash-distance", type=int, default=MAX_HASH_DISTANCE, help="pHash bits (of 64)")
    audit.add_argument(
        "--subject-pattern", default=SUBJECT_PATTERN, help="regex on file names, subject id in its first group"
    )
    audit.add_argument("--workers", type=int, default=1)
    audit.set_defaults(func=_data_audit)

    resplit = data.add_parser("resplit", help="write a train/val/test split file keeping subjects or clusters whole")
    resplit.add_argument("root", type=Path)
    resplit.add_argument("--task", choices=TASKS, required=True)
    resplit.add_argument("--by", choices=("subject", "cluster"), default="subject")
    resplit.add_argument("--out", type=Path, required=True)
    resplit.add_argument("--seed", type=int, default=0)
    resplit.add_argument("--subject-pattern", default=SUBJECT_PATTERN)
    resplit.add_argument("--workers", type=int, default=1)
    resplit.set_defaults(func=_data_resplit)

    phantom = data.add_parser("phantom", help="write a synthetic phantom in the release's exact layout")
    phantom.add_argument("--task", choices=TASKS, required=True)
    phantom.add_argument("--out", type=Path, required=True)
    phantom.add_argument("--n-train", type=int, default=64)
    phantom.add_argument("--n-val", type=int, default=16)
    phantom.add_argument("--n-test", type=int, default=16)
    phantom.add_argument("--seed", type=int, default=0)
    phantom.add_argument("--domain", choices=("porcine", "human"), default="porcine")
    phantom.add_argument("--workers", type=int, default=1)
    phantom.add_argument("--sweep-frames", type=int, default=1, help="consecutive near-duplicate frames per sweep")
    phantom.add_argument(
        "--leak-share", type=float, default=0.0, help="share of val/test images that are altered copies of train ones"
    )
    phantom.set_defaults(func=_data_phantom)

    export = commands.add_parser(
        "export",
        help="a finished run's best.pt as ONNX, checked against PyTorch and timed on the CPU (docs/export.md)",
    )
    export.add_argument(
        "pairs",
        nargs="+",
        metavar="key=value",
        help="ckpt=<run folder or its checkpoints/best.pt> [format=onnx] [opset=N] [dynamic_batch=true] "
        "[images=16] [threads=N]",
    )
    export.set_defaults(func=_export)

    planner = commands.add_parser(
        "plan", help="rows, seeds, jobs and estimated GPU-hours of a reproduction on H200s (docs/scale-out.md)"
    )
    planner.add_argument("--rows", default="", help="comma-separated paper rows (default: every row)")
    planner.add_argument("--seeds", default="0", help="comma-separated seeds, as make reproduce SEEDS=0,1,2")
    planner.add_argument("--gpus", type=int, default=1, help="GPUs running jobs at once")
    planner.add_argument("--markdown", action="store_true", help="the docs' table instead")
    planner.set_defaults(func=_plan)

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
