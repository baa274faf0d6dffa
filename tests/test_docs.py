"""The README stays true: every setting is documented, the quick start is two commands."""

from __future__ import annotations

import re
from pathlib import Path

from catena.settings import PREFIX, AdminSettings, AuthgateSettings, EpgSettings

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = [
        PREFIX + name.upper()
        for cls in (AdminSettings, AuthgateSettings, EpgSettings)
        for name in cls.__struct_fields__
        if PREFIX + name.upper() not in README
    ]
    assert missing == []


def test_quick_start_is_make_up_and_make_test() -> None:
    quick = README.split("## Quick start", 1)[1].split("```", 2)[1]
    commands = [line.split("#")[0].strip() for line in quick.splitlines() if line.split("#")[0].strip()]
    assert commands[-2:] == ["make up", "make test"] and len(commands) == 3 and commands[0] == "sh"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)
