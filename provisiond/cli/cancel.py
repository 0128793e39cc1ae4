"""``provisionctl cancel NAME|PATH``: stop the builds a name is waiting for (``POST /v1/envs/NAME/cancel``).

What Ctrl-C during ``warm`` points to: the daemon goes on building when the client goes away, and
this stops it. Nothing is replaced: the name keeps the env it had.
"""

from __future__ import annotations

from provisiond.cli.client import segment
from provisiond.cli.commands import _client, _project_name

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any


def args_cancel(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="NAME|PATH")


def cmd_cancel(args: argparse.Namespace) -> Any:
    client = _client(args)
    name = _project_name(client, args.target)
    return client.post(f"/v1/envs/{segment(name)}/cancel", {})


def render_cancel(result: dict[str, Any]) -> str:
    if not result["cancelled"]:
        return f"{result['name']}: no build running, nothing to cancel"
    ids = ", ".join(str(i) for i in result["cancelled"])
    return f"{result['name']}: cancelled build {ids}; the env it had stays"
