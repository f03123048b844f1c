"""Training and evaluation: one readable loop, atomic checkpoints, exact resume.

``qlam train`` builds a task (qlam.data) and a model (qlam.models), trains with AdamW and a
warmup + cosine schedule, validates every epoch, keeps the best-on-validation weights in
``DIR/model.pt`` and evaluates them on the test set at the end. ``DIR/checkpoint.pt`` holds
everything needed to resume (model, optimizer, RNG states, position in the epoch); it is
written atomically every epoch and every ``checkpoint_minutes``, so a killed run resumed
with ``--resume`` reaches the same result as an uninterrupted one. SIGTERM or SIGINT (a
scheduler's stop, Ctrl-C) ends the current step, writes the checkpoint and returns
(``stopped="interrupted"``); a second signal acts as usual.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from qlam import distributed as ddp
from qlam.models import build_model, count_params, size_to_budget
from qlam.objectives import METRICS, batch_stats
from qlam.progress import Progress
from qlam.scalars import ScalarLog
from qlam.store import atomic_save, atomic_write_text, load_checkpoint


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
    d_state: int | None = None  # SSM state size
    causal: bool | None = None  # transformer: attend to earlier tokens only
    extra: dict = field(default_factory=dict)

    def model_options(self) -> dict:
        names = ("d_model", "n_layers", "n_heads", "n_qubits", "depth", "mlp_ratio", "dropout",
                 "pool", "dt_min", "dt_max", "query_basis", "d_state", "causal")
        opts = {k: getattr(self, k) for k in names}
        opts.update(self.extra)
        return opts


# settings that control a run but not its result: they may change on --resume
RUN_CONTROL = ("out", "device", "threads", "checkpoint_minutes", "max_minutes",
               "stop_after_steps", "eval_batch_size", "log_every", "tensorboard")


def config_from_dict(d: dict) -> TrainConfig:
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(unknown)}")
    return TrainConfig(**d)


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
    from qlam.data import get_task

    return get_task(cfg.task, tokenize=cfg.tokenize, patch=cfg.patch, grayscale=cfg.grayscale,
                    val_fraction=cfg.val_fraction, seed=cfg.seed, limit_train=cfg.limit_train,
                    length=cfg.length, test_lengths=cfg.test_lengths, vocab=cfg.vocab,
                    limit_test=cfg.limit_test, splits=splits)


MEMORY_PARAMS = ("theta", "log_dt", "prep_theta", "read_theta", "log_A_real", "A_imag")


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


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    """Decay for weight matrices; none for norms, biases and quantum-memory parameters,
    which also get ``lr_memory_scale`` x the learning rate."""
    decay, no_decay, memory = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.rsplit(".", 1)[-1] in MEMORY_PARAMS:
            memory.append(p)
        elif p.dim() < 2:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
        {"params": memory, "weight_decay": 0.0, "lr_scale": cfg.lr_memory_scale},
    ]
    return [g for g in groups if g["params"]]


def lr_factor(step: int, total: int, warmup_frac: float) -> float:
    """Linear warmup then cosine decay to zero."""
    warm = max(1, int(total * warmup_frac))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))


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
    return loss_sum / max(count, 1), correct / max(count, 1)


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])


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
    WORLD_SIZE > 1, False = one process (see :mod:`qlam.distributed`)."""
    ctx = ddp.init(distributed, resolve_device(cfg.device))
    try:
        with _stop_on_signals() as signalled:
            return _train(cfg, resume, command, ctx, signalled)
    finally:
        ddp.shutdown(ctx)


def _train(cfg: TrainConfig, resume: bool, command: str | None,
           ctx: ddp.DistContext, signalled: dict) -> dict:
    out = Path(cfg.out)
    ckpt_path = out / "checkpoint.pt"
    if cfg.log_every < 1:
        raise ValueError(f"log_every must be >= 1 (steps), got {cfg.log_every}")
    if ckpt_path.exists() and not resume:
        raise ValueError(f"{ckpt_path} exists: pass --resume to continue it, or choose another --out")
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = ctx.device if ctx.enabled else resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    task = build_task(cfg)
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
    ck = None  # rank 0 reads the checkpoint and broadcasts it
    if resume and ctx.is_main and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path, "cpu" if ctx.enabled else device)
    ck = ctx.broadcast(ck)
    if ck is not None:
        saved_cfg = config_from_dict(ck["config"])
        changed = [k for k, v in dataclasses.asdict(cfg).items()
                   if k not in RUN_CONTROL and v != getattr(saved_cfg, k)]
        if changed:
            raise ValueError(f"{ckpt_path} was written with a different configuration "
                             f"({', '.join(changed)}); resume with the same settings")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        state = ck["state"]
        state.setdefault("window", [0.0, 0, 0, 0, state["wall_s"]])  # older checkpoints
        _set_rng_state(ck["rng"])
        if ctx.is_main:
            print(f"resuming {out} at epoch {state['epoch'] + 1}, step {state['step_in_epoch']}",
                  file=sys.stderr)
    elif not resume and ctx.is_main:
        for f in ("metrics.jsonl", "summary.json", "model.pt"):
            (out / f).unlink(missing_ok=True)
    if ctx.is_main:
        atomic_write_text(out / "config.json", json.dumps(dataclasses.asdict(cfg), indent=2))
    net = ctx.wrap(model)  # DistributedDataParallel when distributed; saves use `model`
    scalars = ScalarLog(out, tensorboard=cfg.tensorboard, enabled=ctx.is_main,
                        resume_step=None if ck is None else state["global_step"])

    def save_checkpoint():
        if not ctx.is_main:
            return
        atomic_save({"config": dataclasses.asdict(cfg), "model": model.state_dict(),
                     "optimizer": opt.state_dict(), "state": state, "rng": _rng_state()},
                    ckpt_path)

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
    stopped = None
    model.train()
    while state["epoch"] < cfg.epochs and stopped is None:
        epoch = state["epoch"]
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        batches = task.batches("train", cfg.batch_size, shuffle=True, generator=gen)
        bar = (Progress if ctx.is_main else ddp.Quiet)(
            steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}")
        t_epoch, tokens = time.time(), 0
        for i, (x, y) in enumerate(batches):
            if i < state["step_in_epoch"]:
                continue  # already done before the resume (same order: same generator)
            x, y, n_global, w = ctx.shard(x, y)  # this rank's slice of the global batch
            x, y = x.to(device), y.to(device)
            factor = lr_factor(state["global_step"], total_steps, cfg.warmup_frac)
            for g in opt.param_groups:
                g["lr"] = cfg.lr * g["lr_scale"] * factor
            loss, right, count = batch_stats(net(x), y, task.target)
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
            # all ranks stop together
            *batch, over_time, interrupted = ctx.all_sum([*batch, over_time, signalled["hit"]])
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
            if stopped or time.time() - last_ckpt > cfg.checkpoint_minutes * 60:
                save_checkpoint()
                last_ckpt = time.time()
            if stopped:
                break
        bar.close()
        if stopped in ("preempted", "interrupted"):
            if ctx.is_main and stopped == "interrupted":
                print(f"interrupted: checkpoint written to {ckpt_path}; the same command with "
                      "--resume continues the run", file=sys.stderr)
            scalars.close()
            return {"stopped": stopped, "global_step": state["global_step"]}
        val_loss, val_acc = evaluate(model, task, "val", cfg.eval_batch_size, device, ctx=ctx)
        st = state["stats"]
        record = {"epoch": epoch + 1, "train_loss": st[0] / max(st[2], 1),
                  "train_acc": st[1] / max(st[2], 1), "val_loss": val_loss, "val_acc": val_acc,
                  "lr": cfg.lr * factor, "epoch_s": time.time() - t_epoch,
                  "tokens_per_s": tokens / max(time.time() - t_epoch, 1e-9),
                  "wall_s": state["wall_s"], "partial": stopped is not None,
                  "step": state["global_step"], "epoch_frac": state["global_step"] / steps_per_epoch}
        scalars.epoch(record)
        if ctx.is_main:
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                              for k, v in record.items()}), file=sys.stderr)
        # the best epoch: highest accuracy; lowest MSE for regression (best_val keeps its acc)
        score = -val_loss if task.target == "regression" else val_acc
        if state["best_epoch"] < 0 or score > state.get("best_score", state["best_val"]):
            state["best_val"], state["best_epoch"], state["best_score"] = val_acc, epoch + 1, score
            save_best()
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
        if ctx.is_main:
            print(f"test length {length}: accuracy {acc:.4f}, loss {loss:.4f}", file=sys.stderr)
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
               "n_train": len(task.train), "n_test": cfg.limit_test or len(task.test)}
    if not ctx.is_main:
        return summary
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    print(f"test accuracy {test_acc:.4f} (best val {state['best_val']:.4f} at epoch "
          f"{state['best_epoch']}), {n_params} parameters, {state['wall_s'] / 60:.1f} min",
          file=sys.stderr)
    return summary


def load_model(path: str | Path, device="cpu"):
    """(model, checkpoint dict) from a ``model.pt`` written by :func:`train`."""
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


def eval_checkpoint(path, task: str | None = None, shots: int | None = None, seed: int = 0,
                    device: str = "auto", batch_size: int = 256, limit: int | None = None,
                    noise=None, length: int | None = None) -> dict:
    """Test accuracy of a saved model: exact, with ``shots`` measurement samples, and/or
    under ``noise`` ("depolarizing:0.01", see :mod:`qlam.sim.noise`: the channel on every
    qubit after every token, one trajectory per example); ``seed`` seeds both. ``length``:
    a generated task's test set at that length (e.g. longer than the model trained on)."""
    from qlam.sim.noise import parse_noise

    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int) or shots < 1):
        raise ValueError(f"shots must be an int >= 1, got {shots!r}")
    channel = parse_noise(noise)
    dev = resolve_device(device)
    model, ck = load_model(path, dev)
    cfg = config_from_dict(ck["config"])
    if task is not None:
        cfg.task = task
    memories = [m for m in model.modules() if hasattr(m, "shots") and hasattr(m, "generator")]
    if shots is not None or channel is not None:
        if not memories:
            raise ValueError("--shots and --noise apply to quantum-memory models only "
                             f"(this checkpoint holds {ck['model_name']!r})")
        gen = torch.Generator(device=dev).manual_seed(seed)
        for m in memories:
            m.generator = gen
            if shots is not None:
                m.shots = shots
            if channel is not None:
                if not hasattr(m, "noise"):
                    raise ValueError(f"--noise is not supported by {type(m).__name__}")
                m.noise = channel
    from qlam.data import GENERATED_TASKS

    if cfg.task in GENERATED_TASKS:  # generate the test set only, `limit` examples
        cfg.test_lengths, cfg.limit_test = None, limit
        t = build_task(cfg, splits=() if length is not None else ("test",))
    elif length is not None:
        raise ValueError(f"--length applies to the generated tasks, not to {cfg.task!r}")
    else:
        t = build_task(cfg)
    if (t.n_features, t.n_classes, t.target) != (ck["n_features"], ck["n_classes"],
                                                 ck.get("target", "class")):
        raise ValueError(f"task {cfg.task!r} does not fit this checkpoint (trained on "
                         f"{ck['task']!r}: {ck['n_features']} features, {ck['n_classes']} outputs)")
    split = t.test if length is None else t.test_at(length)
    loss, acc = evaluate(model, t, split, batch_size, dev, limit)
    return {"checkpoint": str(path), "task": cfg.task, "model": ck["model_name"],
            "test_acc": acc, "test_loss": loss, "shots": shots,
            "noise": None if channel is None else str(channel), "seed": seed,
            "length": split.x.shape[1], "target": t.target, "chance": t.chance,
            "n_test": min(limit, len(split)) if limit else len(split)}


__all__ = ["TrainConfig", "train", "evaluate", "load_model", "eval_checkpoint"]
