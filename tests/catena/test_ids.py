from __future__ import annotations

import base64
import random
import struct

import pytest

from catena import ids


def test_manual_example_round_trips() -> None:
    value = ids.decode("pK19SW3AAAE.")
    assert value is not None
    assert struct.pack(">q", value) == base64.b64decode("pK19SW3AAAE=")
    assert ids.encode(value) == "pK19SW3AAAE."


@pytest.mark.parametrize("value", [0, 1, -1, 2**63 - 1, -(2**63), 0x0FB0_FFFF_FFFF, 1 << 40])
def test_round_trip(value: int) -> None:
    text = ids.encode(value)
    assert len(text) == 12 and text.endswith(".")
    assert "+" not in text and "/" not in text and "=" not in text
    assert ids.decode(text) == value


def test_alphabet_substitutions() -> None:
    # 0xfb 0xff ... encodes with '+' and '/' in standard base64.
    value = struct.unpack(">q", bytes([0xFB, 0xFF, 0xBF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF]))[0]
    standard = base64.b64encode(struct.pack(">q", value)).decode()
    assert "+" in standard and "/" in standard
    assert ids.encode(value) == standard.replace("+", "-").replace("/", "_").replace("=", ".")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "pK19SW3AAAE",
        "pK19SW3AAAE=",
        "pK19SW3AAAE..",
        "pK19SW3AAA+.",
        "pK19SW3A AAE.",
        "pK19SW3AAAF.",
        "ÿK19SW3AAAE.",
        None,
        42,
    ],
)
def test_rejects_what_is_not_a_canonical_id(text: object) -> None:
    assert ids.decode(text) is None  # type: ignore[arg-type]


def test_generated_ids_are_unique_ordered_and_carry_time() -> None:
    generator = ids.IdGenerator(7)
    made = [generator.next() for _ in range(20000)]
    assert made == sorted(made) and len(set(made)) == len(made)
    assert all(v > 0 for v in made)
    assert all((v >> 12) & 1023 == 7 for v in made)
    assert abs(ids.timestamp_ms(made[-1]) - ids.timestamp_ms(made[0])) < 5000


def test_text_form_sorts_like_time_for_positive_ids() -> None:
    generator = ids.IdGenerator(1)
    first, second = generator.next(), generator.next()
    assert first < second
    assert ids.decode(ids.encode(first)) == first


def test_node_out_of_range() -> None:
    with pytest.raises(ValueError):
        ids.IdGenerator(1024)


def test_reserved_blocks_are_unique_ordered_and_of_this_node() -> None:
    generator = ids.IdGenerator(7)
    seen: list[int] = []
    while len(seen) < 20_000:
        block = generator.reserve(3000)
        assert 1 <= len(block) <= 3000
        seen.extend(block)
    seen.append(generator.next())
    assert seen == sorted(set(seen))
    assert {(value >> ids.SEQUENCE_BITS) & ids.MAX_NODE for value in seen} == {7}


def test_process_reserve_continues_the_process_sequence() -> None:
    before = ids.new_id()
    block = ids.reserve(10)
    after = ids.new_id()
    assert before < block.start and block.stop - 1 < after and 1 <= len(block) <= 10


def test_the_fast_encoders_agree_with_the_reference_encoding() -> None:
    """encode, encode_many and encode_optional_many against base64 itself, over the whole range."""
    rng = random.Random(3)
    values = [0, 1, -1, 2**63 - 1, -(2**63), *(rng.randint(-(2**63), 2**63 - 1) for _ in range(20_000))]
    reference = [base64.urlsafe_b64encode(struct.pack(">q", v)).decode().replace("=", ".") for v in values]
    assert [ids.encode(v) for v in values] == reference
    assert ids.encode_many(values) == reference and ids.encode_many([]) == []
    holes = [None if n % 3 == 0 else v for n, v in enumerate(values)]
    assert ids.encode_optional_many(holes) == [None if v is None else ids.encode(v) for v in holes]
    assert ids.encode_optional_many([None, None]) == [None, None]
