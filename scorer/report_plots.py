"""The report's summary figures (matplotlib, Agg), each returned as a base64 PNG: training loss, the threshold
trade-off per model version and the spread of per-device quality (each device's own plot: ``report_svg``).
Axes follow the data (alarm rates in percent, scaled to the largest), never a fixed 0-1 for small rates."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

#: Multiples of each reading's applied threshold the trade-off curve is computed at.
THRESHOLD_FACTORS = 2.0 ** (np.arange(-24, 37) / 12)  # 0.25 to 8, twelve a doubling, 1.0 exactly
FACTOR_TICKS = (0.25, 0.5, 1, 2, 4, 8)


def png(fig: Figure, close: bool = True) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=72)
    if close:
        plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def loss_plot(histories: list[tuple[str, list[float], list[float]]]) -> str | None:
    """(version name, train loss, validation loss) per version; None when no version has a history."""
    if not any(loss for _, loss, _ in histories):
        return None
    fig, ax = plt.subplots(figsize=(9, 3.2), layout="constrained")
    for name, loss, val in histories:
        if loss:
            ax.plot(range(1, len(loss) + 1), loss, label=f"{name} train")
        if val:
            ax.plot(range(1, len(val) + 1), val, "--", label=f"{name} validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return png(fig)


def tradeoff(ratios: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Confusion counts at each of ``THRESHOLD_FACTORS``: a reading alarms when score > factor x its applied
    threshold (``ratios`` = score / applied threshold). Factor 1 is the scorer's own rule before smoothing."""
    order = np.sort(ratios[labels])
    normal = np.sort(ratios[~labels])
    tp = order.size - np.searchsorted(order, THRESHOLD_FACTORS, side="right")
    fp = normal.size - np.searchsorted(normal, THRESHOLD_FACTORS, side="right")
    return {"tp": tp, "fp": fp, "fn": order.size - tp, "tn": normal.size - fp}


def tradeoff_plot(curves: list[tuple[str, dict[str, np.ndarray], tuple[float, float, float], float | None]]) -> str:
    """One panel per version: precision and recall (left axis, 0-1) and the false-alarm rate (right axis, percent,
    scaled to the data) against the threshold factor; the markers at factor 1 are the version's counted
    figures. ``curves``: (name, counts from ``tradeoff``, (precision, recall, false-alarm rate), threshold)."""
    n = len(curves)
    fig, axes = plt.subplots(n, 1, figsize=(9, 2.6 * n), squeeze=False, layout="constrained")
    for ax, (name, c, (precision, recall, far), threshold) in zip(axes[:, 0], curves):
        tp, fp, fn, tn = (c[k].astype(float) for k in ("tp", "fp", "fn", "tn"))
        with np.errstate(invalid="ignore", divide="ignore"):
            prec = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
            rec = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
            fa = np.where(fp + tn > 0, fp / (fp + tn), np.nan) * 100
        ax.plot(THRESHOLD_FACTORS, prec, color="tab:blue", label="precision")
        ax.plot(THRESHOLD_FACTORS, rec, color="tab:green", label="recall")
        ax.plot([1.0], [precision], "o", color="tab:blue")
        ax.plot([1.0], [recall], "o", color="tab:green")
        ax.axvline(1.0, color="black", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks(FACTOR_TICKS, [f"{f:g}" for f in FACTOR_TICKS])
        ax.minorticks_off()
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("precision / recall")
        right = ax.twinx()
        right.plot(THRESHOLD_FACTORS, fa, color="tab:red", label="false-alarm rate")
        right.plot([1.0], [far * 100], "o", color="tab:red")
        top = float(np.nanmax(np.append(fa, far * 100))) if fa.size else 0.0
        right.set_ylim(0, max(top * 1.1, 0.1))
        right.set_ylabel("false alarms (% of normal)")
        title = f"{name}: threshold as a multiple of the applied one"
        if threshold is not None:
            title += f" (x1 = {threshold:.4g})"
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_xlabel("threshold factor (dashed: the scorer's own; dots: the counted figures)")
        handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.08, 1.0))
    return png(fig)


def spread_plot(f1: list[float], far: list[float], with_anomalies: list[bool]) -> str:
    """Per-device F1 (devices with anomalies) and false-alarm rate (every device), each sorted, so 50 or 500
    devices read the same; the false-alarm axis is in percent and scaled to the largest rate."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 2.8), layout="constrained")
    f1s = sorted(v for v, a in zip(f1, with_anomalies) if a)
    left.plot(range(1, len(f1s) + 1), f1s, ".-", ms=3, lw=0.8)
    left.set_ylim(0, 1.05)
    left.set_xlabel("devices with anomalies, worst first")
    left.set_ylabel("F1")
    rates = sorted((v * 100 for v in far), reverse=True)
    right.plot(range(1, len(rates) + 1), rates, ".-", ms=3, lw=0.8, color="tab:red")
    right.set_ylim(0, max((rates[0] if rates else 0) * 1.1, 0.1))
    right.set_xlabel("devices, most false alarms first")
    right.set_ylabel("false alarms (% of normal)")
    return png(fig)
