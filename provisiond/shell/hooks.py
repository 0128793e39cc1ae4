"""Shell text: the prompt hooks printed by ``provisionctl hook SHELL`` and activation scripts.

``hook.bash``, ``hook.zsh`` and ``hook.fish`` are package data with ``@NAME@`` placeholders that
``hook_script`` fills in: the state dir, the provisionctl command, and the deactivation code that
``render.py`` shares with every activation script.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

from provisiond.config import layout
from provisiond.shell.render import deactivate_body, quote

__all__ = ["HOOK_SHELLS", "hook_script"]

HOOK_SHELLS = ("bash", "zsh", "fish")


def hook_script(shell: str, projects_state: str, ctl: Sequence[str]) -> str:
    """The prompt hook for ``shell``, reading activation under ``projects_state`` and registering with ``ctl``."""
    if shell not in HOOK_SHELLS:
        raise ValueError(f"no hook for shell {shell!r}")
    template = resources.files("provisiond.shell").joinpath(f"hook.{shell}").read_text(encoding="utf-8")
    values = {
        "@STATE@": quote(shell, projects_state.rstrip("/")),
        "@CTL@": " ".join(quote(shell, word) for word in ctl),
        "@DEACTIVATE@": deactivate_body(shell).rstrip("\n"),
        # File names from layout.py: plain words, safe unquoted in every shell.
        "@LEAF@": layout.PROJECT_LEAF, "@STAMP@": layout.STAMP, "@NOTICE@": layout.NOTICE,
    }
    for key, value in values.items():
        template = template.replace(key, value)
    return template
