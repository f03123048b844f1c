"""Training: one readable loop, atomic checkpoints, exact resume.

``qlam train`` builds a task (qlam.data) and a model (qlam.models), trains with AdamW and a
warmup + cosine schedule, validates every epoch (``DIR/metrics.jsonl``), keeps the
best-on-validation weights in ``DIR/model.pt`` and evaluates them on the test set at the end
(``DIR/summary.json``); ``DIR/train.log`` holds the messages printed to stderr and
``DIR/learning_curve.png`` the per-epoch curves (with matplotlib). ``DIR/checkpoint.pt`` holds
everything needed to resume (model, optimizer, RNG states, position in the epoch); it is
written atomically every epoch and every ``checkpoint_minutes``, so a killed run resumed
with ``--resume`` reaches the same result as an uninterrupted one. SIGTERM or SIGINT (a
scheduler's stop, Ctrl-C) ends the current step, writes the checkpoint and returns
(``stopped="interrupted"``); a second signal acts as usual. ``max_minutes`` ends the run
where the budget runs out (validated and tested there, ``stopped="time budget"``); resumed
with a larger budget it continues from that step. A run holds ``DIR/.lock`` while it trains:
a second process given the same directory is refused (qlam.rundirs.run_lock).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import torch

from qlam import config
from qlam import distributed as ddp
from qlam.atomic import atomic_write_bytes, atomic_write_text
from qlam.config import (
    TrainConfig,
    check_config,
    config_from_dict,
    drop_unused_model_options,
    precision_context,
    read_config_file,
    resolve_device,
    resolved_model_options,
    set_threads,
)
from qlam.data.overlap import seen_in_train
from qlam.evaluate import eval_checkpoint, evaluate, load_model
from qlam.models import build_model, count_params
from qlam.objectives import METRICS, batch_stats
from qlam.optim_hints import MEMORY, hints
from qlam.progress import Progress
from qlam.rundirs import RunDirBusy, differing_settings, run_lock
from qlam.scalars import ScalarLog
from qlam.store import atomic_save, load_checkpoint


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """AdamW groups from the modules' own hints (:mod:`qlam.optim_hints`): a hinted parameter
    takes its weight decay and learning-rate scale (``MEMORY``: ``lr_memory_scale``); the
    others decay if they are matrices, not if they are norms or biases."""
    plain = [{"params": [], "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
             {"params": [], "weight_decay": 0.0, "lr_scale": 1.0}]
    hinted: dict[tuple, dict] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        h = hints(p)
        if not h:
            plain[0 if p.dim() >= 2 else 1]["params"].append(p)
            continue
        key = tuple(sorted(h.items()))
        if key not in hinted:
            scale = h.get("lr_scale", 1.0)
            hinted[key] = {"params": [], "weight_decay": h.get("weight_decay", cfg.weight_decay),
                           "lr_scale": cfg.lr_memory_scale if scale == MEMORY else scale}
        hinted[key]["params"].append(p)
    return [g for g in plain + list(hinted.values()) if g["params"]]


def lr_factor(step: int, total: int, warmup_frac: float) -> float:
    """Linear warmup then cosine decay to zero."""
    warm = max(1, int(total * warmup_frac))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))


def _rng_state(ctx: ddp.DistContext) -> dict:
    """The generators a run draws from: the CPU's (batch order) and, where CUDA is in use,
    every GPU's (dropout on the device); rank 0's at the top and, in a group, every rank's
    under ``"ranks"`` (their streams part where shards differ in size). A collective: every
    rank calls it."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    ranks = ctx.gather(state)
    return {**ranks[0], "ranks": ranks} if ctx.enabled else state


def _set_rng_state(state: dict, ctx: ddp.DistContext) -> None:
    """Restore this rank's generators from :func:`_rng_state` (rank 0's where the run was
    saved by a different number of processes); the states may have been loaded onto a GPU
    with the checkpoint (map_location), and generators take CPU byte tensors."""
    ranks = state.get("ranks") or [state]
    state = ranks[ctx.rank] if len(ranks) == ctx.world_size else ranks[0]
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        saved = [s.cpu() for s in state["cuda"]][:torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(saved)


BEST_KEYS = ("best_val", "best_epoch", "best_score")
PARTIAL_BEST = "best_before_partial"  # state key: the best before a partial epoch's validation
FULL_EPOCHS_BEST = "model_full_epochs.pt"  # model.pt as it was before that validation


def _undo_partial_best(state: dict, out: Path, is_main: bool) -> None:
    """A time-budget stop validates its partial epoch, which may become the best (model.pt);
    a run continued from there keeps the best of what an uninterrupted run validated."""
    before = state.pop(PARTIAL_BEST, None)
    if before is None:
        return
    for k in BEST_KEYS:
        state.pop(k, None)
    state.update(before)
    if is_main:
        kept = out / FULL_EPOCHS_BEST
        if kept.exists():
            os.replace(kept, out / "model.pt")
        else:  # no epoch had ended before
            (out / "model.pt").unlink(missing_ok=True)


def _check_best_model(state: dict, out: Path, log) -> None:
    """On resume: the best epoch's weights (model.pt) must still be readable; if they are
    lost the run goes on without a best (the next validation sets one), said in the log,
    instead of failing after all its remaining training."""
    if state["best_epoch"] < 0:
        return
    try:
        load_checkpoint(out / "model.pt")
    except (FileNotFoundError, ValueError) as exc:
        log(f"the best epoch's weights are lost ({exc}); the run continues and keeps the best "
            f"of its remaining epochs (epoch {state['best_epoch']} had validated at "
            f"{state['best_val']:.4f})")
        for k in BEST_KEYS:
            state.pop(k, None)
        state.update(best_val=-1.0, best_epoch=-1)
        state.pop(PARTIAL_BEST, None)


@contextlib.contextmanager
def _stop_on_signals():
    """Yields a dict whose "hit" turns True on the first SIGTERM / SIGINT (whose handlers are
    then restored, so a second one acts as usual). Signal handlers live in the main thread
    only; elsewhere nothing is installed."""
    flag = {"hit": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    old = {}

    def handler(signum, frame):
        flag["hit"] = True
        for s, h in old.items():
            signal.signal(s, h)

    for s in (signal.SIGTERM, signal.SIGINT):
        old[s] = signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def train(cfg: TrainConfig, resume: bool = False, command: str | None = None,
          distributed: bool | None = None) -> dict:
    """Train and evaluate; returns the summary (also written to ``cfg.out``/summary.json).

    ``distributed``: True = DistributedDataParallel over the process group that torchrun
    (or :func:`qlam.distributed.launch_local`) describes in the environment, None = so when
    WORLD_SIZE > 1, False = one process (see :mod:`qlam.distributed`).

    Example:
        >>> summary = train(TrainConfig(task="data.npz", epochs=2, out="runs/mine"))  # doctest: +SKIP
        >>> summary["test_acc"]  # doctest: +SKIP
        0.91
    """
    cfg = drop_unused_model_options(cfg)
    ctx = ddp.init(distributed, resolve_device(cfg.device))
    try:
        with _stop_on_signals() as signalled, _run_dir(cfg, resume, ctx):
            summary = _train(cfg, resume, command, ctx, signalled)
        if signalled["hit"] and "test_acc" in summary:  # a stop asked for after training
            return {**summary, "signalled": True}  # (finished: the summary file is whole)
        return summary
    finally:
        ddp.shutdown(ctx)


@contextlib.contextmanager
def _run_dir(cfg: TrainConfig, resume: bool, ctx: ddp.DistContext):
    """The run directory checked, created and locked (rundirs.run_lock, on rank 0) for the
    run's whole length; a busy directory stops every rank."""
    check_config(cfg)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; it must name a directory for the run")
    with contextlib.ExitStack() as stack:
        busy = None
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
            try:
                stack.enter_context(run_lock(out))
            except RunDirBusy as exc:
                busy = str(exc)
        busy = ctx.broadcast(busy)
        if busy is not None:
            raise RunDirBusy(busy)
        ckpt_path = out / "checkpoint.pt"  # (checked under the lock: no run writes it now)
        if ckpt_path.exists() and not resume:
            raise ValueError(f"{ckpt_path} exists: pass --resume to continue it, or choose "
                             "another --out")
        if resume and not ckpt_path.exists() and ctx.is_main:
            print(f"--resume: no checkpoint at {ckpt_path}; starting a new run", file=sys.stderr)
        yield


def _train(cfg: TrainConfig, resume: bool, command: str | None,
           ctx: ddp.DistContext, signalled: dict) -> dict:
    out = Path(cfg.out)
    ckpt_path = out / "checkpoint.pt"

    def log(msg: str) -> None:  # stderr and DIR/train.log, on rank 0
        if ctx.is_main:
            print(msg, file=sys.stderr)
            with open(out / "train.log", "a") as f:
                f.write(msg + "\n")
    set_threads(cfg.threads)
    device = ctx.device if ctx.enabled else resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    task = config.build_task(cfg)
    if len(task.val) == 0:  # every epoch ends with a validation
        raise ValueError(f"task {cfg.task!r} has no validation examples (val_fraction "
                         f"{cfg.val_fraction}): give a val_fraction > 0")
    if cfg.model == "transformer" and task.target == "tokens" and cfg.causal is None:
        cfg = dataclasses.replace(cfg, causal=True)  # per token: what the recurrent models see
    shares = seen_in_train(task.train.x, {"val": task.val.x[:cfg.limit_test],
                                          "test": task.test.x[:cfg.limit_test]})
    seen = {name: round(share, 4) for name, share in shares.items()}
    if any(seen.values()):
        log(f"warning: {seen['test']:.1%} of the test and {seen['val']:.1%} of the validation "
            "inputs also occur in the training set: their accuracy measures memory more than "
            "the task (a longer --length has more distinct sequences)")
    model_options = resolved_model_options(cfg, task.n_features, task.n_classes, task.target,
                                           task.discrete)
    model = build_model(cfg.model, task.n_features, task.n_classes, **model_options)
    model.to(device)
    n_params = count_params(model)
    opt = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, betas=(0.9, 0.98))
    n_train = len(task.train)
    steps_per_epoch = math.ceil(n_train / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_val": -1.0,
             "best_epoch": -1, "wall_s": 0.0, "stats": [0.0, 0, 0], "window": [0.0, 0, 0, 0, 0.0]}
    ck, spent = None, False  # rank 0 reads the checkpoint and broadcasts it
    if resume and ctx.is_main and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, "cpu" if ctx.enabled else device)
        _check_best_model(ck["state"], out, log)
    ck = ctx.broadcast(ck)
    if ck is not None:
        saved_cfg = config_from_dict(ck["config"])
        changed = differing_settings(dataclasses.asdict(cfg), dataclasses.asdict(saved_cfg))
        if changed:
            raise ValueError(f"{ckpt_path} was written with a different configuration "
                             f"({', '.join(changed)}); resume with the same settings")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        state = ck["state"]
        state.setdefault("window", [0.0, 0, 0, 0, state["wall_s"]])  # older checkpoints
        spent = cfg.max_minutes is not None and state["wall_s"] > cfg.max_minutes * 60
        if not spent:  # training goes on: the partial epoch's validation no longer counts
            _undo_partial_best(state, out, ctx.is_main)
        _set_rng_state(ck["rng"], ctx)
        log(f"resuming {out} at epoch {state['epoch'] + 1}, step {state['step_in_epoch']}")
    elif ctx.is_main:  # a fresh start (--resume without a checkpoint too): no stale records
        for f in ("metrics.jsonl", "summary.json", "model.pt", FULL_EPOCHS_BEST, "train.log",
                  "learning_curve.png"):
            (out / f).unlink(missing_ok=True)
    if ctx.is_main:
        atomic_write_text(out / "config.json", json.dumps(dataclasses.asdict(cfg), indent=2))
    log(f"{command or ' '.join(sys.argv)}: {cfg.model} ({n_params} parameters) on {cfg.task}, "
        f"{n_train} training examples, device {device}")
    net = ctx.wrap(model)  # DistributedDataParallel when distributed; saves use `model`
    if cfg.compile:  # the training forward only (evaluation runs `model`, eager)
        net = torch.compile(net)
    scalars = ScalarLog(out, tensorboard=cfg.tensorboard, enabled=ctx.is_main,
                        resume_step=None if ck is None else state["global_step"],
                        resume_epochs=None if ck is None else state["epoch"])

    def save_checkpoint():  # every rank calls it (the generators are gathered)
        rng = _rng_state(ctx)
        if not ctx.is_main:
            return
        atomic_save({"config": dataclasses.asdict(cfg), "model": model.state_dict(),
                     "optimizer": opt.state_dict(), "state": state, "rng": rng}, ckpt_path)

    def save_best():
        if not ctx.is_main:
            return
        atomic_save({"model_name": cfg.model, "task": cfg.task, "config": dataclasses.asdict(cfg),
                     "n_features": task.n_features, "n_classes": task.n_classes,
                     "target": task.target, "discrete": task.discrete,
                     "model": model.state_dict(), "val_acc": state["best_val"],
                     "epoch": state["best_epoch"]}, out / "model.pt")

    t_session = time.time()
    wall0 = state["wall_s"]
    last_ckpt = time.time()
    stopped = "time budget" if spent else None  # a resume with the budget spent: no step more
    model.train()
    while state["epoch"] < cfg.epochs and stopped is None:
        epoch = state["epoch"]
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        batches = task.batches("train", cfg.batch_size, shuffle=True, generator=gen)
        bar = Progress(steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}",
                       disable=not ctx.is_main)
        t_epoch, tokens = time.time(), 0
        for i, (x, y) in enumerate(batches):
            if i < state["step_in_epoch"]:
                continue  # already done before the resume (same order: same generator)
            x, y, n_global, w = ctx.shard(x, y)  # this rank's slice of the global batch
            x, y = x.to(device), y.to(device)
            factor = lr_factor(state["global_step"], total_steps, cfg.warmup_frac)
            for g in opt.param_groups:
                g["lr"] = cfg.lr * g["lr_scale"] * factor
            with precision_context(cfg.precision, device.type):
                logits = net(x)
            loss, right, count = batch_stats(logits.float(), y, task.target)
            batch = [loss.item() * count * w, right * w, count * w]
            if ctx.enabled:  # DDP averages rank gradients: weight to the global-batch mean
                loss = loss * (w * len(y) * ctx.world_size / n_global)
            if not torch.isfinite(loss):
                raise RuntimeError(f"loss became {loss.item()} at step {state['global_step']}; "
                                   "lower --lr or check the data")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            # the gradient norm (and clipping, if asked): a non-finite norm stops the run before
            # the step, so neither the weights nor a later checkpoint take the NaN
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
            if not torch.isfinite(norm):
                raise RuntimeError(f"gradient became {norm.item()} at step {state['global_step']} "
                                   "(exploding through the sequence?); the weights were not "
                                   "updated: lower --lr and start again")
            opt.step()
            state["step_in_epoch"] = i + 1
            state["global_step"] += 1
            elapsed = state["wall_s"] = wall0 + time.time() - t_session
            over_time = cfg.max_minutes is not None and elapsed > cfg.max_minutes * 60
            due = time.time() - last_ckpt > cfg.checkpoint_minutes * 60
            # all ranks stop, and checkpoint, together
            *batch, over_time, interrupted, due = ctx.all_sum(
                [*batch, over_time, signalled["hit"], due])
            st, win = state["stats"], state["window"]
            for k in range(3):
                st[k] += batch[k]
                win[k] += batch[k]
            tokens += n_global * x.shape[1]
            win[3] += n_global * x.shape[1]
            if state["global_step"] % cfg.log_every == 0:  # loss and accuracy since the last one
                scalars.step({"step": state["global_step"],
                              "epoch_frac": state["global_step"] / steps_per_epoch,
                              "train_loss": win[0] / win[2], "train_acc": win[1] / win[2],
                              "lr": cfg.lr * factor,
                              "tokens_per_s": win[3] / max(elapsed - win[4], 1e-9)})
                state["window"] = [0.0, 0, 0, 0, elapsed]
            rate = tokens / max(time.time() - t_epoch, 1e-9)
            bar.update(i + 1, loss=st[0] / st[2], acc=st[1] / st[2], tok_s=rate)
            if cfg.stop_after_steps is not None and state["global_step"] >= cfg.stop_after_steps:
                stopped = "preempted"
            elif interrupted:
                stopped = "interrupted"
            elif over_time:
                stopped = "time budget"
            if stopped or due:
                save_checkpoint()
                last_ckpt = time.time()
            if stopped:
                break
        bar.close()
        if stopped in ("preempted", "interrupted"):
            why = ("interrupted" if stopped == "interrupted" else
                   f"stopped after {state['global_step']} steps (--stop-after-steps)")
            how = ("the same command with --resume" if stopped == "interrupted" else
                   "the same command with --resume and a larger --stop-after-steps (or none)")
            log(f"{why}: checkpoint written to {ckpt_path}; {how} continues the run")
            scalars.close()
            return {"stopped": stopped, "global_step": state["global_step"]}
        val_loss, val_acc = evaluate(model, task, "val", cfg.eval_batch_size, device, ctx=ctx)
        st = state["stats"]
        record = {"epoch": epoch + 1, "train_loss": st[0] / max(st[2], 1),
                  "train_acc": st[1] / max(st[2], 1), "val_loss": val_loss, "val_acc": val_acc,
                  "lr": cfg.lr * lr_factor(state["global_step"] - 1, total_steps, cfg.warmup_frac),
                  "epoch_s": time.time() - t_epoch,
                  "tokens_per_s": tokens / max(time.time() - t_epoch, 1e-9),
                  "wall_s": state["wall_s"], "partial": stopped is not None,
                  "step": state["global_step"], "epoch_frac": state["global_step"] / steps_per_epoch}
        scalars.epoch(record)
        log(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}))
        # the best epoch: highest accuracy; lowest MSE for regression (best_val keeps its acc)
        score = -val_loss if task.target == "regression" else val_acc
        if state["best_epoch"] < 0 or score > state.get("best_score", state["best_val"]):
            if stopped is not None:  # a partial epoch: undone if the run continues
                state[PARTIAL_BEST] = {k: state[k] for k in BEST_KEYS if k in state}
                if ctx.is_main and (out / "model.pt").exists():
                    atomic_write_bytes(out / FULL_EPOCHS_BEST, (out / "model.pt").read_bytes())
            state["best_val"], state["best_epoch"], state["best_score"] = val_acc, epoch + 1, score
            save_best()
        if stopped is None:  # a time-budget stop keeps its place: a longer budget continues it
            state.update(epoch=epoch + 1, step_in_epoch=0, stats=[0.0, 0, 0])
        save_checkpoint()
        last_ckpt = time.time()
    scalars.close()

    best = ctx.broadcast(load_checkpoint(out / "model.pt", "cpu" if ctx.enabled else device)
                         if ctx.is_main else None)
    model.load_state_dict(best["model"])
    test_loss, test_acc = evaluate(model, task, "test", cfg.eval_batch_size, device,
                                   cfg.limit_test, ctx=ctx)
    by_length = {}
    for length in task.test_lengths:  # length generalisation: fresh test sets, one at a time
        split = task.test_at(length)
        loss, acc = evaluate(model, task, split, cfg.eval_batch_size, device, cfg.limit_test,
                             ctx=ctx)
        by_length[str(length)] = {"test_acc": acc, "test_loss": loss,
                                  "n_test": min(len(split), cfg.limit_test or len(split))}
        log(f"test length {length}: accuracy {acc:.4f}, loss {loss:.4f}")
    summary = {"task": cfg.task, "model": cfg.model, "test_acc": test_acc, "test_loss": test_loss,
               "target": task.target, "metric": METRICS[task.target], "chance": task.chance,
               "length": task.seq_len, "test_lengths": by_length,
               "val_acc": state["best_val"], "best_epoch": state["best_epoch"],
               "params": n_params, "d_model": model_options.get("d_model"),
               "world_size": ctx.world_size, "epochs": state["epoch"],
               "steps": state["global_step"], "steps_per_epoch": steps_per_epoch,
               "wall_s": state["wall_s"],
               "seed": cfg.seed, "stopped": stopped, "device": str(device),
               "threads": torch.get_num_threads(), "torch": torch.__version__,
               "command": command or " ".join(sys.argv), "config": dataclasses.asdict(cfg),
               "n_train": len(task.train), "n_test": min(cfg.limit_test or len(task.test), len(task.test)),
               "seen_in_train": seen}
    if not ctx.is_main:
        return summary
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    log(f"test accuracy {test_acc:.4f} (best val {state['best_val']:.4f} at epoch "
        f"{state['best_epoch']}), {n_params} parameters, {state['wall_s'] / 60:.1f} min")
    _plot_learning_curve(out, log, "mean squared error" if task.target == "regression"
                         else "cross-entropy")
    return summary


def _plot_learning_curve(out: Path, log, loss: str) -> None:
    """DIR/learning_curve.png from DIR/metrics.jsonl (skipped, with a line in the log,
    without matplotlib)."""
    from qlam.plots import learning_curve

    try:
        learning_curve([out], out / "learning_curve.png", title=out.name, loss=loss)
    except RuntimeError as exc:
        log(f"no learning_curve.png: {exc}")


# the configuration and evaluation live in qlam.config and qlam.evaluate; these names stay
# importable from here
__all__ = ["TrainConfig", "train", "evaluate", "load_model", "eval_checkpoint",
           "read_config_file", "config_from_dict"]
