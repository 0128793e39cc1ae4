"""``provisionctl check FILE``: an environment file or a lockfile, read as a build would, without the daemon."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def args_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="environment.yml, an @EXPLICIT file, conda-lock.yml or pixi.lock")
    p.add_argument("-e", "--environment", metavar="E", help="a pixi.lock's environment (default: all of them)")


def cmd_check(args: argparse.Namespace) -> dict[str, Any]:
    # ruamel + rattler: only this command pays for them
    from provisiond.domain.checks import check_spec, describe
    from provisiond.domain.errors import SpecError
    from provisiond.domain.lockfiles import kind_of

    path = Path(args.file)
    if kind_of(path) == "spec":
        if args.environment is not None:
            raise SpecError(f"{path}: --environment is for pixi.lock files, not environment files")
        return check_spec(path, default_channels=args.settings.default_channels)
    report = describe(path, args.environment)
    if report["problems"]:
        count = len(report["problems"])
        raise SpecError(f"{path}: {report['format']} file with {count} problem{'s' if count > 1 else ''}:\n"
                        + "\n".join(f"  {p}" for p in report["problems"]),
                        hint="fix the file, or lock it again (provisionctl lock, conda-lock, pixi lock)")
    return report


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
