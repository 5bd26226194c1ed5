"""The evaluation figures, drawn from results rows with matplotlib's Agg canvas.

Figures are built as ``matplotlib.figure.Figure`` objects on an Agg canvas rather than through
pyplot, so no global backend is switched and nothing opens a window or leaks figures. Legends
sit below the axes, outside the data, because the points that matter most (risk 1, accuracy 0)
are in the corners a legend inside would cover.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from idealagent.errors import InputError, ModelLoadError
from idealagent.evaluation.trust import (
    accuracy_at_coverage,
    area_under_risk_coverage,
    calibration_bins,
    expected_calibration_error,
    risk_coverage,
)
from idealagent.evaluation.rows import agent_scores, baseline_scores, rounds_used

COVERAGE_GRID = tuple(i / 20 for i in range(1, 21))  # 5%, 10%, ... 100%
PLOT_FILES = ("reliability.png", "accuracy_vs_rounds.png", "accuracy_vs_coverage.png", "risk_coverage.png")


def write_plots(rows: Sequence[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Write the PLOT_FILES into ``out_dir``; their paths."""
    figures = draw_figures(rows)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create {out_dir}: {err.strerror}; pass another --out-dir") from None
    paths = []
    for filename, figure in figures.items():
        path = out_dir / filename
        figure.savefig(path, dpi=120)
        paths.append(path)
    return paths


def draw_figures(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The figures of ``write_plots`` by file name (PLOT_FILES), as unsaved matplotlib Figures."""
    if not rows:
        raise InputError("the results hold no finished samples yet; nothing to plot")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ModelLoadError("the plots need matplotlib: pip install 'idealagent[eval]'") from None
    scores, confidences = agent_scores(rows)
    # A run without a baseline writes "baseline": null on every row.
    has_baseline = any(isinstance(r.get("baseline"), dict) for r in rows)
    baseline = sum(baseline_scores(rows)[0]) / len(rows) if has_baseline else None
    name = rows[0].get("benchmark") or "results"
    return dict(zip(PLOT_FILES, [
        _reliability(confidences, scores, name),
        _by_rounds(rows, scores, baseline, name),
        _coverage(confidences, scores, baseline, name),
        _risk_coverage(confidences, scores, baseline, name),
    ], strict=True))  # fmt: skip


def _figure() -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _legend(figure: Any, ax: Any) -> None:
    """The axes' legend below the figure, outside the data area (constrained layout makes room)."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        figure.legend(handles, labels, loc="outside lower center", ncols=min(len(handles), 3), fontsize=8)


def _count_bars(
    ax: Any, xs: Sequence[Any], heights: Sequence[float], counts: Sequence[int], **bar: Any
) -> None:
    """Bars labelled ``n=...``; a bar of height 0 gets a marker on the axis, else it is invisible."""
    bars = ax.bar(xs, heights, edgecolor="black", **bar)
    centres = [patch.get_x() + patch.get_width() / 2 for patch in bars]  # categorical xs become numbers
    zeros = [i for i, h in enumerate(heights) if h == 0]
    if zeros:
        ax.plot([centres[i] for i in zeros], [0] * len(zeros), linestyle="none", marker="o", markersize=7,
                markerfacecolor="white", markeredgecolor=bar.get("color", "black"), markeredgewidth=2,
                clip_on=False, zorder=3, label="accuracy 0")  # fmt: skip
    for centre, height, n in zip(centres, heights, counts):
        ax.annotate(f"n={n}", (centre, height), xytext=(0, 7 if height == 0 else 2),  # above the marker
                    textcoords="offset points", ha="center", va="bottom", fontsize=7)  # fmt: skip


def _reliability(confidences: list[Any], scores: list[float], name: str) -> Any:
    """Accuracy per confidence bin against the diagonal, each bar labelled with its count."""
    table = calibration_bins(confidences, scores)
    width = 1 / len(table)
    filled = [b for b in table if b["n"]]  # an empty bin has no accuracy to draw
    figure = _figure()
    ax = figure.add_subplot()
    _count_bars(ax, [b["low"] + width / 2 for b in filled], [b["accuracy"] for b in filled],
                [b["n"] for b in filled], width=width * 0.9, color="tab:blue",
                label="accuracy of the bin")  # fmt: skip
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect calibration")
    ece = expected_calibration_error(confidences, scores)
    ax.set(xlim=(0, 1), ylim=(0, 1.1), yticks=[i / 5 for i in range(6)], xlabel="confidence",
           ylabel="accuracy", title=f"{name}: reliability (ECE {ece:.3f})")  # fmt: skip
    _legend(figure, ax)
    return figure


def _by_rounds(rows: Sequence[dict[str, Any]], scores: list[float], baseline: float | None, name: str) -> Any:
    """Accuracy of the samples grouped by how many rounds they used (0: failed before a round)."""
    groups: dict[int, list[float]] = defaultdict(list)
    for row, value in zip(rows, scores):
        groups[rounds_used(row)].append(value)
    keys = sorted(groups)
    figure = _figure()
    ax = figure.add_subplot()
    _count_bars(ax, [str(k) for k in keys], [sum(groups[k]) / len(groups[k]) for k in keys],
                [len(groups[k]) for k in keys], color="tab:green")  # fmt: skip
    if baseline is not None:
        ax.axhline(baseline, linestyle="--", color="tab:red", label=f"baseline {baseline:.1%}")
    ax.set(ylim=(0, 1.1), yticks=[i / 5 for i in range(6)], xlabel="rounds used", ylabel="accuracy",
           title=f"{name}: accuracy by rounds")  # fmt: skip
    _legend(figure, ax)
    return figure


def _coverage(confidences: list[Any], scores: list[float], baseline: float | None, name: str) -> Any:
    """Selective accuracy: answering only the most confident share of the samples."""
    curve = accuracy_at_coverage(confidences, scores, COVERAGE_GRID)
    figure = _figure()
    ax = figure.add_subplot()
    # Not clipped: the points at accuracy 0 and 1 lie on the axes' edges.
    ax.plot([c for c, _ in curve], [a for _, a in curve], marker="o", color="tab:blue", label="agent",
            clip_on=False)  # fmt: skip
    if baseline is not None:
        ax.axhline(baseline, linestyle="--", color="tab:red", label=f"baseline (all answered) {baseline:.1%}")
    ax.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="coverage (share answered, most confident first)",
           ylabel="accuracy", title=f"{name}: accuracy vs coverage")  # fmt: skip
    _legend(figure, ax)
    return figure


def _risk_coverage(confidences: list[Any], scores: list[float], baseline: float | None, name: str) -> Any:
    """Risk (1 - accuracy) of the answered samples against their share, most confident first,
    one point per distinct confidence; the title gives the area under it (AURC)."""
    curve = risk_coverage(confidences, scores)
    aurc = area_under_risk_coverage(confidences, scores)
    figure = _figure()
    ax = figure.add_subplot()
    marker = "o" if len(curve) <= 50 else None  # thousands of markers would hide the line
    ax.plot([c for _, c, _ in curve], [r for _, _, r in curve], marker=marker, color="tab:purple",
            label="agent", clip_on=False)  # fmt: skip
    if baseline is not None:
        ax.axhline(1 - baseline, linestyle="--", color="tab:red",
                   label=f"baseline risk (all answered) {1 - baseline:.1%}")  # fmt: skip
    ax.set(xlim=(0, 1.02), ylim=(0, 1.05), xlabel="coverage (share answered, most confident first)",
           ylabel="risk (1 - accuracy of the answered)",
           title=f"{name}: risk vs coverage (AURC {aurc:.3f})")  # fmt: skip
    _legend(figure, ax)
    return figure
