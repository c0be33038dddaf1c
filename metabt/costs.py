"""Trading costs a desk would recognise, inside backtrader's broker.

:class:`Costs` is a run's cost model: commission, half-spread, slippage, short borrow and,
when asked, square-root market impact with a participation cap, with the defaults of an
asset class (:mod:`metabt.config.assets`). :meth:`Costs.apply` sets it on a backtrader
broker through backtrader's own extension points, each importable by name (so
``cerebro.optstrategy`` can pickle them into its worker processes):

- :class:`DeskCommission`, a ``bt.CommInfoBase`` whose ``_getcommission`` charges the
  commission, the half-spread and the impact of each fill;
- :class:`ParticipationFiller`, a broker ``filler`` (as ``bt.broker.fillers.FixedBarPerc``)
  that fills at most a fraction of the bar's volume and tells the commission the size of
  each execution;
- backtrader's percentage slippage (``broker.set_slippage_perc``) for the slippage.

Square-root impact (Almgren, Thum, Hauptmann and Li 2005, "Direct estimation of equity
market impact", Risk 18(7); Tóth et al. 2011, "Anomalous price impact and the critical
nature of liquidity in financial markets", Phys. Rev. X 1): a fill of ``Q`` units costs
``k · σ · sqrt(Q / ADV)`` of its traded value, with σ the volatility of close-to-close log
returns and ADV the mean volume, both over the bars before the fill and both per bar. Per
bar or per day gives the same cost (σ grows with the square root of time and volume
linearly, so ``σ_bar · sqrt(Q / V_bar) = σ_daily · sqrt(Q / V_daily)``), so the law applies
to bars of any frequency as it is written for days.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import backtrader as bt
import numpy as np
import pandas as pd

from metabt._checks import check_int, reject_unknown_params
from metabt.config.assets import ASSET_CLASSES, AssetClass, asset_class
from metabt.errors import ConfigError, DataError

if TYPE_CHECKING:
    from metabt.config.defaults import RunConfig

__all__ = [
    "Costs",
    "DeskCommission",
    "ParticipationFiller",
    "check_volume",
]

#: An execution's size as a piece of the one noted by the filler: within float error.
_PIECE_TOL = 1e-9
_NO_VOLUME_FIX = (
    "square-root impact and the participation cap need the bars' traded volume; turn them "
    "off (`impact` 0, no `participation`) or give data with volume"
)


def _number(value: Any, name: str, *, low: float = 0.0, above: bool = False) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )
    if ok:
        ok = math.isfinite(value) and (value > low if above else value >= low)
    if not ok:
        relation = ">" if above else ">="
        raise ConfigError(f"{name} must be a finite number {relation} {low:g}, got {value!r}")
    return float(value)


class DeskCommission(bt.CommInfoBase):
    """Commission, half-spread and square-root impact of each fill, for backtrader's broker.

    A stock-like, percentage commission scheme (``broker.setcommission``'s defaults) whose
    charge for a fill of ``Q`` units at price ``P`` is::

        Q·P · (commission + spread + impact · σ · sqrt(Q_exec / ADV))

    with σ the standard deviation (ddof=1) of the last ``vol_bars`` close-to-close log
    returns and ADV the mean volume of the last ``adv_bars`` bars, all bars strictly
    before the fill's (known when the order is sent), and ``Q_exec`` the size of the whole
    execution. Backtrader prices an execution that reverses a position in two pieces (the
    part that closes, the part that opens); :class:`ParticipationFiller` notes each
    execution's size first, so the pieces pay the whole execution's impact rate and their
    sum is the cost of one fill of ``Q_exec``. Without that filler each piece is priced
    as its own fill (a reversal then pays a little less impact).

    Short positions pay ``interest`` a year on their value (backtrader's credit interest,
    per calendar day), as with ``broker.setcommission(interest=...)``.

    Params:
        commission (float): commission, fraction of traded value (5e-4 = 5 bps).
            Default 0.
        spread (float): half the bid-ask spread, fraction of the price, paid on every fill.
            Default 0.
        impact (float): ``k``, the square-root law's coefficient (of order 1: Tóth et al.
            2011; 0 turns impact off). Default 0.
        adv_bars (int): bars of volume in ADV (bars). Default 20.
        vol_bars (int): bars of log returns in σ (bars, >= 2). Default 20.
        data (bt.DataBase | None): the feed this scheme prices; needed when ``impact`` > 0
            (one scheme per feed: ``broker.addcommissioninfo(scheme, name=data._name)``).
        interest (float): short-borrow fee, fraction a year. Default 0.
        lot (float): the unit step of the sizes :meth:`getsize` gives backtrader's cash
            sizers (``bt.sizers.PercentSizer``, ``AllInSizer``): 1 for whole units (as
            backtrader), 1e-8 for crypto. Default 1.

    Raises:
        ConfigError: a negative or non-finite parameter, ``impact`` > 0 without ``data``,
            or an unknown parameter.
        DataError: at a fill with impact on: no bar before it, or no traded volume in
            the ``adv_bars`` bars before it (the message names the feed and the date).
    """

    params: Any = (
        ("commission", 0.0),
        ("stocklike", True),
        ("commtype", bt.CommInfoBase.COMM_PERC),
        ("percabs", True),
        ("interest_long", False),
        ("spread", 0.0),
        ("impact", 0.0),
        ("adv_bars", 20),
        ("vol_bars", 20),
        ("data", None),
        ("lot", 1.0),
    )

    def __init__(self, **unknown: Any) -> None:
        reject_unknown_params("DeskCommission", unknown, self.params)
        super().__init__()
        p = self.p
        for name in ("commission", "spread", "impact", "interest"):
            _number(getattr(p, name), f"DeskCommission: {name}")
        _number(p.lot, "DeskCommission: lot", above=True)
        check_int("DeskCommission: adv_bars", p.adv_bars, 1)
        check_int("DeskCommission: vol_bars", p.vol_bars, 2)
        if p.impact and p.data is None:
            raise ConfigError(
                "DeskCommission: impact > 0 needs the feed it prices (data=...); "
                "Costs.apply(broker, cerebro.datas) adds one scheme per feed"
            )
        self._market: tuple[int, float, float] | None = None  # (bar, σ, ADV)
        self._execution: tuple[int, float] | None = None  # (bar, |Q_exec|) noted by the filler

    # ---- market state before the fill
    def market(self) -> tuple[float, float]:
        """σ (per bar, fraction) and ADV (units a bar) over the bars before the current one.

        Returns:
            (sigma, adv), cached for the bar.

        Raises:
            DataError: no earlier bar, fewer than 2 earlier returns, or an ADV of 0.
        """
        data = self.p.data
        bar = len(data)
        if self._market is not None and self._market[0] == bar:
            return self._market[1], self._market[2]
        name = getattr(data, "_name", "") or "data"
        earlier = bar - 1
        if earlier < 3:
            raise DataError(
                f"{name}: a fill at bar {bar} has {max(earlier, 0)} bars before it, too few "
                "to estimate the volatility and volume of square-root impact (3 at least); "
                "trade after a warm-up"
            )
        volume = np.asarray(data.volume.get(ago=-1, size=min(self.p.adv_bars, earlier)))
        closes = np.asarray(data.close.get(ago=-1, size=min(self.p.vol_bars + 1, earlier)))
        adv = float(np.mean(volume)) if len(volume) else math.nan
        if not (math.isfinite(adv) and adv > 0):
            when = data.datetime.datetime(0)
            raise DataError(
                f"{name}: no traded volume in the {len(volume)} bars before {when}; "
                + _NO_VOLUME_FIX
            )
        sigma = float(np.std(np.diff(np.log(closes)), ddof=1))
        self._market = (bar, sigma, adv)
        return sigma, adv

    def note_execution(self, size: float) -> None:
        """The broker is about to execute ``size`` units at the current bar (called by
        :class:`ParticipationFiller`): its pieces pay this size's impact rate."""
        if self.p.data is not None:
            self._execution = (len(self.p.data), abs(float(size)))

    def impact_rate(self, size: float) -> float:
        """Impact of a fill of ``size`` units, fraction of its traded value:
        ``impact · σ · sqrt(Q_exec / ADV)`` (0 with impact off).

        Args:
            size: the fill's units (sign ignored); a piece of the execution noted by the
                filler at this bar pays that execution's rate.
        """
        if not self.p.impact or not size:
            return 0.0
        q = abs(float(size))
        noted = self._execution
        if noted is not None and noted[0] == len(self.p.data) and q <= noted[1] * (1 + _PIECE_TOL):
            q = noted[1]
        sigma, adv = self.market()
        return float(self.p.impact * sigma * math.sqrt(q / adv))

    def breakdown(self, size: float, price: float) -> tuple[float, float, float]:
        """Commission, half-spread and impact of a fill, currency units.

        Args:
            size: units filled (sign ignored).
            price: fill price (currency units).

        Returns:
            (commission, spread, impact), each >= 0.
        """
        notional = abs(size) * price
        return (
            notional * self.p.commission,
            notional * self.p.spread,
            notional * self.impact_rate(size),
        )

    def getsize(self, price: float, cash: float) -> float:
        """Units ``cash`` buys at ``price`` (times the leverage), rounded down to ``lot``:
        fractions for a fractional asset, where backtrader's own scheme gives whole units."""
        if not (price > 0 and cash > 0):
            return 0
        units = self.p.leverage * cash / price
        steps = math.floor(units / self.p.lot + 1e-9)
        return int(steps) if self.p.lot == 1 else steps * self.p.lot

    def _getcommission(self, size: float, price: float, pseudoexec: bool) -> float:
        """Backtrader hook: the fill's commission + half-spread + impact, currency.

        ``pseudoexec`` False is the broker confirming an execution
        (``CommInfoBase.confirmexec``): the noted execution size is then spent.
        """
        total = math.fsum(self.breakdown(size, price))
        if not pseudoexec:
            self._execution = None
        return total


class ParticipationFiller:
    """A broker filler: each bar fills at most ``participation`` of the bar's volume.

    backtrader calls it (``broker.set_filler``) with each order about to execute; it
    returns the units to fill now, and the rest of the order stays open
    (``Order.Partial``) for the next bar. As ``bt.broker.fillers.FixedBarPerc``, but a
    fraction (not a percentage), rounded down to ``lot`` rather than to whole units, so
    fractional positions are not capped to 0. The bar's volume is the bar the order fills
    in (backtrader's convention: an order worked through that bar at that participation
    rate); the strategy's decision never reads it. It also notes each execution's size
    to the data's :class:`DeskCommission` (reached through the order's owner's broker), so a
    reversal pays one fill's impact.

    Args:
        participation: largest fill as a fraction of the bar's volume, in (0, 1]; None for
            no cap (every order fills whole; the filler then only notes sizes).
        lot: the unit step fills are rounded down to (1 for whole units). Default 1.

    Raises:
        ConfigError: ``participation`` outside (0, 1] or ``lot`` <= 0.
    """

    def __init__(self, participation: float | None = None, lot: float = 1.0) -> None:
        if participation is not None:
            value = _number(participation, "participation", above=True)
            if value > 1:
                raise ConfigError(
                    f"participation must be in (0, 1] (a fraction of a bar's volume, e.g. "
                    f"0.1 for 10%), got {participation!r}"
                )
        self.participation = participation
        self.lot = _number(lot, "lot", above=True)

    def __repr__(self) -> str:
        return f"ParticipationFiller(participation={self.participation!r}, lot={self.lot!r})"

    def __call__(self, order: bt.Order, price: float, ago: int) -> float:
        """Units of ``order`` to fill at this bar (>= 0; backtrader applies the sign)."""
        size = abs(float(order.executed.remsize))
        if self.participation is not None:
            volume = float(order.data.volume[ago])
            room = volume * self.participation if math.isfinite(volume) and volume > 0 else 0.0
            room = math.floor(room / self.lot + 1e-9) * self.lot
            size = min(size, room)
        broker = getattr(order.owner, "broker", None)
        info = broker.getcommissioninfo(order.data) if broker is not None else None
        if isinstance(info, DeskCommission):
            info.note_execution(size)
        return size


@dataclass(frozen=True)
class Costs:
    """A run's trading costs, on by default (honesty rule 3), applied to backtrader's broker.

    Every fill pays the commission and the half-spread (both as commission,
    :class:`DeskCommission`) and moves its price against the trade by the slippage, even
    where that lands outside the bar's high-low range (a desk's fill is not capped by the
    day's range). With ``impact`` > 0 each fill also pays square-root market impact on the
    bars' volume, and ``participation`` caps each fill to a fraction of its bar's volume
    (:class:`ParticipationFiller`; the rest fills on later bars). Short positions pay a
    borrow fee on their value, accrued per calendar day (backtrader's credit interest:
    ``days / 365 * borrow * |units| * entry price``).

    The defaults are US equities' (:data:`metabt.config.assets.ASSET_CLASSES`); build the
    costs of another class with :meth:`for_asset_class`.

    Args:
        commission_bps: commission per fill, bps of traded value. Default 5.
        slippage_bps: adverse fill price move, bps of the price. Default 2.
        borrow_bps: short-borrow fee, bps a year of the short position's value. Default
            25 (general collateral for liquid large caps; hard-to-borrow names cost far
            more).
        spread_bps: half the bid-ask spread, bps of the price, per fill. Default 0 (for
            equities the 2 bps of slippage stand for it).
        impact: the square-root law's coefficient ``k`` (0 = off; 1 is the usual order,
            Tóth et al. 2011). Default 0.
        participation: largest fill, fraction of its bar's volume, in (0, 1]; None (the
            default) for no cap.
        adv_bars: bars of volume (and of returns for σ) behind the impact. Default 20.
        asset_class: the class whose defaults these are (``"equity"``, ``"fx"``,
            ``"crypto"``, ``"futures"``), or None when none was declared (US-equity costs,
            the calendar detected from the dates). It also sets the sizer's units and the
            market calendar (:meth:`sizer_kwargs`).

    Raises:
        ConfigError: a negative or non-finite cost, a participation outside (0, 1], a
            bad ``adv_bars`` or an unknown asset class.
    """

    commission_bps: float = 5.0
    slippage_bps: float = 2.0
    borrow_bps: float = 25.0
    spread_bps: float = 0.0
    impact: float = 0.0
    participation: float | None = None
    adv_bars: int = 20
    asset_class: str | None = None

    def __post_init__(self) -> None:
        for name in ("commission_bps", "slippage_bps", "borrow_bps", "spread_bps"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a number >= 0 (basis points), got {value!r}")
        _number(self.impact, "impact (the square-root law's coefficient, e.g. 1)")
        ParticipationFiller(self.participation)  # checks it
        check_int("adv_bars", self.adv_bars, 2)
        if self.asset_class is not None:
            asset_class(self.asset_class)

    @classmethod
    def for_asset_class(cls, name: str | None = None, **overrides: Any) -> Costs:
        """The costs of asset class ``name``, with some settings overridden.

        Args:
            name: ``"equity"``, ``"fx"``, ``"crypto"`` or ``"futures"``; None for the
                undeclared default (US-equity costs, the calendar from the dates).
            **overrides: any field of :class:`Costs` (``commission_bps=1.0``, ``impact=1``,
                ...); a None value keeps the class's default (so flags left unset pass
                through).

        Returns:
            The costs, ``asset_class`` set to ``name``.

        Raises:
            ConfigError: an unknown class or field, or a bad value.
        """
        base = ASSET_CLASSES["equity"] if name is None else asset_class(name)
        settings = [f for f in cls.__dataclass_fields__ if f != "asset_class"]
        unknown = sorted(set(overrides) - set(settings))
        if unknown:
            raise ConfigError(
                f"Costs.for_asset_class has no setting {unknown[0]!r} (the class is its first "
                f"argument); use {', '.join(settings)}"
            )
        values: dict[str, Any] = {
            "commission_bps": base.commission_bps,
            "slippage_bps": base.slippage_bps,
            "borrow_bps": base.borrow_bps,
            "spread_bps": base.spread_bps,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["asset_class"] = name
        return cls(**values)

    @property
    def asset(self) -> AssetClass:
        """The declared asset class (US equities when none was)."""
        return ASSET_CLASSES[self.asset_class or "equity"]

    @property
    def per_fill_bps(self) -> float:
        """Commission plus half-spread plus slippage, bps of a fill's value: the flat cost
        of one fill, the x of the run on the cost-sensitivity curve
        (``BacktestResult.cost_sensitivity``) and the ``c`` of the after-cost training
        objective (:meth:`configure`). Impact is not in it: its cost grows as the square
        root of a fill's size, so no one number per unit traded represents it."""
        return float(self.commission_bps + self.spread_bps + self.slippage_bps)

    @property
    def needs_volume(self) -> bool:
        """True when impact or the participation cap reads the bars' volume."""
        return bool(self.impact) or self.participation is not None

    def sizer_kwargs(self) -> dict[str, Any]:
        """SignalSizer params of the declared class (``fractional``, ``lot``,
        ``calendar``); empty when none was declared."""
        return {} if self.asset_class is None else self.asset.sizer_kwargs()

    def configure(self, cfg: RunConfig) -> RunConfig:
        """``cfg`` with what these costs imply: the P&L objective's cost per fill
        (:attr:`per_fill_bps`) and borrow, and the declared class's sizer params
        (``fractional``, ``lot``, ``calendar``) where ``cfg.sizer`` sets none.

        Args:
            cfg: a run configuration.

        Returns:
            The configuration to train and trade with.
        """
        sizer = {**self.sizer_kwargs(), **dict(cfg.sizer)}
        return cfg.with_(
            fill_cost_bps=self.per_fill_bps, borrow_bps=float(self.borrow_bps), sizer=sizer
        )

    def apply(
        self,
        broker: bt.brokers.BackBroker,
        datas: Iterable[bt.DataBase] = (),
        *,
        lot: float | None = None,
    ) -> None:
        """Set the costs on ``broker`` (before ``cerebro.run()``).

        One :class:`DeskCommission` for every feed (commission, half-spread, borrow), or
        with impact one per feed of ``datas`` (it reads that feed's volume and prices);
        backtrader's percentage slippage (uncapped by the bar's range); and with impact or
        a participation cap a :class:`ParticipationFiller`.

        Args:
            broker: ``cerebro.broker``.
            datas: the feeds (``cerebro.datas``), named and unique; needed with impact.
            lot: the unit step of positions (1 for whole units; a fractional sizer's
                ``lot``), for the participation cap's rounding and
                :meth:`DeskCommission.getsize`. Default None: the declared class's step
                if its units are fractional, else 1.

        Raises:
            ConfigError: impact without ``datas``, or feeds without a unique name.
        """
        if lot is None:
            lot = self.asset.lot if self.asset_class and self.asset.fractional else 1.0
        scheme = {
            "commission": self.commission_bps / 1e4,
            "spread": self.spread_bps / 1e4,
            "interest": self.borrow_bps / 1e4,
            "lot": float(lot),
        }
        broker.addcommissioninfo(DeskCommission(**scheme))
        if self.impact:
            feeds = list(datas)
            names = [getattr(d, "_name", "") for d in feeds]
            if not feeds or not all(names) or len(set(names)) != len(names):
                raise ConfigError(
                    "square-root impact prices each feed from its own volume: pass the "
                    "named feeds, costs.apply(cerebro.broker, cerebro.datas), each with a "
                    f"unique name (got {names or 'none'})"
                )
            for data, name in zip(feeds, names):
                broker.addcommissioninfo(
                    DeskCommission(
                        **scheme,
                        impact=float(self.impact),
                        adv_bars=self.adv_bars,
                        vol_bars=self.adv_bars,
                        data=data,
                    ),
                    name=name,
                )
        broker.set_slippage_perc(
            self.slippage_bps / 1e4, slip_open=True, slip_match=True, slip_out=True
        )
        if self.needs_volume:
            broker.set_filler(ParticipationFiller(self.participation, lot=lot))

    def describe(self) -> str:
        """The costs in one line, for report headers: the asset class, then each cost."""
        if self.asset_class is None:
            head = "costs of US equities (no asset class declared; calendar from the dates)"
        else:
            units = (
                f"fractions in steps of {self.asset.lot:g}"
                if self.asset.fractional
                else "whole units"
            )
            head = f"asset class {self.asset_class} ({self.asset.calendar} calendar, {units})"
        parts = [f"commission {self.commission_bps:g} bps"]
        if self.spread_bps:
            parts.append(f"half-spread {self.spread_bps:g} bps")
        parts.append(f"slippage {self.slippage_bps:g} bps per fill")
        if self.impact:
            parts.append(
                f"square-root impact k={self.impact:g} on {self.adv_bars}-bar volume and volatility"
            )
        if self.participation is not None:
            parts.append(f"fills capped at {self.participation:.0%} of a bar's volume")
        parts.append(f"short borrow {self.borrow_bps:g} bps a year")
        return f"{head}: {', '.join(parts)}"


def check_volume(frames: Mapping[str, pd.DataFrame], costs: Costs) -> None:
    """Refuse, before a run, feeds without volume when the costs read it.

    Args:
        frames: name -> OHLCV frame.
        costs: the run's costs.

    Raises:
        DataError: impact or a participation cap on, and a frame whose volume is all 0
            (or missing: NaN), naming it and the fix.
    """
    if not costs.needs_volume:
        return
    for name, frame in frames.items():
        volume = frame["volume"].to_numpy(dtype=np.float64) if "volume" in frame else None
        if volume is None or not (np.isfinite(volume) & (volume > 0)).any():
            raise DataError(f"{name}: the data have no volume (all 0 or missing); {_NO_VOLUME_FIX}")
