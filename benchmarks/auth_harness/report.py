"""The harness's printed table and its results.json."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .harness import Outcome
    from .wrk import Load

_HEAD = (
    f"{'server':<28}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'p99.9':>8}{'non-2xx':>9}"
    f"{'sock err':>9}{'×(b)':>7}{'×(a)':>7}{'×(e)':>7}{'load':>6}"
)


def table(outcomes: list[Outcome], load: Load, server_cpu: int | None) -> str:
    """The results as text: one line per server, then the answer checks and notes."""
    rates = {o.target.key: o.result.rate for o in outcomes if o.result and o.result.rate}
    lines = [
        "",
        f"wrk: {load.connections} connections, {load.threads} thread(s) on core {load.cpu}, "
        f"{load.duration:g} s per server; servers on core {server_cpu}; "
        "'load' = 1-minute load average before the measurement",
        _HEAD,
        "-" * len(_HEAD),
    ]
    lines += [_row(o, rates) for o in outcomes]
    for outcome in outcomes:
        lines += _details(outcome)
    return "\n".join(lines)


def _row(outcome: Outcome, rates: dict[str, float]) -> str:
    name = f"({outcome.target.key}) {outcome.target.label}"
    result = outcome.result
    if result is None:
        return f"{name:<28}  failed: {(outcome.error or '').splitlines()[0][:80]}"
    share = 100.0 * result.non_2xx / result.requests if result.requests else 0.0
    ratios = "".join(_ratio(result.rate, rates.get(k)) for k in "bae")
    return (
        f"{name:<28}{result.rate:>10,.0f}{result.p50_us / 1000:>9.2f}{result.p99_us / 1000:>9.2f}"
        f"{result.p999_us / 1000:>8.2f}{share:>8.2f}%{result.socket_errors:>9}{ratios}"
        f"{outcome.load_average:>6.2f}"
    )


def _ratio(rate: float, base: float | None) -> str:
    return f"{rate / base:>7.2f}" if base else f"{'-':>7}"


def _details(outcome: Outcome) -> list[str]:
    lines: list[str] = []
    if outcome.error and outcome.result is None:
        lines += ["", f"({outcome.target.key}) {outcome.target.label} failed:", outcome.error]
    if outcome.check is not None:
        lines += ["", f"({outcome.target.key}) answers to the setup and one pass of the pool:"]
        for kind, answers in outcome.check.answers.items():
            seen = ", ".join(
                f"{n:,}× {s} {r or ''}".rstrip() for (s, r), n in answers.most_common()
            )
            lines.append(f"    {kind:<24} {seen}   wrong: {outcome.check.wrong[kind]:,}")
    if outcome.notes:
        lines += [f"    {note}" for note in outcome.notes]
    return lines


def as_json(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    """results.json: one object per server with wrk's figures and the answer tallies."""
    out = []
    for o in outcomes:
        entry: dict[str, Any] = {"key": o.target.key, "label": o.target.label, "error": o.error,
                                 "loadAverage": o.load_average, "notes": o.notes}
        if o.result is not None:
            entry["wrk"] = {"rate": o.result.rate, **_fields(o.result)}
        if o.check is not None:
            entry["answers"] = {
                kind: [{"status": s, "reason": r, "count": n} for (s, r), n in c.items()]
                for kind, c in o.check.answers.items()
            }
            entry["wrong"] = o.check.wrong
        out.append(entry)
    return out


def _fields(result: Any) -> dict[str, Any]:
    return {name: getattr(result, name) for name in result.__struct_fields__}
