"""``provisionctl check FILE``: an environment file or a lockfile, read as a build would.

With the daemon running, the daemon reads it (``POST /v1/check``: this process imports neither
ruamel nor rattler, ~60 ms of imports); without one, the same code runs here. The answer, the
errors and the exit code are the same either way (``domain/checks.py::check_named``).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any


def args_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="environment.yml, an @EXPLICIT file, conda-lock.yml or pixi.lock")
    p.add_argument("-e", "--environment", metavar="E", help="a pixi.lock's environment (default: all of them)")


def check_body(file: str, environment: str | None) -> dict[str, Any]:
    """What ``POST /v1/check`` takes: the name as given, its absolute path, and the text of a file
    the daemon cannot open (``<(...)``, a FIFO, /dev/stdin), read here once."""
    body: dict[str, Any] = {"file": file, "path": os.path.abspath(file)}
    if environment is not None:
        body["environment"] = environment
    try:
        is_pipe = os.path.exists(file) and not os.path.isfile(file) and not os.path.isdir(file)
    except ValueError:  # a NUL in the name: the check says so
        is_pipe = False
    if is_pipe:
        from provisiond.domain.text import decode

        try:
            with open(file, "rb") as f:
                data = f.read()
        except OSError:
            return body  # the check says what is wrong with the path
        body["content"] = decode(data, file)
    return body


def cmd_check(args: argparse.Namespace) -> dict[str, Any]:
    from provisiond.cli.commands import _client
    from provisiond.domain.errors import DaemonUnavailableError, RouteNotFoundError

    body = check_body(args.file, args.environment)
    try:
        return _client(args).post("/v1/check", body)
    except (DaemonUnavailableError, RouteNotFoundError):  # no daemon, or one from before /v1/check
        pass
    # ruamel + rattler: only a check without the daemon pays for them
    from provisiond.domain.checks import check_named

    return check_named(body["file"], body["path"], body.get("content"), args.environment,
                       args.settings.default_channels)


def render_check(result: dict[str, Any]) -> str:
    if "format" not in result:
        from provisiond.cli.render import render_spec

        text = render_spec(result)
        if result.get("resolved_channels") is not None and result["resolved_channels"] != result["channels"]:
            text += "\n# channels, as solved: " + ", ".join(result["resolved_channels"] or ["none"])
        return text
    lines = [f"# {result['file']}: ok, {result['format']}"]
    if result["environments"]:
        lines.append(f"environments: {', '.join(result['environments'])}")
    lines.append(f"platforms: {', '.join(result['platforms'])}")
    for entry in result["packages"]:
        where = f"{entry['environment']} / " if entry["environment"] else ""
        pypi = f", {entry['pypi']} PyPI" if entry["pypi"] else ""
        lines.append(f"  {where}{entry['platform']}: {entry['conda']} conda packages{pypi}, "
                     f"env_key {entry['env_key'][:16]}")
    return "\n".join(lines)
