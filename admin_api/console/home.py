"""``/``: the dashboard (manual §2.0.1 "статистика в реальном времени", §5.1).

It shows :func:`admin_api.stats.get_stats` (the ``GET /stats`` action): viewers and
watching subscribers now, top channels, subscriber counts, sessions opened per hour
over 24 hours, EPG sources in trouble and channels without programmes.  The figures
are one fragment that htmx fetches again every 10 seconds (``hx-trigger="every 10s"``),
so the page refreshes without reloading.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from .. import stats
from ..stats import HourOpens, StatsQuery
from .pages import Page, Pages

pages = Pages(section="/")

TOP_CHANNELS = 10
# The chart's drawing area in SVG user units (the SVG scales to its box).
CHART_WIDTH = 480
CHART_HEIGHT = 120
BAR_GAP = 4
# An hour label under every this many bars.
LABEL_EVERY = 6


@dataclass(frozen=True)
class Bar:
    """One hour of the chart, in SVG coordinates."""

    x: int
    y: int
    width: int
    height: int
    hour: HourOpens
    labelled: bool


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    peak: int
    bars: list[Bar]


@pages.get("/")
async def dashboard(page: Page) -> web.StreamResponse:
    figures = await stats.get_stats(page.services, page.principal, StatsQuery(top=TOP_CHANNELS))
    template = "dashboard/_figures.html" if page.htmx else "dashboard/index.html"
    return page.render(template, stats=figures, chart=chart(figures.sessionsOpenedPerHour))


def chart(hours: list[HourOpens]) -> Chart:
    """Bars scaled to the busiest hour; an idle day draws flat bars of height 0."""
    peak = max((h.opened for h in hours), default=0)
    slot = CHART_WIDTH // max(len(hours), 1)
    bars = []
    for number, hour in enumerate(hours):
        height = round(CHART_HEIGHT * hour.opened / peak) if peak else 0
        # A busy hour never looks empty: at least a sliver shows.
        height = max(height, 2) if hour.opened else 0
        bars.append(
            Bar(
                x=number * slot + BAR_GAP // 2,
                y=CHART_HEIGHT - height,
                width=slot - BAR_GAP,
                height=height,
                hour=hour,
                labelled=(len(hours) - 1 - number) % LABEL_EVERY == 0,
            )
        )
    return Chart(width=slot * len(hours), height=CHART_HEIGHT, peak=peak, bars=bars)
