"""Plots (matplotlib, the `plot` extra): learning curves from metrics.jsonl."""

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


def save_figure(fig, png: str | Path) -> Path:
    """Lay out, write ``png`` (creating its folder) and close the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png
