"""Plots (matplotlib, the `plot` extra): learning curves from metrics.jsonl, accuracy
against test length (length generalisation)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from qlam.atomic import atomic_write
from qlam.store import read_jsonl


class PlotsUnavailable(RuntimeError):
    """matplotlib (the ``plot`` extra) is not installed."""


def available() -> bool:
    return importlib.util.find_spec("matplotlib") is not None


def pyplot():
    try:
        import matplotlib
    except ModuleNotFoundError as exc:
        raise PlotsUnavailable("plots need matplotlib: pip install 'qlam[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def curves(recs: list[dict]) -> dict[str, list[float]]:
    """The training curve (step records; the epoch records for runs logged without them) and
    the validation points of metrics.jsonl records, against fractional epochs."""
    epochs = [r for r in recs if "val_acc" in r]
    steps = [r for r in recs if "val_acc" not in r] or epochs
    return {"train_x": [r.get("epoch_frac", r.get("epoch")) for r in steps],
            "train_acc": [r["train_acc"] for r in steps],
            "train_loss": [r["train_loss"] for r in steps],
            "val_x": [r.get("epoch_frac", r["epoch"]) for r in epochs],
            "val_acc": [r["val_acc"] for r in epochs], "val_loss": [r["val_loss"] for r in epochs]}


def learning_curve(run_dirs: list[str | Path], png: str | Path, title: str = "",
                   loss: str = "cross-entropy") -> Path:
    """Accuracy and loss (``loss`` names it: "mean squared error" for regression) of one or
    more run directories against (fractional) epochs: the training curve from the step
    records of metrics.jsonl (the epoch records' training figures for runs logged before step
    records existed), validation at every epoch's end."""
    plt = pyplot()
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for d in run_dirs:
        c = curves(read_jsonl(Path(d) / "metrics.jsonl"))
        label = Path(d).name
        for ax, key in ((ax_acc, "acc"), (ax_loss, "loss")):
            scale = 100 if key == "acc" else 1
            ax.plot(c["train_x"], [scale * v for v in c[f"train_{key}"]], "--", label=f"{label} train")
            ax.plot(c["val_x"], [scale * v for v in c[f"val_{key}"]], "-o", label=f"{label} val")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title=title or "accuracy")
    ax_loss.set(xlabel="epoch", ylabel=loss, title="loss")
    for ax in (ax_acc, ax_loss):
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, png)


def accuracy_by_length(curves: dict[str, dict[int, list[float]]], png: str | Path,
                       title: str = "", chance: float | None = None) -> Path:
    """Test accuracy (%) against sequence length (log scale), a line per model with the
    mean and std over runs: ``curves`` maps a model's label to {length: [accuracies]};
    ``chance`` (a fraction) is drawn as a dashed line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in curves.items():
        lengths = sorted(points)
        means = [sum(points[n]) / len(points[n]) for n in lengths]
        stds = [0.0 if len(points[n]) < 2 else
                (sum((a - m) ** 2 for a in points[n]) / (len(points[n]) - 1)) ** 0.5
                for n, m in zip(lengths, means)]
        runs = max(len(points[n]) for n in lengths)
        ax.errorbar(lengths, means, yerr=stds, marker="o", capsize=3,
                    label=f"{label} ({runs} run{'s' if runs > 1 else ''})")
    if chance is not None:
        ax.axhline(100 * chance, color="grey", linestyle="--", label="chance")
    ax.set_xscale("log", base=2)
    ticks = sorted({n for points in curves.values() for n in points})
    ax.set_xticks(ticks, [f"{n:,}" for n in ticks])
    ax.minorticks_off()
    ax.set_ylim(0, 101)
    ax.set(xlabel="test sequence length (tokens)",
           ylabel="test accuracy (%)", title=f"{title}: length generalisation" if title else
           "length generalisation")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, png)


def save_figure(fig, png: str | Path) -> Path:
    """Lay out, write ``png`` atomically (creating its folder) and close the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        return atomic_write(png, lambda f: fig.savefig(f, dpi=120, format="png"))
    finally:
        plt.close(fig)


def drawn(draw, *args, note=print, **kwargs) -> Path | None:
    """``draw(*args, **kwargs)``'s PNG; without matplotlib None and a line to ``note``
    instead (a command's plot is the one part of its results that needs the extra)."""
    try:
        return draw(*args, **kwargs)
    except PlotsUnavailable as exc:
        note(f"no plot: {exc}")
        return None
