"""Capacity: a strategy's net Sharpe against the capital it trades.

Sharpe ratios do not depend on capital when costs are a fixed share of each fill; they do
under square-root market impact (:class:`metabt.costs.DeskCommission`), whose cost per
unit traded grows with the square root of a fill's size against the asset's volume. The
capacity curve re-runs the same strategy, learner and costs at each capital, so a desk
sees where impact eats the edge.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from metabt._util import atomic_path, quiet_third_party, staged_files, write_text
from metabt.costs import Costs
from metabt.errors import ConfigError
from metabt.evaluate.sanitize import chart_label, clean, csv_text
from metabt.experiments.backtest import BacktestResult
from metabt.experiments.log import Log, silent
from metabt.experiments.parts import checked_strategy
from metabt.experiments.settings import RunSettings
from metabt.learn.learner import MetaLearner

__all__ = ["CAPITALS", "CapacityCurve", "capacity_curve"]

#: The capitals of a default curve (currency units).
CAPITALS: tuple[float, ...] = (1e5, 1e6, 1e7, 1e8)


@dataclass
class CapacityCurve:
    """Net Sharpe of one strategy at each capital, with what its costs were.

    Attributes:
        name: the strategy's label.
        costs: the costs every run paid.
        table: one row per capital (index ``capital``, currency units, ascending):
            ``net_sharpe`` and ``gross_sharpe`` (annualised, after and before every cost),
            ``cagr``, ``turnover_two_way`` (multiple of equity a year), ``cost_bps``
            (everything the fills paid, commission, half-spread, slippage and impact,
            bps of traded value), ``impact_bps`` (its impact part) and ``cost_share``
            (all costs, borrow too, over the P&L before costs' size).
        results: the backtest at each capital, in the table's order.
    """

    name: str
    costs: Costs
    table: pd.DataFrame
    results: list[BacktestResult]

    def lines(self) -> list[str]:
        """What the curve is, in one line, and a note when impact is off."""
        out = [
            f"capacity of {clean(self.name)}: the same learner, data and costs at each "
            f"capital ({self.costs.describe()})"
        ]
        if not self.costs.impact:
            out.append(
                "note: square-root impact is off (`impact` 0): costs are a fixed share of each "
                "fill, so the curve is flat but for whole-unit rounding (which can tip a "
                "deadband's decision; fractional units scale exactly); turn impact on (e.g. "
                "1) to see capacity"
            )
        return out

    def write(self, stem: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``<stem>_capacity.csv`` (the table) and ``<stem>_capacity.png`` (the
        curve), together (:func:`metabt._util.staged_files`).

        Args:
            stem: the path stem, e.g. ``reports/metabt_backtest`` for a tearsheet
                ``reports/metabt_backtest.html``.

        Returns:
            ``{"capacity_csv": path, "capacity_png": path}``.
        """
        base = Path(stem)
        names = {
            "capacity_csv": f"{base.name}_capacity.csv",
            "capacity_png": f"{base.name}_capacity.png",
        }
        with staged_files(base.parent) as stage:
            write_text(stage / names["capacity_csv"], csv_text(self.table.reset_index()))
            self.plot(stage / names["capacity_png"])
        return {key: base.parent / name for key, name in names.items()}

    def plot(self, path: str | os.PathLike[str], *, dpi: int = 100) -> Path:
        """Draw net and gross Sharpe against capital (log scale) to a PNG, no display needed.

        Args:
            path: the PNG file.
            dpi: resolution, dots per inch. Default 100.

        Returns:
            The path written.
        """
        with quiet_third_party():
            from matplotlib.figure import Figure  # no pyplot: no backend, no window

            figure = Figure(figsize=(8.0, 4.5))
            ax = figure.subplots()
            capital = self.table.index.to_numpy(dtype=float)
            ax.plot(capital, self.table["net_sharpe"], marker="o", label="net Sharpe")
            ax.plot(
                capital,
                self.table["gross_sharpe"],
                marker=".",
                linestyle="--",
                label="before costs",
            )
            for x, y, bps in zip(capital, self.table["net_sharpe"], self.table["cost_bps"]):
                if math.isfinite(y) and math.isfinite(bps):
                    ax.annotate(
                        f"{bps:.1f} bps",
                        (x, y),
                        textcoords="offset points",
                        xytext=(0, -14),
                        ha="center",
                        fontsize=8,
                    )
            ax.set_xscale("log")
            ax.axhline(0.0, color="grey", linewidth=0.8)
            ax.set_xlabel("capital (currency units, log scale)")
            ax.set_ylabel("Sharpe ratio (annualised)")
            impact = (
                f"square-root impact k={self.costs.impact:g}" if self.costs.impact else "no impact"
            )
            ax.set_title(
                chart_label(f"Capacity of {self.name}: {impact}; labels: cost per fill"),
                fontsize=10,
            )
            ax.legend(loc="best", fontsize=8)
            figure.tight_layout()
            with atomic_path(path) as tmp:
                figure.savefig(tmp, format="png", dpi=dpi)
        return Path(path)


def _row(result: BacktestResult) -> dict[str, float]:
    paid = result.costs_paid
    fills = math.fsum(v for k, v in paid.items() if k != "borrow")
    per_traded = 1e4 / result.traded if result.traded > 0 else math.nan
    return {
        "net_sharpe": float(result.metrics.get("sharpe", math.nan)),
        "gross_sharpe": float(result.metrics.get("gross_sharpe", math.nan)),
        "cagr": float(result.metrics.get("cagr", math.nan)),
        "turnover_two_way": float(result.metrics.get("turnover_two_way", math.nan)),
        "cost_bps": fills * per_traded,
        "impact_bps": paid.get("impact", 0.0) * per_traded,
        "cost_share": result.cost_share,
    }


def capacity_curve(
    settings: RunSettings,
    capitals: Sequence[float] = CAPITALS,
    *,
    learner: MetaLearner | None = None,
    progress: bool = False,
    log: Log = silent,
) -> CapacityCurve:
    """Backtest the run's learned strategy at each capital: its capacity curve.

    The strategy is the main backtest's (MetaStrategy, or CrossSectional with
    ``settings.cfg.portfolio``), with ``settings``' data, period, costs and configuration;
    only the starting cash changes. Impact (``settings.costs.impact``) makes the net
    Sharpe fall with capital; without it the curve is flat, but for whole-unit rounding
    (positions of whole shares are not exactly proportional to capital, and a rounding can
    tip a deadband decision; with a fractional sizer the curve is exactly flat).

    Args:
        settings: data, period, costs and configuration (``cash`` is replaced).
        capitals: starting cash of each run, currency units (> 0). Default
            :data:`CAPITALS` (1e5, 1e6, 1e7, 1e8).
        learner: the trained learner; None trains one on ``settings.train_frames``
            strictly before ``settings.start`` (once, for every capital).
        progress: show the training progress bar.
        log: receives the training summary lines.

    Returns:
        A :class:`CapacityCurve`.

    Raises:
        ConfigError: no capital, or one that is not a positive number; the learner's
            training reaches the test period.
    """
    levels = sorted({float(c) for c in capitals})
    if not levels or not all(math.isfinite(c) and c > 0 for c in levels):
        raise ConfigError(
            f"`capacity` needs positive capitals (currency units, e.g. 1e5 1e6 1e7), got "
            f"{list(capitals)!r}"
        )
    if learner is None:
        learner = settings.train(settings.start, progress=progress, log=log)
    cls, name = checked_strategy(learner, settings.cfg, settings.frames, settings.start)
    kwargs = {"learner": learner, **settings.cfg.strategy_kwargs()}
    results = [dataclasses.replace(settings, cash=c).run(cls, name, kwargs) for c in levels]
    table = pd.DataFrame([_row(r) for r in results], index=pd.Index(levels, name="capital"))
    return CapacityCurve(name, settings.costs, table, results)
