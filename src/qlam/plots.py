"""Plots (matplotlib, the `plot` extra): learning curves from metrics.jsonl, accuracy
against test length (length generalisation)."""

from __future__ import annotations

from pathlib import Path

from qlam.store import read_jsonl


def pyplot():
    try:
        import matplotlib
    except ModuleNotFoundError as exc:
        raise RuntimeError("plots need matplotlib: pip install 'qlam[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curve(run_dirs: list[str | Path], png: str | Path, title: str = "") -> Path:
    """Train/val accuracy and loss per epoch of one or more run directories."""
    plt = pyplot()
    fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4))
    for d in run_dirs:
        recs = read_jsonl(Path(d) / "metrics.jsonl")
        ep = [r["epoch"] for r in recs]
        label = Path(d).name
        ax_acc.plot(ep, [100 * r["train_acc"] for r in recs], "--", label=f"{label} train")
        ax_acc.plot(ep, [100 * r["val_acc"] for r in recs], "-o", label=f"{label} val")
        ax_loss.plot(ep, [r["train_loss"] for r in recs], "--", label=f"{label} train")
        ax_loss.plot(ep, [r["val_loss"] for r in recs], "-o", label=f"{label} val")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title=title or "accuracy")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    for ax in (ax_acc, ax_loss):
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
    """Lay out, write ``png`` (creating its folder) and close the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png
