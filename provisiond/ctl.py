"""``python -m provisiond.ctl``: the argv a shell hook bakes in when provisionctl is not on PATH.

Hooks already eval'd in running shells keep calling this name, so it stays; the entry point itself
is ``provisiond.cli.entry`` (stdlib only, like this file).
"""

from provisiond.cli.entry import run

if __name__ == "__main__":
    run()
