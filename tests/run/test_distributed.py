"""DistributedDataParallel training equals single-process training on the same global batch."""

from __future__ import annotations

import json
import os

import pytest
import torch

import qlam.train as T
from qlam import config
from qlam.data.tasks import Split, Task
from qlam.distributed import DistContext, free_port, init, shutdown
from qlam.store import atomic_save, load_checkpoint

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")


def fake_task(n_train: int = 21, length: int = 12, n_features: int = 2, n_classes: int = 3) -> Task:
    """A tiny learnable task: the class is which third of the sequence holds a spike."""
    g = torch.Generator().manual_seed(0)

    def split(n):
        y = torch.randint(0, n_classes, (n,), generator=g)
        x = 0.1 * torch.randn(n, length, n_features, generator=g)
        pos = y * (length // n_classes) + torch.randint(0, length // n_classes, (n,), generator=g)
        x[torch.arange(n), pos, 0] += 2.0
        return Split(x, y)

    return Task(name="fake", dataset="fake", seq_len=length, n_features=n_features,
                n_classes=n_classes, train=split(n_train), val=split(7), test=split(9))


def _config(out, **kw) -> T.TrainConfig:
    base = dict(task="fake", model="gru", epochs=2, batch_size=8, eval_batch_size=4, lr=1e-2,
                warmup_frac=0.0, d_model=8, n_layers=1, threads=1, device="cpu", out=str(out),
                checkpoint_minutes=1e9)
    base.update(kw)
    return T.TrainConfig(**base)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    """Preempt a run after 2 steps, then resume it to the end, in one process group."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    config.build_task = lambda cfg: fake_task()
    dist = torch.distributed
    ctx = init(True, torch.device("cpu"))  # both train() calls join this group
    T.train(_config(out, stop_after_steps=2), distributed=True)
    dist.barrier()
    if rank == 0:  # keep the 2-step weights, then continue as if killed after a checkpoint
        ck = load_checkpoint(f"{out}/checkpoint.pt")
        torch.save(ck["model"], f"{out}/step2.pt")
        ck["config"]["stop_after_steps"] = None
        atomic_save(ck, f"{out}/checkpoint.pt")  # a new checksum for the edited content
    dist.barrier()
    T.train(_config(out), resume=True, distributed=True)
    shutdown(ctx)


def _elementwise_dropout(self, x):
    """nn.Dropout drawing one CPU number per element, as CUDA's generator advances: ranks
    whose shards differ in size leave their generators in different states."""
    if not self.training or self.p == 0:
        return x
    return x * (torch.rand_like(x) >= self.p) / (1 - self.p)


def _dropout_worker(rank: int, world: int, port: int, out: str) -> None:
    """With dropout: a run straight through (out/straight), and one preempted after the
    ragged third step (2 + 3 examples) and resumed (out/resumed), in one process group."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    torch.nn.Dropout.forward = _elementwise_dropout
    config.build_task = lambda cfg: fake_task()
    ctx = init(True, torch.device("cpu"))
    opts = dict(dropout=0.3, epochs=3)
    T.train(_config(f"{out}/straight", **opts), distributed=True)
    T.train(_config(f"{out}/resumed", stop_after_steps=3, **opts), distributed=True)
    torch.distributed.barrier()
    if rank == 0:
        ck = load_checkpoint(f"{out}/resumed/checkpoint.pt")
        ck["config"]["stop_after_steps"] = None
        atomic_save(ck, f"{out}/resumed/checkpoint.pt")
    torch.distributed.barrier()
    T.train(_config(f"{out}/resumed", **opts), resume=True, distributed=True)
    shutdown(ctx)


def _threads() -> list[str]:
    task = f"/proc/{os.getpid()}/task"
    return [open(f"{task}/{t}/comm").read().strip() for t in os.listdir(task)]


def _release_worker(rank: int, port: int, out: str) -> None:
    """Join a 1-process gloo group, train a DistributedDataParallel step, leave; write the
    names of this process's threads while in the group and after leaving it."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1")
    ctx = init(True, torch.device("cpu"))
    net = ctx.wrap(torch.nn.Linear(3, 2))
    net(torch.randn(4, 3)).sum().backward()
    during = _threads()
    del net
    shutdown(ctx)
    with open(out, "w") as f:
        json.dump({"during": during, "after": _threads()}, f)


def _weights(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def _assert_close(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=lambda m, k=k: f"{k}: {m}")


def test_shard_covers_the_global_batch():
    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    parts = [DistContext(rank=r, world_size=3, backend="gloo").shard(x, y) for r in range(3)]
    assert torch.cat([p[1] for p in parts]).tolist() == list(range(10))
    assert all(p[2] == 10 and p[3] == 1 for p in parts)
    tiny = [DistContext(rank=r, world_size=3, backend="gloo").shard(x[:2], y[:2]) for r in range(3)]
    assert [t[3] for t in tiny] == [0, 1, 1]  # an empty slice becomes one example of weight 0
    assert DistContext().shard(x, y)[3] == 1 and not DistContext().enabled


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_processes_match_one_and_resume(use_task, tmp_path, monkeypatch):
    """Two gloo processes on loopback: the weights after 2 steps equal a single process on
    the same global batches; preempted there and resumed, the finished run matches too."""
    use_task(lambda cfg: fake_task())
    torch.set_num_threads(1)
    # 21 examples, global batch 8: batches of 8, 8, 5 (the 5 split 2 + 3 over the ranks)
    T.train(_config(tmp_path / "single2", stop_after_steps=2), distributed=False)
    single = T.train(_config(tmp_path / "single"), distributed=False)

    ddp = tmp_path / "ddp"
    torch.multiprocessing.start_processes(_worker, args=(2, free_port(), str(ddp)), nprocs=2,
                                          join=True, start_method="spawn")
    _assert_close(torch.load(ddp / "step2.pt"), _weights(tmp_path / "single2" / "checkpoint.pt"))
    _assert_close(_weights(ddp / "checkpoint.pt"), _weights(tmp_path / "single" / "checkpoint.pt"))
    _assert_close(_weights(ddp / "model.pt"), _weights(tmp_path / "single" / "model.pt"))
    summary = json.loads((ddp / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["params"] == single["params"]
    assert summary["test_acc"] == pytest.approx(single["test_acc"])
    metrics, ref = _lines(ddp / "metrics.jsonl"), _lines(tmp_path / "single" / "metrics.jsonl")
    assert len(metrics) == len(ref) == 2  # rank 0 alone writes
    for m, r in zip(metrics, ref):
        assert m["train_loss"] == pytest.approx(r["train_loss"], abs=1e-5)
        assert m["train_acc"] == pytest.approx(r["train_acc"])
        assert m["val_acc"] == pytest.approx(r["val_acc"])


def test_resume_restores_every_ranks_generator(tmp_path):
    """Each rank's random stream continues where it stopped: a preempted and resumed run
    with dropout ends with the weights of the run that went straight through (restoring
    rank 0's generator on every rank had changed rank 1's dropout masks after the resume)."""
    torch.multiprocessing.start_processes(_dropout_worker, args=(2, free_port(), str(tmp_path)),
                                          nprocs=2, join=True, start_method="spawn")
    ck = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert len(ck["rng"]["ranks"]) == 2
    assert not torch.equal(ck["rng"]["ranks"][0]["torch"], ck["rng"]["ranks"][1]["torch"])
    _assert_close(_weights(tmp_path / "resumed" / "checkpoint.pt"),
                  _weights(tmp_path / "straight" / "checkpoint.pt"), atol=0)


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc thread names")
def test_leaving_the_group_stops_its_threads(tmp_path):
    """After shutdown no gloo or store thread is left running into the interpreter's exit
    (a group pinned by a stray reference keeps them, and exiting with them alive can abort)."""
    out = tmp_path / "threads.json"
    torch.multiprocessing.start_processes(_release_worker, args=(free_port(), str(out)), nprocs=1,
                                          join=True, start_method="spawn")
    seen = json.loads(out.read_text())
    comm = ("gloo", "pt_gloo", "pt_tcpstore")
    assert any(t.startswith(comm) for t in seen["during"]), seen  # the probe sees them
    assert not [t for t in seen["after"] if t.startswith(comm)], seen
