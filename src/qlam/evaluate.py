"""Evaluation: a model's loss and accuracy on a task split, and saved models (``model.pt``)
loaded and scored, exactly or with finite shots and noise (``qlam eval``)."""

from __future__ import annotations

from pathlib import Path

import torch

from qlam import config
from qlam import distributed as ddp
from qlam.config import config_from_dict, resolve_device, resolved_model_options
from qlam.data.facts import GENERATED_TASKS
from qlam.models import build_model
from qlam.models.qlam import QLAMClassifier
from qlam.objectives import batch_stats
from qlam.sim.noise import parse_noise
from qlam.store import load_checkpoint


@torch.no_grad()
def evaluate(model, task, split, batch_size: int, device, limit: int | None = None,
             ctx: ddp.DistContext | None = None):
    """(mean loss, accuracy) of ``model`` on a task split (a name or a Split; each rank
    scores a shard of every batch when ``ctx`` is a distributed group). Loss and accuracy
    follow ``task.target`` (:mod:`qlam.objectives`): per target token for ``tokens``, MSE
    and tolerance accuracy for ``regression``."""
    ctx = ctx or ddp.DistContext()
    kind = getattr(task, "target", "class")
    model.eval()
    examples, count, correct, loss_sum = 0, 0, 0, 0.0
    for x, y in task.batches(split, batch_size):
        if limit is not None and examples >= limit:
            break
        if limit is not None:
            x, y = x[: limit - examples], y[: limit - examples]
        examples += len(y)
        x, y, _, w = ctx.shard(x, y)
        x, y = x.to(device), y.to(device)
        loss, right, n = batch_stats(model(x), y, kind)
        loss_sum += w * loss.item() * n
        correct += w * right
        count += w * n
    loss_sum, correct, count = ctx.all_sum([loss_sum, correct, count])
    model.train()
    if count == 0:
        name = split if isinstance(split, str) else "given"
        raise ValueError(f"the {name} split has no examples to evaluate (limit={limit})")
    return loss_sum / count, correct / count


def load_model(path: str | Path, device="cpu"):
    """(model, checkpoint dict) from a ``model.pt`` written by :func:`train`; the model is
    in eval mode on ``device``.

    Example:
        >>> model, ck = load_model("runs/smnist/model.pt")  # doctest: +SKIP
        >>> logits = model(x)  # x (B, L, n_features) -> (B, n_classes)  # doctest: +SKIP
    """
    ck = load_checkpoint(path, device)
    for key in ("model_name", "config", "model", "n_features", "n_classes"):
        if key not in ck:
            raise ValueError(f"{path} is not a qlam model checkpoint (missing {key!r})")
    cfg = config_from_dict(ck["config"])
    options = resolved_model_options(cfg, ck["n_features"], ck["n_classes"],
                                     ck.get("target", "class"), ck.get("discrete", False))
    model = build_model(ck["model_name"], ck["n_features"], ck["n_classes"], **options)
    model.load_state_dict(ck["model"])
    return model.to(device).eval(), ck


def load_qlam(path, device="cpu"):
    """(QLAMClassifier, checkpoint) or a clear error for any other model."""
    model, ck = load_model(path, device)
    if not isinstance(model, QLAMClassifier):
        raise ValueError(f"{path} holds a {ck.get('model_name')!r} model; this command needs a "
                         "QLAM model (trained with --model qlam)")
    return model, ck


def checkpoint_task(ck: dict, task: str | None = None, split: str = "test",
                    length: int | None = None, limit: int | None = None):
    """(config, Task) to evaluate a checkpoint on: its run's task, or ``task``, built as the
    run built it, so that the test split is the one the run reported (of a generated task
    only ``split`` is generated; with ``length``, a fresh test set at that length instead,
    of ``limit`` examples if given), checked to fit the checkpoint: features, outputs, target
    kind, and token ids against features."""
    cfg = config_from_dict(ck["config"])
    if task is not None:
        cfg = config.with_task(cfg, task)
    if cfg.task in GENERATED_TASKS:
        cfg.test_lengths = None
        if length is not None and limit is not None:
            cfg.limit_test = limit
        t = config.build_task(cfg, splits=() if length is not None else (split,))
    elif length is not None:
        raise ValueError(f"--length applies to the generated tasks, not to {cfg.task!r}")
    else:
        t = config.build_task(cfg)
    have = (t.n_features, t.n_classes, t.target, t.discrete)
    want = (ck["n_features"], ck["n_classes"], ck.get("target", "class"),
            ck.get("discrete", False))
    if have != want:
        def says(n_features, n_classes, target, discrete):
            inputs = f"token ids < {n_features}" if discrete else f"{n_features} features"
            return f"{inputs}, {n_classes} outputs, target {target!r}"

        raise ValueError(f"task {cfg.task!r} ({says(*have)}) does not fit this checkpoint "
                         f"(trained on {ck['task']!r}: {says(*want)})")
    return cfg, t


def eval_checkpoint(path, task: str | None = None, shots: int | None = None, seed: int = 0,
                    device: str = "auto", batch_size: int = 256, limit: int | None = None,
                    noise=None, length: int | None = None) -> dict:
    """Test accuracy of a saved model: exact, with ``shots`` measurement samples, or under
    ``noise`` ("depolarizing:0.01", see :mod:`qlam.sim.noise`: the channel on every qubit
    after every token, one trajectory per example; not both, see
    :func:`qlam.sim.scan.noisy.check_readout`); ``seed`` seeds the sampler. ``length``:
    a generated task's test set at that length (e.g. longer than the model trained on).

    Example:
        >>> eval_checkpoint("runs/smnist/model.pt", shots=100)["test_acc"]  # doctest: +SKIP
        0.976
    """
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 1):
        raise ValueError(f"shots must be an int >= 1, got {shots!r}")
    for name, v in (("limit", limit), ("batch_size", batch_size)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    channel = parse_noise(noise)
    dev = resolve_device(device)
    model, ck = load_model(path, dev)
    cfg, t = checkpoint_task(ck, task, length=length, limit=limit)
    if shots is not None or channel is not None:
        model.set_readout(shots, channel, torch.Generator(device=dev).manual_seed(seed))
    split = t.test if length is None else t.test_at(length)
    loss, acc = evaluate(model, t, split, batch_size, dev, limit)
    return {"checkpoint": str(path), "task": cfg.task, "model": ck["model_name"],
            "test_acc": acc, "test_loss": loss, "shots": shots,
            "noise": None if channel is None else str(channel), "seed": seed,
            "length": split.x.shape[1], "target": t.target, "chance": t.chance,
            "n_test": min(limit, len(split)) if limit else len(split)}


__all__ = ["evaluate", "load_model", "load_qlam", "checkpoint_task", "eval_checkpoint"]
