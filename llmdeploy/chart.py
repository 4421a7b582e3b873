"""Monthly cost against traffic for every feasible option, shaded by which one is cheapest (matplotlib, imported here only)."""

from __future__ import annotations

import io
from pathlib import Path

from llmdeploy.catalog import Catalog
from llmdeploy.errors import MissingDependencyError, UsageError
from llmdeploy.fileio import write_atomic
from llmdeploy.plan import Interval, Plan, monthly_costs_over_traffic

POINTS = 60


def traffic_points(center: float, n: int = POINTS) -> list[float]:
    """Requests/day from 1/100 to 100 × the plan's traffic, evenly spaced on a log axis."""
    lo, hi = center / 100, center * 100
    return [lo * (hi / lo) ** (i / (n - 1)) for i in range(n)]


def cheapest_in_view(plan: Plan, low: float, high: float) -> list[Interval]:
    """The plan's cheapest-option intervals clipped to [low, high]: what the chart shades."""
    return [Interval(max(i.low, low), min(i.high, high), i.option) for i in plan.cheapest if i.high > low and i.low < high]


def check_path(path: str | Path) -> Path:
    """The chart's output path, checked before any work (``plan`` calls it before it writes anything)."""
    from llmdeploy.fileio import check_output_path

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise UsageError(f"--chart {str(path)!r} must end in .png.", hint="Example: --chart costs.png")
    return check_output_path(path, "--chart")


def draw(plan: Plan, cat: Catalog, path: str | Path) -> Path:
    path = check_path(path)
    return write_atomic(path, render(plan, cat))


def render(plan: Plan, cat: Catalog) -> bytes:
    """The chart as PNG bytes; writes nothing."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: never open a window, work without a display
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependencyError("--chart needs matplotlib, which is not installed.", hint="pip install 'llmdeploy[chart]'") from None

    xs = traffic_points(plan.traffic.requests_per_day)
    series = monthly_costs_over_traffic(plan, cat, xs)
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    colour = {}
    for label, ys in series.items():
        if all(y is None for y in ys):
            continue  # infeasible at every traffic level shown
        style = "-" if label == plan.choice.label else "--"
        (line,) = ax.plot(xs, [float("nan") if y is None else y for y in ys], style, label=label,
                          linewidth=2.4 if style == "-" else 1.4)
        colour[label] = line.get_color()
    # Shade each stretch of traffic by the option that is cheapest there (the same intervals plan prints), and mark
    # every point where that changes.
    view = cheapest_in_view(plan, xs[0], xs[-1])
    for n, i in enumerate(view):
        ax.axvspan(i.low, i.high, color=colour.get(i.option, "lightgrey"), alpha=0.08, linewidth=0)
        if n:
            ax.axvline(i.low, color="grey", linewidth=0.8, linestyle=":")
            ax.annotate(f"cheapest: {i.option or 'none'}\nfrom {i.low:,.0f}/day", (i.low, ax.get_ylim()[1] * 0.9), fontsize=7,
                        rotation=90, ha="right", va="top", color="dimgrey")
    choice = plan.choice
    ax.scatter([plan.traffic.requests_per_day], [choice.monthly()], s=90, zorder=5, color="black",
               label=f"choice: {choice.label} ${choice.monthly():,.0f}/mo")
    ax.set_xscale("log")
    ax.set_xlabel("requests per day")
    ax.set_ylabel("USD per month")
    ax.set_title(f"{plan.model.name} ({plan.dtype}) in {plan.region}: monthly cost by hosting option")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize=8, loc="upper left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
