"""The training configuration: the :class:`TrainConfig` dataclass, reading it from files and
command lines, and what it resolves to (device, task, model options).

``add_config_args`` turns the dataclass into command-line flags (``qlam train``, ``qlam
sweep``); a TOML or YAML file gives the same keys (:func:`read_config_file`).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from qlam.data import generated
from qlam.data.npz_task import is_file_task
from qlam.data.tasks import VAL_FRACTION, get_task
from qlam.models import REGISTRY, model_options, size_to_budget
from qlam.rundirs import RUN_CONTROL


@dataclass
class TrainConfig:
    """Settings of one training run (``qlam train`` flags: ``--batch-size`` is batch_size).

    Example:
        >>> cfg = TrainConfig(task="smnist", model="qlam", epochs=1, d_model=32, out="runs/x")
        >>> cfg.model_options()["d_model"]
        32
    """

    task: str = "smnist"
    model: str = "qlam"
    label: str | None = None  # the run's name in `qlam report` (default: the model's)
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
    val_fraction: float = VAL_FRACTION
    tokenize: str = "pixel"
    patch: int = 4
    grayscale: bool = False
    # generated tasks (qlam.data.generated): training length, test lengths "256,1024", vocabulary
    length: int | None = None
    test_lengths: str | None = None
    vocab: int | None = None
    device: str = "auto"
    # "bf16": the training forward runs under bfloat16 autocast (matrix products in bf16, on
    # AMX where the CPU has it; QLAM's simulation stays float32); evaluation in float32
    precision: str = "fp32"
    # torch.compile the training forward (Inductor: the block's elementwise passes fused; QLAM's
    # kernel stays one op); a one-time compile per distinct batch shape; evaluation eager
    compile: bool = False
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
    read_order: int | None = None  # QLAM: read the Z-strings on at most this many qubits
    conv: int | None = None  # QLAM: a depthwise causal convolution of this size before the memory
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


PRECISIONS = ("fp32", "bf16")


def precision_context(precision: str, device_type: str):
    """The context a forward pass in ``precision`` runs in: bfloat16 autocast for "bf16"
    (``qlam train --precision``, ``qlam bench models --precision``), nothing for "fp32"."""
    return torch.autocast(device_type, torch.bfloat16, enabled=precision == "bf16")


def set_threads(threads: int | None) -> None:
    """``torch.set_num_threads(threads)`` for a command's ``--threads`` (None: PyTorch's
    choice); a count below 1 is a ValueError naming the option."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


# settings that must be >= 1 (when set) and those that must be finite and > 0
_AT_LEAST_ONE = ("epochs", "batch_size", "eval_batch_size", "limit_train", "limit_test",
                 "patch", "threads", "params", "d_model", "n_layers", "n_heads", "n_qubits",
                 "depth", "d_state", "log_every", "read_order", "conv")
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
    if not 0 <= cfg.seed < 2**32:
        raise ValueError(f"seed must be in 0..2^32 - 1, got {cfg.seed}")
    if not 0 <= cfg.val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {cfg.val_fraction}")
    if cfg.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    if cfg.stop_after_steps is not None and cfg.stop_after_steps < 0:
        raise ValueError(f"stop_after_steps must be >= 0, got {cfg.stop_after_steps}")
    return cfg


def config_from_dict(d: dict) -> TrainConfig:
    """A TrainConfig from a flat dict; unknown keys are named, with the key meant where
    one is close (``batch-size`` -> ``batch_size``)."""
    known = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = sorted(set(d) - set(known))
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k).replace("-", "_"), known, n=1, cutoff=0.75)
            hints.append(f"{k} (did you mean {close[0]}?)" if close else str(k))
        raise ValueError(f"unknown config keys: {', '.join(hints)}; keys are TrainConfig "
                         f"fields, written with underscores")
    return check_config(TrainConfig(**d))


def unused_model_options(cfg: TrainConfig) -> list[str]:
    """The model options set in ``cfg`` that its model does not take."""
    if cfg.model not in REGISTRY:
        raise ValueError(f"unknown model {cfg.model!r}; choose one of {', '.join(sorted(REGISTRY))}")
    takes = model_options(cfg.model)
    return [k for k, v in cfg.model_options().items() if v is not None and k not in takes]


GENERATED_ONLY = ("length", "test_lengths", "vocab")
IMAGE_ONLY = ("tokenize", "patch", "grayscale")


def with_task(cfg: TrainConfig, task: str) -> TrainConfig:
    """``cfg`` retargeted to ``task`` (a checkpoint evaluated on another task): the data
    options the new task does not take are reset to their defaults."""
    default = TrainConfig()
    reset = [*(GENERATED_ONLY if task not in generated.SPECS else ()),
             *(IMAGE_ONLY if task in generated.SPECS or is_file_task(task) else ()),
             *(("val_fraction",) if task in generated.SPECS else ())]  # (only test is read)
    return dataclasses.replace(cfg, task=task, **{k: getattr(default, k) for k in reset})


def drop_unused_model_options(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` without the model options its model does not take (e.g. --n-qubits for an
    LSTM), with a warning naming them, so a run records only the settings that applied."""
    unused = unused_model_options(cfg)
    if not unused:
        return cfg
    flags = ", ".join("--" + k.replace("_", "-") for k in unused)
    warnings.warn(f"model {cfg.model!r} does not use {flags}; ignored and not recorded",
                  UserWarning, stacklevel=3)
    fields = {f.name for f in dataclasses.fields(cfg)}
    return dataclasses.replace(cfg, **{k: None for k in unused if k in fields},
                               extra={k: v for k, v in cfg.extra.items() if k not in unused})


def read_config_file(path: str | Path) -> dict:
    """A flat table of TrainConfig keys from TOML (.toml) or YAML (.yaml/.yml)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc})") from exc
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
        try:
            data = yaml.load(text, Loader=_unique_keys_loader(yaml)) or {}
        except yaml.YAMLError as exc:  # (safe_load: a python tag is an error, never run)
            raise ValueError(f"{path}: invalid YAML: {exc}") from exc
    else:
        raise ValueError(f"config file must be .toml, .yaml or .yml, got {path.name}")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a table of settings")
    return data


def _unique_keys_loader(yaml):
    """yaml's SafeLoader that refuses a key given twice in one table (SafeLoader keeps the
    last silently; TOML refuses it)."""
    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                if not isinstance(key, str | int | float | bool):
                    continue  # (an unhashable key: SafeLoader names it itself)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while reading a table", node.start_mark,
                        f"{key!r} is given twice", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


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


# the help text of every `qlam train` / `qlam sweep` flag
HELP = {
    "task": "smnist, psmnist, sfashion, scifar10, a generated task (qlam data tasks), or a .npz "
            "file of your own sequences (arrays x (N, L, F), y (N,); see qlam.data.npz_task)",
    "model": f"one of {', '.join(sorted(REGISTRY))}",
    "label": "the run's name in qlam report tables and plots, to tell variants of one model "
             "apart (default: the model's name)",
    "epochs": "passes over the training set",
    "batch_size": "examples per optimizer step (the global batch when distributed)",
    "eval_batch_size": "examples per batch when validating and testing",
    "lr": "peak learning rate of AdamW (warmup, then cosine decay to 0)",
    "lr_memory_scale": "learning-rate factor of the quantum-memory (and SSM kernel) parameters, "
                       "which get no weight decay",
    "weight_decay": "AdamW weight decay of the weight matrices",
    "warmup_frac": "fraction of all steps spent in linear warmup",
    "grad_clip": "clip the gradient norm to this (0: no clipping)",
    "seed": "seed of initialisation, validation split and batch order",
    "limit_train": "train on the first N training examples only",
    "limit_test": "test on N test examples only: the first N (image and file tasks), N "
                  "generated for the generated tasks (a fixed set for each N)",
    "val_fraction": "fraction of the training set held out for validation",
    "tokenize": "image tasks: pixel, patch or row tokens",
    "patch": "image tasks: patch size with --tokenize patch",
    "grayscale": "scifar10: one grey channel instead of RGB",
    "length": "generated tasks: training sequence length (default: the task's)",
    "test_lengths": "generated tasks: test lengths, e.g. 256,1024",
    "vocab": "generated tasks: vocabulary size",
    "device": "cpu, cuda, cuda:N or auto (cuda when available)",
    "out": "run directory: metrics, checkpoints, summary, train.log, learning_curve.png",
    "threads": "PyTorch CPU threads (default: torch's choice)",
    "checkpoint_minutes": "also write checkpoint.pt every this many minutes",
    "max_minutes": "stop training after this wall time, then evaluate",
    "stop_after_steps": "write a checkpoint and exit after this many steps (a simulated "
                        "preemption; --resume goes on)",
    "log_every": "steps per training-loss record (metrics.jsonl, TensorBoard)",
    "tensorboard": "also write TensorBoard scalars into the run directory (tensorboard extra)",
    "params": "parameter budget: choose d_model to land near it (instead of --d-model)",
    "d_model": "token width (default: the model's own)",
    "n_layers": "stacked layers or blocks",
    "n_heads": "qlam: quantum registers per layer; transformer: attention heads",
    "n_qubits": "qlam: qubits per register; qlstm: qubits per circuit",
    "depth": "qlam: Trotter layers per token; qlstm: circuit layers",
    "mlp_ratio": "qlam, transformer: MLP width / d_model",
    "dropout": "dropout probability",
    "pool": "mean (over tokens), last (the last token) or none (one output per token)",
    "dt_min": "qlam, ssm: smallest initial time scale",
    "dt_max": "qlam, ssm: largest initial time scale",
    "query_basis": "qlam: read each token in a query-chosen basis",
    "read_order": "qlam: read only the Pauli-Z strings on at most this many qubits "
                  "(default: all 2^n - 1)",
    "conv": "qlam: kernel size of a depthwise causal convolution before each memory layer "
            "(Mamba's short convolution; default: none, the memory alone mixes tokens)",
    "memory": "qlam: unitary (the paper's memory) or mixed (a density-matrix channel)",
    "d_state": "ssm: state size per channel",
    "causal": "transformer: attend to earlier tokens only (the default for per-token tasks; "
              "--no-causal: the whole sequence)",
}


def add_config_args(parser: argparse.ArgumentParser, skip=()) -> None:
    """One flag per TrainConfig field (``--d-model``; booleans ``--x/--no-x``), default
    None (unset), with its help text (:data:`HELP`), except ``extra`` and ``skip``."""
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        if f.name == "extra" or f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = ([a for a in typing.get_args(hints[f.name]) if a is not type(None)]
                or [hints[f.name]])[0]
        text = HELP.get(f.name, f.name.replace("_", " "))
        if f.default is not None and f.default is not dataclasses.MISSING:
            text += f" (default {f.default})"
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                                default=None, help=text)
        else:
            parser.add_argument(flag, dest=f.name, type=kind, default=None,
                                metavar=f.name.upper(), help=text)


def args_to_dict(args, skip=()) -> dict:
    """The TrainConfig fields set on the command line (not None), except ``skip``."""
    return {f.name: v for f in dataclasses.fields(TrainConfig)
            if f.name not in skip and (v := getattr(args, f.name, None)) is not None}


__all__ = ["TrainConfig", "PRECISIONS", "RUN_CONTROL", "precision_context", "set_threads",
           "config_from_dict", "read_config_file", "resolve_device", "build_task",
           "resolved_model_options", "add_config_args", "args_to_dict"]
