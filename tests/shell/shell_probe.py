"""Reading a shell's variables from the outside, for the activation and hook tests."""

from __future__ import annotations

from pathlib import Path


def dump(shell: str, names: list[str], file: Path) -> str:
    """Shell code (builtins only) writing each variable's value, or <unset>, NUL-terminated to ``file``."""
    if shell == "fish":
        return (f"begin; for v in {' '.join(names)}; if set -q $v; printf '%s\\0' \"$$v\"; "
                f"else; printf '%s\\0' '<unset>'; end; end; end > '{file}'")
    return "printf '%s\\0' " + " ".join(f'"${{{n}-<unset>}}"' for n in names) + f" > '{file}'"


def read_values(file: Path, names: list[str]) -> dict[str, str]:
    return dict(zip(names, file.read_bytes().decode().split("\0")[:-1], strict=True))


def environ(file: Path) -> list[bytes]:
    """An `env -0` snapshot, sorted (fish exports in its own order), without OLDPWD and _ (the shell's)."""
    return sorted(e for e in file.read_bytes().split(b"\0")[:-1] if not e.startswith((b"OLDPWD=", b"_=")))
