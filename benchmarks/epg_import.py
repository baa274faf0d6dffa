"""EPG import speed and memory: the full import against a bare lxml parse.

    python -m benchmarks.epg_import                 # ~55 MB and ~1 GB guides
    python -m benchmarks.epg_import --sizes small --rounds 5

For each guide, in one run and alternating round by round, it times

  (a) a bare ``iterparse`` pass that extracts the same fields the importer takes
      (:func:`epg_worker.xmltv.iter_programmes`, nothing else), and
  (b) the full import into PostgreSQL (:func:`epg_worker.importer.import_guide`:
      parse, validate, COPY, replace the previous guide, commit),

each in a fresh child process so that its peak resident memory (``ru_maxrss``) is
its own.  It prints programmes per second of both, their ratio (target ≥ 0.6) and
the import's peak RSS (target < 150 MB for the 1 GB guide), and writes the figures
to ``var/bench/epg-results.json``.  Guides are generated once under ``var/bench/``
by :mod:`benchmarks.xmltv_gen`.  The import runs in a scratch database made for the
run on ``--database-url`` (default ``$CATENA_BENCH_DATABASE_URL``, then
``$CATENA_TEST_DATABASE_URL``, then the local server), dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import msgspec

from catena import testing

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "var" / "bench"
SIZES = {
    # name: (channels, days) — ~440 bytes a programme, ~30 programmes a channel a day
    "small": (300, 14),  # ~128,000 programmes, ~58 MB
    "large": (1500, 50),  # ~2,290,000 programmes, ~1.04 GB
}
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


class Measure(msgspec.Struct):
    kind: str
    seconds: float
    programmes: int
    max_rss_mb: float
    cpu_seconds: float
    # CPU time of the import's PostgreSQL backend, when the server runs on this
    # machine (read from /proc); None otherwise.
    postgres_cpu_seconds: float | None = None


@dataclass
class Result:
    name: str
    path: Path
    size_mb: float
    bare: list[Measure] = field(default_factory=list)
    full: list[Measure] = field(default_factory=list)


def guide_path(name: str) -> Path:
    channels, days = SIZES[name]
    return BENCH_DIR / f"epg-{channels}x{days}.xml"


def ensure_guide(name: str) -> Path:
    path = guide_path(name)
    # Guides start yesterday; an old one would be partly past the archive depth.
    if not path.exists() or time.time() - path.stat().st_mtime > 3 * 86400:
        channels, days = SIZES[name]
        print(f"generating {path} ({channels} channels × {days} days) ...", flush=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.xmltv_gen",
                "--channels",
                str(channels),
                "--days",
                str(days),
                "-o",
                str(path),
            ],
            cwd=ROOT,
            check=True,
        )
    return path


# -- child processes -------------------------------------------------------------


def child_bare(path: Path) -> Measure:
    from epg_worker import importer, xmltv

    started, cpu = time.perf_counter(), time.process_time()
    count = 0
    with importer.open_guide(path) as stream:
        for _ in xmltv.iter_programmes(stream):
            count += 1
    return _measure("bare", started, cpu, count)


async def child_import(path: Path, dsn: str, portal_id: int, source_id: int) -> Measure:
    from catena import db, ids
    from epg_worker import fetches, importer

    importer.tune_gc()  # as python -m epg_worker does
    conn = await db.connect(dsn)
    await ids.claim_node(conn)
    await importer.prepare(conn)
    fetch_id = await fetches.start(conn, portal_id, source_id, None)
    target = importer.Target(portal_id, source_id, fetch_id, 0, importer.archive_cutoff(7))
    stats = importer.Stats()

    async def finish(conn: asyncpg.Connection, stats: importer.Stats) -> None:
        result = fetches.Result(
            "success", "benchmark", stats.channels, stats.found, stats.imported, stats.deleted
        )
        await fetches.finish(conn, source_id, fetch_id, result)

    backend = await conn.fetchval("SELECT pg_backend_pid()")
    started, cpu, pg_cpu = time.perf_counter(), time.process_time(), _process_cpu(backend)
    await importer.import_guide(conn, path, target, stats, finish, 1 << 40)
    measure = _measure("import", started, cpu, stats.imported)
    if pg_cpu is not None:
        measure.postgres_cpu_seconds = (_process_cpu(backend) or 0.0) - pg_cpu
    await conn.close()
    return measure


def _process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a local process, or None when it is not ours to see."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(kind: str, started: float, cpu: float, count: int) -> Measure:
    return Measure(
        kind=kind,
        seconds=time.perf_counter() - started,
        programmes=count,
        max_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        cpu_seconds=time.process_time() - cpu,
    )


def run_child(args: list[str]) -> Measure:
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.epg_import", "--child", *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout
    return msgspec.json.decode(output.splitlines()[-1], type=Measure)


# -- the run ---------------------------------------------------------------------


async def migrate(url: str) -> None:
    from catena import db, migrations

    conn = await db.connect(url)
    await migrations.apply(conn)
    await conn.close()


async def make_source(url: str, name: str) -> tuple[int, int]:
    conn = await asyncpg.connect(url)
    portal_id = await conn.fetchval(
        "INSERT INTO portals (id, name, domain, api_key) VALUES (catena_new_id(), $1, '', $2) RETURNING id",
        f"bench-{name}",
        secrets.token_hex(8),
    )
    source_id = await conn.fetchval(
        "INSERT INTO epg_sources (id, portal_id, name, url)"
        " VALUES (catena_new_id(), $1, $2, $3) RETURNING id",
        portal_id,
        name,
        "http://bench.invalid/guide.xml",
    )
    await conn.close()
    return portal_id, source_id


def measure(name: str, path: Path, url: str, portal_id: int, source_id: int, rounds: int) -> Result:
    result = Result(name, path, path.stat().st_size / 1e6)
    for number in range(1, rounds + 1):
        result.bare.append(run_child(["bare", str(path)]))
        result.full.append(run_child(["import", str(path), url, str(portal_id), str(source_id)]))
        bare, full = result.bare[-1], result.full[-1]
        pg = "" if full.postgres_cpu_seconds is None else f" + postgres {full.postgres_cpu_seconds:.2f}"
        print(
            f"  {name} round {number}: bare {bare.seconds:.2f} s, import {full.seconds:.2f} s "
            f"(ratio {bare.seconds / full.seconds:.2f}), import peak RSS {full.max_rss_mb:.0f} MB; "
            f"CPU s: bare {bare.cpu_seconds:.2f}, import {full.cpu_seconds:.2f}{pg}; "
            f"load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    return result


def report(results: list[Result]) -> dict[str, object]:
    summary: dict[str, object] = {
        "machine": {"cpus": os.cpu_count(), "loadavg_end": os.getloadavg()},
    }
    print(
        f"\n{'guide':<8}{'MB':>8}{'programmes':>12}{'bare prog/s':>14}{'import prog/s':>15}"
        f"{'ratio':>8}{'import RSS MB':>15}"
    )
    for result in results:
        programmes = result.full[0].programmes
        bare_rate = programmes / statistics.median(m.seconds for m in result.bare)
        full_rate = programmes / statistics.median(m.seconds for m in result.full)
        best_ratio = min(m.seconds for m in result.bare) / min(m.seconds for m in result.full)
        rss = max(m.max_rss_mb for m in result.full)
        print(
            f"{result.name:<8}{result.size_mb:>8.0f}{programmes:>12}{bare_rate:>14.0f}{full_rate:>15.0f}"
            f"{full_rate / bare_rate:>8.2f}{rss:>15.0f}"
        )
        summary[result.name] = {
            "file": str(result.path),
            "megabytes": round(result.size_mb, 1),
            "programmes": programmes,
            "bare_programmes_per_s": round(bare_rate),
            "import_programmes_per_s": round(full_rate),
            "ratio_of_medians": round(full_rate / bare_rate, 3),
            "ratio_of_bests": round(best_ratio, 3),
            "import_peak_rss_mb": round(rss, 1),
            "rounds": {
                "bare": [msgspec.to_builtins(m) for m in result.bare],
                "import": [msgspec.to_builtins(m) for m in result.full],
            },
        }
    print("ratio = import programmes/s ÷ bare parse programmes/s (medians of the rounds)")
    return summary


async def main_async(args: argparse.Namespace) -> None:
    print(f"load average at start: {os.getloadavg()}, {os.cpu_count()} CPUs", flush=True)
    paths = {name: ensure_guide(name) for name in args.sizes}
    results = []
    async with testing.scratch_database(args.database_url, "catena_bench_") as url:
        await migrate(url)
        for name, path in paths.items():
            portal_id, source_id = await make_source(url, name)
            rounds = args.rounds if name == "small" else args.large_rounds
            results.append(await asyncio.to_thread(measure, name, path, url, portal_id, source_id, rounds))
    summary = report(results)
    out = BENCH_DIR / "epg-results.json"
    out.write_bytes(msgspec.json.format(msgspec.json.encode(summary), indent=2))
    print(f"written to {out}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        kind, path, *rest = argv[1:]
        if kind == "bare":
            measure_ = child_bare(Path(path))
        else:
            measure_ = asyncio.run(child_import(Path(path), rest[0], int(rest[1]), int(rest[2])))
        print(msgspec.json.encode(measure_).decode())
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,large", type=lambda v: v.split(","))
    parser.add_argument("--rounds", type=int, default=3, help="rounds for the ~55 MB guide")
    parser.add_argument("--large-rounds", type=int, default=2, help="rounds for the ~1 GB guide")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("CATENA_BENCH_DATABASE_URL")
        or os.environ.get("CATENA_TEST_DATABASE_URL")
        or DEFAULT_URL,
    )
    args = parser.parse_args(argv)
    unknown = set(args.sizes) - set(SIZES)
    if unknown:
        parser.error(f"unknown size(s) {', '.join(sorted(unknown))}; choose from {', '.join(SIZES)}")
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
