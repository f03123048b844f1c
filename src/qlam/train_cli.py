"""`qlam train`, `qlam eval` and `qlam demo`."""

from __future__ import annotations

import json
import shlex
import sys

from qlam.atomic import atomic_write_text
from qlam.config import (
    TrainConfig,
    add_config_args,
    args_to_dict,
    config_from_dict,
    read_config_file,
    set_threads,
)
from qlam.evaluate import eval_checkpoint
from qlam.train import train

# the sMNIST model of the README, trained for one epoch on the full training set (~8 min on
# 2 cores with the C++ kernel), then evaluated on the full test set
DEMO = dict(task="smnist", model="qlam", epochs=1, batch_size=64, lr=3e-3, d_model=64,
            n_layers=2, n_heads=8, n_qubits=4, max_minutes=12.0)


def config_from_args(args) -> TrainConfig:
    values = read_config_file(args.config) if args.config else {}
    values.update(args_to_dict(args))
    return config_from_dict(values)


def cmd_train(args) -> int:
    cfg = config_from_args(args)
    command = "qlam " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    from qlam import distributed

    if args.distributed and not distributed.launched():  # start a local group ourselves
        summary = distributed.launch_local(args.nproc, train, cfg, resume=args.resume,
                                           command=command, distributed=True)
    else:
        summary = train(cfg, resume=args.resume, command=command,
                        distributed=True if args.distributed else None)
    return 0 if summary and "test_acc" in summary else 3


def cmd_eval(args) -> int:
    set_threads(args.threads)
    res = eval_checkpoint(args.checkpoint, task=args.task, shots=args.shots, seed=args.seed,
                          device=args.device, batch_size=args.batch_size, limit=args.limit,
                          noise=args.noise, length=args.length)
    how = [f"{args.shots} shots"] if args.shots is not None else []
    how += [f"noise {res['noise']} per token"] if res["noise"] else []
    what = f"{res['n_test']} examples of length {res['length']}"
    print(f"test accuracy {res['test_acc']:.4f} on {what} ({', '.join(how) or 'exact'})")
    if args.json:
        atomic_write_text(args.json, json.dumps(res, indent=2))
    return 0


def cmd_demo(args) -> int:
    from pathlib import Path

    from qlam.plots import drawn, learning_curve

    cfg = TrainConfig(**{**DEMO, "out": args.out})
    summary = train(cfg, resume=(Path(args.out) / "checkpoint.pt").exists(),
                    command=f"qlam demo --out {args.out}")
    png = drawn(learning_curve, [args.out], Path(args.out) / "learning_curve.png",
                title="QLAM on sMNIST (demo)", note=lambda line: print(line, file=sys.stderr))
    print(f"demo: QLAM ({summary['params']} parameters) on sMNIST, "
          f"{summary['n_train']} training images, {summary['epochs']} epoch(s), "
          f"{summary['wall_s'] / 60:.1f} min: test accuracy {100 * summary['test_acc']:.2f} % "
          f"on {summary['n_test']} test images"
          + (f"; curve in {png}" if png else f"; results in {args.out}"))
    return 0


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model on a sequence task")
    p.add_argument("--config", help="TOML or YAML file of training settings (flags override)")
    p.add_argument("--resume", action="store_true", help="continue DIR/checkpoint.pt")
    p.add_argument("--distributed", action="store_true",
                   help="DistributedDataParallel: join torchrun's group, or start --nproc local "
                        "processes (automatic under torchrun with WORLD_SIZE > 1)")
    p.add_argument("--nproc", type=int, default=2,
                   help="local processes for --distributed outside torchrun (default 2)")
    add_config_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="test accuracy of a saved model")
    p.add_argument("--checkpoint", required=True, help="model.pt written by qlam train")
    p.add_argument("--task", default=None,
                   help="task (or .npz file) to evaluate on (default: the training task)")
    p.add_argument("--shots", type=int, default=None, help="finite measurement shots per token")
    p.add_argument("--noise", default=None, metavar="KIND:P",
                   help="evaluate under noise: depolarizing:P, amplitude_damping:G or bitflip:P "
                        "on every qubit after every token (quantum trajectories; not with --shots)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shot and noise sampler")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (default auto)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="examples per evaluation batch (default 256)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N test examples")
    p.add_argument("--length", type=int, default=None,
                   help="generated tasks: evaluate on a test set of this length (e.g. longer "
                        "than the training length)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads (torch.set_num_threads; default: PyTorch's)")
    p.add_argument("--json", default=None, help="write the result here (key test_acc)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("demo", help="train and evaluate a small QLAM on sMNIST (~15 min)")
    p.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    p.set_defaults(func=cmd_demo)
