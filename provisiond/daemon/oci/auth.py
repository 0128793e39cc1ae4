"""Registry credentials: docker's config.json (or the file ``registry_auth_file`` names), never logged.

Looked up by registry host[:port] the way docker does: ``auths`` keys may be written as ``HOST``,
``https://HOST`` or ``https://HOST/v1/`` (Docker Hub is ``https://index.docker.io/v1/``); an
entry holds ``auth`` (base64 ``user:password``), or ``username`` and ``password``, or an
``identitytoken`` (an OAuth refresh token, sent to the token endpoint). Without one, the
``credHelpers`` entry for the registry (or ``credsStore``) names a docker credential helper:
``docker-credential-<name> get`` is run with the registry on its stdin, as docker does.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from provisiond.domain.errors import ConfigError

log = logging.getLogger(__name__)

_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


@dataclass(frozen=True, slots=True)
class Login:
    username: str
    password: str
    identity_token: str | None = None

    def __repr__(self) -> str:  # never in a log or a traceback
        return f"Login(username={self.username!r}, password=***)"

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")


def default_auth_files(environ: dict[str, str] | None = None) -> list[Path]:
    """Where docker, podman and skopeo keep logins, in the order we read them."""
    env = os.environ if environ is None else environ
    files = []
    if env.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        files.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    docker = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else Path.home() / ".docker"
    files.append(docker / "config.json")
    return files


class Logins:
    """The logins of one or more docker-style auth files, read on every lookup (a `docker login`
    while the daemon runs is seen at once)."""

    def __init__(self, files: list[Path]) -> None:
        self.files = files

    def _configs(self) -> list[tuple[Path, dict[str, object]]]:
        out = []
        for file in self.files:
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{file}: cannot read the registry logins: {exc}",
                                  hint="fix the file, or log in again (docker login / skopeo login)") from None
            if isinstance(data, dict):
                out.append((file, data))
        return out

    async def resolve(self, registry: str) -> Login | None:
        """``find``, else what the configured credential helper gives for ``registry``."""
        login = self.find(registry)
        if login is not None:
            return login
        for file, data in self._configs():
            helpers = data.get("credHelpers")
            helper = helpers.get(registry) if isinstance(helpers, dict) else None
            helper = helper or data.get("credsStore")
            if isinstance(helper, str) and helper:
                return await _from_helper(helper, registry, file)
        return None

    def find(self, registry: str) -> Login | None:
        for file, data in self._configs():
            auths = data.get("auths")
            if not isinstance(auths, dict):
                continue
            entry = _entry(auths, registry)
            if entry is not None:
                login = _login(entry, file, registry)
                if login is not None:
                    return login
        return None


def _entry(auths: dict[str, object], registry: str) -> dict[str, object] | None:
    keys = [registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/",
            f"https://{registry}/v2/"]
    if registry in ("docker.io", "registry-1.docker.io"):
        keys += list(_HUB_KEYS)
    for key in keys:
        entry = auths.get(key)
        if isinstance(entry, dict):
            return entry
    return None


def _login(entry: dict[str, object], file: Path, registry: str) -> Login | None:
    token = entry.get("identitytoken")
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            user, colon, password = base64.b64decode(str(entry["auth"]), validate=True).decode("utf-8").partition(":")
            if not colon:
                raise ValueError("no ':'")
        except (ValueError, UnicodeDecodeError):
            raise ConfigError(f"{file}: the login of {registry} is not base64 'user:password'",
                              hint="log in again") from None
        return Login(user, password, token if isinstance(token, str) else None)
    if isinstance(entry.get("username"), str):
        return Login(str(entry["username"]), str(entry.get("password") or ""),
                     token if isinstance(token, str) else None)
    if isinstance(token, str):
        return Login("<token>", "", token)
    return None


async def _from_helper(helper: str, registry: str, file: Path) -> Login | None:
    """``docker-credential-<helper> get``, the registry on its stdin; None when it has no login for it."""
    from provisiond.engines._process import run_process

    exe = shutil.which(f"docker-credential-{helper}")
    if exe is None:
        raise ConfigError(f"{file} names the credential helper {helper!r}, and docker-credential-{helper} "
                          "is not on PATH", hint="install it, or log in to write the login into the file")
    # run_process gives children no stdin: a shell hands the helper the registry name.
    result = await run_process(["/bin/sh", "-c", 'printf %s "$1" | "$0" get', exe, registry],
                               on_line=lambda _line: None, timeout=30, env=dict(os.environ), capture_stdout=True)
    if result.returncode != 0:  # "credentials not found in native keychain"
        log.debug("credential helper %s has no login for %s", helper, registry)
        return None
    try:
        data = json.loads(result.stdout)
        user, secret = str(data["Username"]), str(data["Secret"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"docker-credential-{helper} answered something other than its JSON login") from None
    if user == "<token>":  # an identity token, as docker stores them
        return Login("<token>", "", secret)
    return Login(user, secret)
