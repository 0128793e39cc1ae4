"""The values an activation is made of: an env's facts (``EnvFacts``) and one activation (``Activation``).

Kept apart from ``activation.py`` (which reads and writes them) so that ``render.py`` can take an
``Activation`` without importing the module that imports it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SCHEME", "Activation", "EnvFacts"]

SCHEME = 1


@dataclass(frozen=True, slots=True)
class EnvFacts:
    """What one published prefix contributes to activation; shared by every name and project using it."""

    env_key: str
    prefix: str
    activation_dir: str
    env_vars: tuple[tuple[str, str], ...] = ()
    # Script kind ("sh" for bash/zsh/posix sh, "fish") -> paths in the order they run.
    activate: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: {"sh": (), "fish": ()})
    deactivate: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: {"sh": (), "fish": ()})
    warnings: tuple[str, ...] = ()

    @property
    def path_prepend(self) -> tuple[str, ...]:
        return (os.path.join(self.prefix, "bin"),)

    def to_wire(self) -> dict[str, Any]:
        return {"scheme": SCHEME, "env_key": self.env_key, "prefix": self.prefix,
                "activation_dir": self.activation_dir, "env_vars": dict(self.env_vars),
                "path_prepend": list(self.path_prepend),
                "scripts": {"activate": {k: list(v) for k, v in self.activate.items()},
                            "deactivate": {k: list(v) for k, v in self.deactivate.items()}},
                "warnings": list(self.warnings)}

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> EnvFacts:
        scripts = data["scripts"]
        return cls(env_key=data["env_key"], prefix=data["prefix"], activation_dir=data["activation_dir"],
                   env_vars=tuple(data["env_vars"].items()),
                   activate={k: tuple(v) for k, v in scripts["activate"].items()},
                   deactivate={k: tuple(v) for k, v in scripts["deactivate"].items()},
                   warnings=tuple(data.get("warnings", ())))


@dataclass(frozen=True, slots=True)
class Activation:
    """One activation: an env's facts under a name, plus a project's ``variables:`` and ``.env`` values."""

    name: str
    facts: EnvFacts
    project: str | None = None
    generation: str = ""
    variables: tuple[tuple[str, str], ...] = ()
    secrets: tuple[tuple[str, str], ...] = ()  # from .env: never logged, never in the store
    prompt: bool = True  # put CONDA_PROMPT_MODIFIER before the shell's prompt (settings.changeps1)

    def env(self) -> dict[str, str]:
        """Every variable set, except PATH and CONDA_SHLVL (computed from the shell's own values)."""
        env = {"CONDA_PREFIX": self.facts.prefix, "CONDA_DEFAULT_ENV": self.name,
               "CONDA_PROMPT_MODIFIER": f"({self.name}) "}
        # Later sources win, as in conda: packages, then the env's state, then the project, then .env.
        for key, value in (*self.facts.env_vars, *self.variables, *self.secrets):
            env[key] = value
        return env

    def to_wire(self) -> dict[str, Any]:
        """The JSON form for tools: apply ``set``, prepend ``path_prepend``, source ``scripts`` with sh."""
        return {"scheme": SCHEME, "name": self.name, "project": self.project, "env_key": self.facts.env_key,
                "prefix": self.facts.prefix, "generation": self.generation,
                # CONDA_SHLVL as seen from a shell with no conda env active.
                "set": {**self.env(), "CONDA_SHLVL": "1"}, "unset": [],
                "path_prepend": list(self.facts.path_prepend),
                # The project's own `variables:` again (also in "set"), so a .env change can re-render.
                "variables": dict(self.variables),
                # Whether a shell activation changes the prompt (a tool may ignore it).
                "prompt": self.prompt,
                "scripts": list(self.facts.activate["sh"]),
                "deactivate_scripts": list(self.facts.deactivate["sh"])}
