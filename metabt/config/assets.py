"""Asset classes, declared, not guessed: each one's costs, units and market calendar.

An asset class (``--asset-class``; :meth:`metabt.costs.Costs.for_asset_class` from Python)
sets the defaults a run would otherwise take from US equities: the cost model
(commission, half-spread, slippage and short borrow, basis points), whether positions
hold fractions of a unit and in which step, and the market calendar that counts the bars
of a year (:data:`metabt.data.bars.CALENDARS`). Explicit settings (``--commission``,
``--spread``, ..., ``--fractional``, ``--bars-per-year``) override the class's.

A run that declares no class keeps the defaults metabt always had: US-equity costs and
whole shares, with the calendar detected from the bar times.

The square-root market impact (``--impact``) and the participation cap
(``--participation``) are not class defaults: they need a real traded volume (FX files
carry tick counts, not volume), and their coefficient is of the same order in every class
(see :class:`metabt.costs.DeskCommission`), so a run turns them on explicitly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from metabt.errors import ConfigError

__all__ = [
    "ASSET_CLASSES",
    "ASSET_CLASS_NAMES",
    "AssetClass",
    "asset_class",
]


@dataclass(frozen=True)
class AssetClass:
    """The cost, unit and calendar defaults of one asset class.

    Attributes:
        name: ``"equity"``, ``"fx"``, ``"crypto"`` or ``"futures"``.
        commission_bps: commission and exchange fees, bps of traded value per fill.
        spread_bps: half the quoted bid-ask spread, bps of the price, paid on every fill
            (a market order crosses from the mid to the far side).
        slippage_bps: adverse move of the fill price beyond that, bps of the price.
        borrow_bps: short-borrow fee, bps a year of a short position's value.
        fractional: positions in fractions of a unit, in steps of ``lot``; False: whole
            units.
        lot: the step of a fractional position (units of the asset).
        calendar: the market calendar of bar-frequency detection (a key of
            :data:`metabt.data.bars.CALENDARS`).
        source: where the defaults come from, in one line (for ``describe``).
    """

    name: str
    commission_bps: float
    spread_bps: float
    slippage_bps: float
    borrow_bps: float
    fractional: bool
    lot: float
    calendar: str
    source: str

    @property
    def per_fill_bps(self) -> float:
        """Commission, half-spread and slippage: the flat cost of one fill, bps."""
        return float(self.commission_bps + self.spread_bps + self.slippage_bps)

    def sizer_kwargs(self) -> dict[str, Any]:
        """The :class:`metabt.sizers.SignalSizer` params the class sets: ``fractional``,
        ``lot`` (fractional classes only) and ``calendar``."""
        out: dict[str, Any] = {"fractional": self.fractional, "calendar": self.calendar}
        if self.fractional:
            out["lot"] = self.lot
        return out


#: The asset classes by name. Every figure is a default for liquid instruments of the
#: class, to be overridden for anything less liquid:
#:
#: - **equity** (US large caps; metabt's defaults before asset classes, unchanged): 5 bps
#:   commission (a conservative all-in broker plus regulatory fee for a small account;
#:   institutional rates are 0.5-2 bps); 2 bps slippage, which stands for the half-spread
#:   (a one-cent tick on a $50-150 stock is 0.7-2 bps wide, so 0.3-1 bp half) plus a
#:   small order's impact, so the spread term is 0 rather than counted twice; 25 bps a
#:   year of borrow (general-collateral rate for liquid large caps; hard-to-borrow names
#:   cost far more); whole shares; the NYSE calendar (252 days of 6.5 hours).
#: - **fx** (majors, e.g. EUR/USD): no commission (retail FX is priced in the spread; ECN
#:   accounts charge about 0.3 bp a side instead); half-spread 0.5 bp (EUR/USD quotes
#:   0.6-1.0 pip wide at retail brokers, 0.5-0.9 bp at 1.10, other majors wider); no
#:   flat slippage (crossing the spread is the cost; a large order's move is the impact
#:   model); no borrow (a short is the other currency held long; the rollover interest
#:   differential is not modelled); units of the base currency in steps of 1 (OANDA's
#:   smallest order); the 24/5 calendar (24 hours on 260 weekdays).
#: - **crypto** (BTC, ETH on large venues): 10 bps taker fee (Binance spot's base tier
#:   is 0.10%; Coinbase and Kraken retail tiers charge more); half-spread 1 bp (BTC-USD's
#:   top of book is usually within 1-2 bps; smaller coins are far wider); no flat
#:   slippage; 300 bps a year of borrow (spot-margin rates for BTC have run at about 1-5%
#:   a year, variable; shorting through perpetual swaps pays or earns funding instead,
#:   not modelled); fractions in steps of 1e-8 (a satoshi); the 24/7 calendar.
#: - **futures** (liquid index and rate contracts, e.g. CME E-mini S&P 500): commission
#:   0.5 bp (about $2.25 a contract a side with exchange fees is 0.1 bp of an E-mini's
#:   ~$250,000 notional, 0.5-1 bp of a micro's; 0.5 bp covers both); half-spread 0.25 bp
#:   (one 0.25-point tick at ~5,000 is 0.5 bp wide); no flat slippage; no borrow (a
#:   short future is a contract, nothing is borrowed); whole contracts, the price taken
#:   as one contract's value (multiply the prices by the contract multiplier; rolls are
#:   the user's data); the CME Globex calendar (252 days of 23 hours).
ASSET_CLASSES: Mapping[str, AssetClass] = {
    "equity": AssetClass(
        "equity",
        commission_bps=5.0,
        spread_bps=0.0,
        slippage_bps=2.0,
        borrow_bps=25.0,
        fractional=False,
        lot=1.0,
        calendar="exchange",
        source="US large caps: broker fee 5 bps, half-spread and small impact in the 2 bps "
        "slippage, general-collateral borrow",
    ),
    "fx": AssetClass(
        "fx",
        commission_bps=0.0,
        spread_bps=0.5,
        slippage_bps=0.0,
        borrow_bps=0.0,
        fractional=True,
        lot=1.0,
        calendar="24/5",
        source="FX majors: priced in the spread (EUR/USD ~0.6-1 pip), no borrow",
    ),
    "crypto": AssetClass(
        "crypto",
        commission_bps=10.0,
        spread_bps=1.0,
        slippage_bps=0.0,
        borrow_bps=300.0,
        fractional=True,
        lot=1e-8,
        calendar="24/7",
        source="BTC/ETH on large venues: 0.10% taker fee, spot-margin borrow",
    ),
    "futures": AssetClass(
        "futures",
        commission_bps=0.5,
        spread_bps=0.25,
        slippage_bps=0.0,
        borrow_bps=0.0,
        fractional=False,
        lot=1.0,
        calendar="futures",
        source="liquid CME contracts: ~$2.25 a contract a side, one-tick spread, no borrow",
    ),
}
#: The names ``--asset-class`` accepts.
ASSET_CLASS_NAMES: tuple[str, ...] = tuple(ASSET_CLASSES)


def asset_class(name: str) -> AssetClass:
    """The :class:`AssetClass` named ``name``.

    Args:
        name: one of :data:`ASSET_CLASS_NAMES`.

    Returns:
        Its defaults.

    Raises:
        ConfigError: an unknown name, listing the known ones.
    """
    found = ASSET_CLASSES.get(name) if isinstance(name, str) else None
    if found is None:
        raise ConfigError(
            f"asset class {name!r} is unknown; use one of {', '.join(ASSET_CLASS_NAMES)}"
        )
    return found
