"""The harness's printed table and its results.json."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .harness import Outcome
    from .wrk import Load, WrkResult

_HEAD = (
    f"{'server':<28}{'req/s':>10}{'spread':>8}{'p50 ms':>8}{'p99 ms':>8}{'p99.9':>8}"
    f"{'non-2xx':>9}{'sock err':>9}{'×(b)':>7}{'×(a)':>7}{'×(e)':>7}{'load':>6}"
)


def table(outcomes: list[Outcome], load: Load, server_cpu: int | None) -> str:
    """The results as text: one line per server, then the answer checks and notes."""
    rates = {o.target.key: m[0].rate for o in outcomes if (m := o.median) and m[0].rate}
    rounds = max((len(o.rounds) for o in outcomes), default=0)
    lines = [
        "",
        f"wrk: {load.connections} connections, {load.threads} thread(s) on core {load.cpu}, "
        f"{load.duration:g} s per server and round, {rounds} round(s); servers on core "
        f"{server_cpu}. Each line: the round with the median req/s; 'spread' = (max - min) / "
        "median over the rounds; 'load' = 1-minute load average before that round.",
        _HEAD,
        "-" * len(_HEAD),
    ]
    lines += [_row(o, rates) for o in outcomes]
    for outcome in outcomes:
        lines += _details(outcome)
    return "\n".join(lines)


def _row(outcome: Outcome, rates: dict[str, float]) -> str:
    name = f"({outcome.target.key}) {outcome.target.label}"
    median = outcome.median
    if median is None:
        return f"{name:<28}  failed: {(outcome.error or '').splitlines()[0][:80]}"
    result, load_average = median
    share = 100.0 * result.non_2xx / result.requests if result.requests else 0.0
    ratios = "".join(_ratio(result.rate, rates.get(k)) for k in "bae")
    return (
        f"{name:<28}{result.rate:>10,.0f}{_spread(outcome, result.rate):>7.0f}%"
        f"{result.p50_us / 1000:>8.2f}{result.p99_us / 1000:>8.2f}{result.p999_us / 1000:>8.2f}"
        f"{share:>8.2f}%{result.socket_errors:>9}{ratios}{load_average:>6.2f}"
    )


def _spread(outcome: Outcome, median: float) -> float:
    rates = [r.rate for r, _ in outcome.rounds]
    return 100.0 * (max(rates) - min(rates)) / median if median else 0.0


def _ratio(rate: float, base: float | None) -> str:
    return f"{rate / base:>7.2f}" if base else f"{'-':>7}"


def _details(outcome: Outcome) -> list[str]:
    lines: list[str] = []
    title = f"({outcome.target.key}) {outcome.target.label}"
    if outcome.error:
        lines += ["", f"{title} failed:", outcome.error]
    if outcome.check is not None:
        lines += ["", f"{title}: answers to the setup and one pass of the pool:"]
        for kind, answers in outcome.check.answers.items():
            seen = ", ".join(f"{n:,}× {s} {r or ''}".rstrip() for (s, r), n in answers.most_common())
            lines.append(f"    {kind:<24} {seen}   wrong: {outcome.check.wrong[kind]:,}")
    if len(outcome.rounds) > 1:
        rates = ", ".join(f"{r.rate:,.0f}" for r, _ in outcome.rounds)
        lines.append(f"{title}: req/s by round: {rates}")
    lines += [f"{title}: {note}" for note in outcome.notes]
    return lines


def as_json(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """results.json: one object per server with every round's figures and the answer tallies."""
    out = []
    for o in outcomes:
        entry: dict[str, Any] = {
            "key": o.target.key,
            "label": o.target.label,
            "error": o.error,
            "notes": o.notes,
            "rounds": [{"loadAverage": load, "rate": r.rate, **_fields(r)} for r, load in o.rounds],
            "redisCommandsPer1000": o.commands,
        }
        if o.check is not None:
            entry["answers"] = {
                kind: [{"status": s, "reason": r, "count": n} for (s, r), n in c.items()]
                for kind, c in o.check.answers.items()
            }
            entry["wrong"] = o.check.wrong
        out.append(entry)
    return out


def _fields(result: WrkResult) -> dict[str, Any]:
    return {name: getattr(result, name) for name in result.__struct_fields__}
