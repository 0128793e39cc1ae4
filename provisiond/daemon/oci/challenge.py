"""Answering a registry's 401: ``Basic`` sends the login, ``Bearer`` a token for the scope.

A Bearer challenge (``realm``, ``service``, ``scope``) is exchanged at the realm for a token: with
the login as Basic auth, or its ``identitytoken`` as a refresh token, or anonymously. Tokens are
kept per scope for the operation (a ``pull,push`` token serves pulls too). A login is never sent to
a clear-text token service of an HTTPS registry.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp

from provisiond.daemon.oci.auth import Login, Logins
from provisiond.domain.oci import RegistryAuthError, RegistryError, is_loopback

_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class Stats:
    """What one operation asked of the registry (the tests and the progress events read it)."""

    requests: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    by_method: dict[str, int] = field(default_factory=dict)


def login_hint(registry: str) -> str:
    return (f"log in with `docker login {registry}` (or `skopeo login`), or point the "
            "registry_auth_file setting at a docker config.json with a login for it")


class Authorizer:
    """The ``Authorization`` header for a scope, and the answers to the registry's challenges."""

    def __init__(self, session: aiohttp.ClientSession, registry: str, logins: Logins, *, https: bool, ssl: bool,
                 timeout: aiohttp.ClientTimeout, stats: Stats) -> None:
        self.session, self.registry, self.logins = session, registry, logins
        self.https, self.ssl, self.timeout, self.stats = https, ssl, timeout, stats
        self.login: Login | None = None  # resolved at the first challenge (a credential helper may run)
        self._tokens: dict[str, str] = {}  # scope -> bearer token
        self._basic = False  # the registry asked for Basic: send it on every request

    def header(self, scope: str) -> dict[str, str]:
        token = self._tokens.get(scope) or self._tokens.get(scope.replace(":pull", ":pull,push", 1)
                                                            if not scope.endswith(",push") else scope)
        if token:
            return {"Authorization": f"Bearer {token}"}
        if self._basic and self.login is not None:
            return {"Authorization": self.login.basic()}
        return {}

    async def answer(self, challenge: str, scope: str) -> bool:
        """Prepare credentials for a 401's ``WWW-Authenticate``; False when we have nothing new to offer."""
        kind = challenge.split(" ", 1)[0].lower()
        login = self.login = await self.logins.resolve(self.registry)
        if kind == "basic":
            if self._basic:
                return False  # it refused the login we sent
            if login is None:
                raise RegistryAuthError(f"registry {self.registry} asks for a login, and none is configured for it",
                                        hint=login_hint(self.registry))
            self._basic = True
            return True
        if kind == "bearer":
            params = dict(_PARAM.findall(challenge))
            if not params.get("realm"):
                raise RegistryAuthError(f"registry {self.registry}: a Bearer challenge without a realm")
            token = await self._token(params, scope, login)
            self._tokens[scope] = token
            if params.get("scope"):  # what the registry granted it for (often pull,push for a pull)
                self._tokens[params["scope"]] = token
            return True
        return False

    async def _token(self, params: dict[str, str], scope: str, login: Login | None) -> str:
        query = {"scope": params.get("scope") or scope}
        if params.get("service"):
            query["service"] = params["service"]
        headers = {}
        realm = urlsplit(params["realm"])
        if login is not None and realm.scheme != "https" and self.https and not is_loopback(realm.netloc):
            raise RegistryAuthError(f"registry {self.registry}: its token service {realm.netloc} is not HTTPS; "
                                    "the login is not sent in clear text", hint="check the registry's configuration")
        if login is not None and login.identity_token:
            query.update(grant_type="refresh_token", refresh_token=login.identity_token)
        elif login is not None:
            headers["Authorization"] = login.basic()
        url = params["realm"] + ("&" if "?" in params["realm"] else "?") + urlencode(query)
        payload: Any = None
        try:
            async with self.session.get(url, headers=headers, ssl=self.ssl, timeout=self.timeout) as response:
                self.stats.requests += 1
                if response.status in (401, 403):
                    raise RegistryAuthError(f"registry {self.registry}: the token service refused "
                                            + ("our login" if login else "an anonymous request"),
                                            hint=login_hint(self.registry))
                if response.status != 200:
                    raise RegistryError(f"registry {self.registry}: the token service answered {response.status}")
                payload = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise RegistryError(f"registry {self.registry}: cannot get a token: {exc or type(exc).__name__}") from None
        token = payload.get("token") or payload.get("access_token") if isinstance(payload, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"registry {self.registry}: the token service sent no token")
        return token
