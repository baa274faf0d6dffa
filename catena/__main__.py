"""``python -m catena``: the same as the ``catena`` command."""

from .cli import main

main()
