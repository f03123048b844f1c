"""The training configuration: the :class:`TrainConfig` dataclass, reading it from files and
command lines, and what it resolves to (device, task, model options).

``add_config_args`` turns the dataclass into command-line flags (``qlam train``, ``qlam
sweep``); a TOML or YAML file gives the same keys (:func:`read_config_file`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import torch

from qlam.data.tasks import get_task
from qlam.models import REGISTRY, model_options, size_to_budget


@dataclass
class TrainConfig:
    task: str = "smnist"
    model: str = "qlam"
    epochs: int = 10
    batch_size: int = 64
    eval_batch_size: int = 256
    lr: float = 3e-3
    lr_memory_scale: float = 0.5  # quantum-memory parameters: lower lr, no weight decay
    weight_decay: float = 0.05
    warmup_frac: float = 0.05
    grad_clip: float = 1.0
    seed: int = 0
    limit_train: int | None = None
    limit_test: int | None = None
    val_fraction: float = 0.1
    tokenize: str = "pixel"
    patch: int = 4
    grayscale: bool = False
    # generated tasks (qlam.data.generated): training length, test lengths "256,1024", vocabulary
    length: int | None = None
    test_lengths: str | None = None
    vocab: int | None = None
    device: str = "auto"
    out: str = "runs/default"
    threads: int | None = None
    checkpoint_minutes: float = 10.0
    max_minutes: float | None = None  # stop training after this wall time, then evaluate
    stop_after_steps: int | None = None  # save a checkpoint and exit (simulated preemption)
    log_every: int = 100  # steps per training-loss record (metrics.jsonl, TensorBoard)
    tensorboard: bool = False  # also write TensorBoard scalars into out (the `tensorboard` extra)
    # model sizes (each model takes the ones it knows)
    params: int | None = None  # parameter budget: pick d_model to land near it (not with d_model)
    d_model: int | None = None
    n_layers: int | None = None
    n_heads: int | None = None
    n_qubits: int | None = None
    depth: int | None = None
    mlp_ratio: float | None = None
    dropout: float | None = None
    pool: str | None = None
    dt_min: float | None = None
    dt_max: float | None = None
    query_basis: bool | None = None
    memory: str | None = None  # QLAM's memory: "unitary" (the paper's) or "mixed"
    d_state: int | None = None  # SSM state size
    causal: bool | None = None  # transformer: attend to earlier tokens only
    extra: dict = field(default_factory=dict)

    def model_options(self) -> dict:
        """The settings some model takes (by the models' signatures), then ``extra``."""
        taken = set().union(*(model_options(name) for name in REGISTRY))
        opts = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name in taken}
        opts.update(self.extra)
        return opts


# settings that control a run but not its result: they may change on --resume
RUN_CONTROL = ("out", "device", "threads", "checkpoint_minutes", "max_minutes",
               "stop_after_steps", "eval_batch_size", "log_every", "tensorboard")


# settings that must be >= 1 (when set) and those that must be finite and > 0
_AT_LEAST_ONE = ("epochs", "batch_size", "eval_batch_size", "limit_train", "limit_test",
                 "patch", "threads", "params", "d_model", "n_layers", "n_heads", "n_qubits",
                 "depth", "d_state", "log_every")
_POSITIVE = ("lr", "lr_memory_scale", "checkpoint_minutes", "max_minutes", "mlp_ratio",
             "dt_min", "dt_max")


def _check_type(name: str, value, hint):
    """``value`` as the config field's type (an int is accepted for a float), or TypeError."""
    kinds = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    if value is None:
        if type(None) in typing.get_args(hint):
            return None
        raise TypeError(f"config {name} must be {kinds[0].__name__}, got None")
    kind = kinds[0]
    ok = (isinstance(value, kind) and (kind is bool or not isinstance(value, bool))) or (
        kind is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        raise TypeError(f"config {name} must be {kind.__name__}, got {value!r} "
                        f"({type(value).__name__})")
    return float(value) if kind is float else value


def check_config(cfg: TrainConfig) -> TrainConfig:
    """Types and ranges of every setting, with an error naming the bad one."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(cfg):
        setattr(cfg, f.name, _check_type(f.name, getattr(cfg, f.name), hints[f.name]))
    for name in _AT_LEAST_ONE:
        v = getattr(cfg, name)
        if v is not None and v < 1:
            raise ValueError(f"{name} must be >= 1, got {v}")
    for name in _POSITIVE:
        v = getattr(cfg, name)
        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {v}")
    for name in ("weight_decay", "grad_clip"):
        v = getattr(cfg, name)
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {v}")
    if not 0 <= cfg.warmup_frac <= 1:
        raise ValueError(f"warmup_frac must be in [0, 1], got {cfg.warmup_frac}")
    if not 0 <= cfg.val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {cfg.val_fraction}")
    if cfg.stop_after_steps is not None and cfg.stop_after_steps < 0:
        raise ValueError(f"stop_after_steps must be >= 0, got {cfg.stop_after_steps}")
    return cfg


def config_from_dict(d: dict) -> TrainConfig:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(unknown)}")
    return check_config(TrainConfig(**d))


def read_config_file(path: str | Path) -> dict:
    """A flat table of TrainConfig keys from TOML (.toml) or YAML (.yaml/.yml)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    text = path.read_text()
    if path.suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            try:
                import tomli as tomllib
            except ModuleNotFoundError as exc:
                raise RuntimeError("reading TOML on Python 3.10 needs `pip install tomli`") from exc
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: invalid TOML: {exc}") from exc
    elif path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ModuleNotFoundError as exc:
            raise RuntimeError("YAML configs need `pip install pyyaml` (or use TOML)") from exc
        data = yaml.safe_load(text) or {}
    else:
        raise ValueError(f"config file must be .toml, .yaml or .yml, got {path.name}")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a table of settings")
    return data


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but CUDA is not available")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"device must be cpu, cuda or auto, got {name!r}")
    return torch.device(name)


def build_task(cfg: TrainConfig, splits=("train", "val", "test")):
    """The task of ``cfg`` (for generated tasks, only ``splits`` are generated now)."""
    return get_task(cfg.task, tokenize=cfg.tokenize, patch=cfg.patch, grayscale=cfg.grayscale,
                    val_fraction=cfg.val_fraction, seed=cfg.seed, limit_train=cfg.limit_train,
                    length=cfg.length, test_lengths=cfg.test_lengths, vocab=cfg.vocab,
                    limit_test=cfg.limit_test, splits=splits)


def resolved_model_options(cfg: TrainConfig, n_features: int, n_classes: int,
                           target: str = "class", discrete: bool = False) -> dict:
    """The config's model options for a task with this ``target`` kind and input (token ids
    when ``discrete``), with d_model chosen from the ``params`` budget if set. Per-token
    targets need ``pool="none"`` (the default for them); the others a pooled output."""
    opts = cfg.model_options()
    opts["discrete"] = discrete
    if target == "tokens":
        if opts.get("pool") not in (None, "none"):
            raise ValueError(f"task {cfg.task!r} predicts a label per token: --pool must be "
                             f"'none' (the default for it), not {opts['pool']!r}")
        opts["pool"] = "none"
    elif opts.get("pool") == "none":
        raise ValueError(f"task {cfg.task!r} predicts one {target} per sequence: --pool 'none' "
                         "(per-token outputs) does not apply; use mean or last")
    if cfg.params is not None:
        if opts.get("d_model") is not None:
            raise ValueError("give a parameter budget (--params) or a width (--d-model), not both")
        opts["d_model"] = size_to_budget(cfg.model, n_features, n_classes, cfg.params, **opts)
    return opts


def add_config_args(parser: argparse.ArgumentParser, skip=()) -> None:
    """One flag per TrainConfig field (``--d-model``; booleans ``--x/--no-x``), default
    None (unset), except ``extra`` and the names in ``skip``."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "extra" or f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = ([a for a in typing.get_args(hints[f.name]) if a is not type(None)]
                or [hints[f.name]])[0]
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None)
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=None,
                                metavar=f.name.upper())


def args_to_dict(args, skip=()) -> dict:
    """The TrainConfig fields set on the command line (not None), except ``skip``."""
    return {f.name: v for f in dataclasses.fields(TrainConfig)
            if f.name not in skip and (v := getattr(args, f.name, None)) is not None}


__all__ = ["TrainConfig", "RUN_CONTROL", "config_from_dict", "read_config_file",
           "resolve_device", "build_task", "resolved_model_options", "add_config_args",
           "args_to_dict"]
