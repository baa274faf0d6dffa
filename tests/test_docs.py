"""The README and docs stay true: every setting is documented, the quick start is two
commands, the content walkthrough leaves no files in the repository."""

from __future__ import annotations

import re
from pathlib import Path

from catena.settings import PREFIX, AdminSettings, AuthgateSettings, EpgSettings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
# Where a shell command writes a file: curl's -o/--output, a > or >> redirection.
_WRITES = re.compile(r"(?:--output|(?<![\w-])-o|(?<![\d&])>>?)\s*([^\s|;)&]+)")


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
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)


def test_content_walkthrough_leaves_no_files_in_the_repository() -> None:
    text = (ROOT / "docs" / "content.md").read_text()
    walkthrough = text.split("## Walkthrough with curl", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    targets = [m.group(1) for line in walkthrough.splitlines() for m in _WRITES.finditer(line)]
    assert targets and all(t == "/dev/null" or t.startswith('"$SCRATCH/') for t in targets), targets
    assert "SCRATCH=$(mktemp -d)" in walkthrough and 'rm -r "$SCRATCH"' in walkthrough
