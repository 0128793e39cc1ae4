"""``python -m provisiond.cli`` behaves like the console script, fast paths and os._exit included."""

from provisiond.cli.entry import run

run()
