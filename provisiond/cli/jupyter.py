"""``provisionctl kernels``: the Jupyter kernelspecs provisiond wrote (daemon/kernels.py)."""

from __future__ import annotations

import argparse
from typing import Any

from provisiond.cli.client import Client


def cmd_kernels(args: argparse.Namespace) -> Any:
    return Client(args.settings.paths.socket).get("/v1/kernels")


def render_kernels(result: dict[str, Any]) -> str:
    if not result["enabled"]:
        return "kernels are off (the kernels setting); provisiond writes no kernelspecs"
    lines = [f"{k['kernel']}  {k['display_name']}  {k['prefix']}" for k in result["kernels"]]
    if not lines:
        lines.append(f"no kernels in {result['directory']}: no ready env holds ipykernel")
    if result["without_ipykernel"]:
        lines.append(f"without ipykernel (no kernel): {', '.join(result['without_ipykernel'])}")
    return "\n".join(lines)
