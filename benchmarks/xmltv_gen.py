"""Synthetic XMLTV guides of any size, with realistic Russian text.

    python -m benchmarks.xmltv_gen --channels 300 --days 14 -o var/bench/epg-300x14.xml
    python -m benchmarks.xmltv_gen --channels 300 --days 14 -o var/bench/epg-300x14.xml.gz

About 30 programmes per channel and day, ~440 bytes each, so 300 channels × 14 days
is ~125,000 programmes and ~55 MB.  The output is deterministic for a given seed and
start date; times carry a ``+0300`` offset like most Russian providers' files.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import random
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from xml.sax.saxutils import escape

WORDS = (
    "новости события страна мир город жители история сегодня вечером утром неделя "
    "ведущий гости студия расследование документальный фильм сериал премьера сезон "
    "серия герой семья любовь тайна прошлое будущее путешествие природа животные "
    "океан горы река лес зима лето осень весна праздник концерт музыка песня "
    "спорт футбол хоккей матч чемпионат команда победа финал тренер игрок "
    "кухня рецепт блюдо вкус здоровье врач советы дом ремонт сад огород "
    "наука открытие космос планета учёные технологии будущее автомобиль дорога "
    "детектив следователь преступление улики погоня загадка правда ложь судьба "
    "комедия смех шутка друзья приключения дети школа учитель урок экзамен"
).split()
TITLES = (
    "Новости",
    "Время",
    "Доброе утро",
    "Вечерние новости",
    "Пусть говорят",
    "Поле чудес",
    "Что? Где? Когда?",
    "Жди меня",
    "Модный приговор",
    "Давай поженимся",
    "Вести",
    "Футбол. Чемпионат России",
    "Хоккей. КХЛ",
    "Большой спорт",
    "Утро России",
    "Документальный проект",
    "Тайны следствия",
    "След",
    "Улицы разбитых фонарей",
    "Мультфильмы",
    "Спокойной ночи, малыши!",
    "Смак",
    "Здоровье",
    "Дачный ответ",
    "Непутёвые заметки",
    "Клуб путешественников",
    "В мире животных",
    "Своя игра",
    "Художественный фильм «Ирония судьбы»",
    "Сериал «Кухня»",
    "Концерт",
    "Погода",
)
GENRES = ("Новости", "Сериал", "Фильм", "Спорт", "Развлечения", "Детям", "Познавательное")
GENRES_EN = ("News", "Series", "Movie", "Sports", "Entertainment", "Kids", "Documentary")
RATINGS = ("0+", "6+", "12+", "16+", "18+")
DURATIONS = (10, 15, 20, 25, 30, 30, 40, 45, 50, 60, 60, 60, 75, 90, 100)
OFFSET = dt.timedelta(hours=3)


def description(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(4, 10))
    words[0] = words[0].capitalize()
    return " ".join(words) + "."


def channel_ids(count: int) -> list[str]:
    return [f"ch{number:04d}.example.ru" for number in range(1, count + 1)]


def channel_xml(channel_id: str, number: int) -> str:
    return (
        f'  <channel id="{channel_id}">\n'
        f'    <display-name lang="ru">Канал {number}</display-name>\n'
        f'    <icon src="https://logos.example.ru/{number}.png" />\n'
        "  </channel>\n"
    )


def stamp(moment: dt.datetime) -> str:
    return (moment + OFFSET).strftime("%Y%m%d%H%M%S") + " +0300"


def programme_xml(rng: random.Random, channel_id: str, start: dt.datetime, stop: dt.datetime) -> str:
    genre = rng.randrange(len(GENRES))
    parts = [
        f'  <programme start="{stamp(start)}" stop="{stamp(stop)}" channel="{channel_id}">\n',
        f'    <title lang="ru">{escape(rng.choice(TITLES))}</title>\n',
    ]
    if rng.random() < 0.2:
        parts.append(f'    <sub-title lang="ru">{escape(description(rng)[:40])}</sub-title>\n')
    parts.append(f'    <desc lang="ru">{escape(description(rng))}</desc>\n')
    parts.append(f'    <category lang="ru">{GENRES[genre]}</category>\n')
    if rng.random() < 0.5:
        parts.append(f'    <category lang="en">{GENRES_EN[genre]}</category>\n')
    if rng.random() < 0.3:
        episode = f"S{rng.randint(1, 9)} E{rng.randint(1, 40)}"
        parts.append(f'    <episode-num system="onscreen">{episode}</episode-num>\n')
    parts.append(f'    <rating system="RU"><value>{rng.choice(RATINGS)}</value></rating>\n')
    parts.append("  </programme>\n")
    return "".join(parts)


def programmes(rng: random.Random, channel_id: str, first: dt.datetime, days: int) -> Iterator[str]:
    """One channel's programmes, back to back, from ``first`` for ``days`` days."""
    end = first + dt.timedelta(days=days)
    start = first
    while start < end:
        stop = start + dt.timedelta(minutes=rng.choice(DURATIONS))
        yield programme_xml(rng, channel_id, start, stop)
        start = stop


def write(out: IO[str], channels: int, days: int, first: dt.datetime, seed: int) -> int:
    """Write the whole document; return the number of programmes."""
    rng = random.Random(seed)
    ids = channel_ids(channels)
    out.write('<?xml version="1.0" encoding="UTF-8"?>\n')
    out.write('<!DOCTYPE tv SYSTEM "xmltv.dtd">\n')
    out.write('<tv generator-info-name="catena-xmltv-gen">\n')
    for number, channel_id in enumerate(ids, 1):
        out.write(channel_xml(channel_id, number))
    count = 0
    for channel_id in ids:
        for chunk in programmes(rng, channel_id, first, days):
            out.write(chunk)
            count += 1
    out.write("</tv>\n")
    return count


def open_output(path: Path) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        return gzip.open(path, "wt", encoding="utf-8", compresslevel=5)
    return path.open("w", encoding="utf-8", buffering=1 << 20)


def default_start() -> str:
    # Yesterday: most of the guide lies ahead, so archive pruning keeps it.
    return (dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)).isoformat()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=300)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--start", default=default_start(), help="first day, YYYY-MM-DD (UTC)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-o", "--output", type=Path, required=True, help="*.xml or *.xml.gz")
    args = parser.parse_args(argv)
    first = dt.datetime.fromisoformat(args.start).replace(tzinfo=dt.UTC)
    with open_output(args.output) as out:
        count = write(out, args.channels, args.days, first, args.seed)
    size = args.output.stat().st_size
    print(f"{args.output}: {count} programmes, {size / 1e6:.1f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
