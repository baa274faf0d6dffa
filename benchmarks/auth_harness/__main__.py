"""``python -m benchmarks.auth_harness``: see ``harness.py`` and docs/bench-auth.md."""

from __future__ import annotations

from .harness import main

main()
