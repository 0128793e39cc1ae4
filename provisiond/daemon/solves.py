"""The solve cache in front of the ``Locker``: a spec's lock from the cache while it is fresh,
else one solve per spec_key.

Every caller of a spec_key awaits the same task (``builder.shared``), so a caller that goes away
does not cancel the solve for the others; only shutdown does (``close``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Mapping

from provisiond.config.channels import effective_spec
from provisiond.config.settings import Settings
from provisiond.daemon.builder import shared
from provisiond.daemon.inputs import local_contents, with_contents
from provisiond.daemon.locking import Locker
from provisiond.domain.errors import EngineError, OfflineError, ShuttingDownError, SolveError
from provisiond.domain.lock import Lock
from provisiond.domain.spec import EnvSpec, spec_key
from provisiond.engines.base import Engine
from provisiond.engines.pip import inputs_key, resolver_settings
from provisiond.store.store import Store

log = logging.getLogger(__name__)


class Solves:
    """The solve cache's use, and the solves in flight (``_solves``: one per spec_key)."""

    def __init__(self, store: Store, engine: Engine, settings: Settings, locker: Locker) -> None:
        self.store = store
        self.engine = engine
        self.settings = settings  # replaced on SIGHUP (Lifecycle.apply)
        self.locker = locker
        self._solves: dict[str, asyncio.Task[Lock]] = {}
        self._closing = False

    def close(self) -> list[asyncio.Task[Lock]]:
        """No new solves from now on; the solves in flight, for the caller to cancel and await."""
        self._closing = True
        return list(self._solves.values())

    def spec_key(self, spec: EnvSpec, contents: Mapping[str, str] | None = None) -> str:
        """The solve-cache key: the spec plus everything of this daemon that changes its answer.

        ``contents``: the digests of the local projects the pip section installs (``inputs.local_contents``),
        so that editing one re-resolves and makes a new env.
        """
        spec = effective_spec(spec, self.settings)  # .condarc's channels (config/channels.py)
        engine = self.engine
        key = spec_key(spec, engine.platform, engine.virtual_packages(), channels=engine.channel_urls(spec),
                       engine=engine.version(), pip=resolver_settings() if spec.pip else ())
        if contents:
            key = hashlib.sha256(f"{key}\0{json.dumps(sorted(contents.items()))}".encode()).hexdigest()
        return inputs_key(spec, key) if spec.pip else key  # an edited -r file must re-resolve

    async def resolve(self, spec: EnvSpec, *, update: bool = False, contents: Mapping[str, str] | None = None,
                      previous: Lock | None = None, update_names: tuple[str, ...] = ()) -> Lock:
        """The spec's lock: from the solve cache unless expired or ``update``; one solve per spec_key.

        ``previous`` (the env's current lock) is kept when it still satisfies the spec, else
        preferred by the solve (locking.py); ``update_names`` re-locks those, the rest preferred.
        ``contents``: the digests of the local pip projects (``inputs.local_contents``).
        """
        spec = effective_spec(spec, self.settings)
        if contents is None:
            contents = (await asyncio.to_thread(local_contents, spec))[0] if spec.pip else {}
        key = self.spec_key(spec, contents)
        if not update and not update_names:
            cached = self.store.cached_lock(key, self.settings.solve_ttl)
            if cached is not None:
                return cached
        task = self._solves.get(key) if not update_names else None
        if task is None:
            if self._closing:
                raise ShuttingDownError("provisiond is shutting down: no new solves",
                                        hint="run the command again once provisiond is back")
            task = asyncio.create_task(self._solve(key, spec, update, contents, previous, update_names))
            if not update_names:
                self._solves[key] = task
                task.add_done_callback(lambda _t: self._solves.pop(key, None))
        return await shared(task)

    async def _solve(self, key: str, spec: EnvSpec, update: bool, contents: Mapping[str, str],
                     previous: Lock | None, update_names: tuple[str, ...]) -> Lock:
        started = time.perf_counter()
        if self.settings.mirrors and not self.settings.offline and hasattr(self.engine, "repodata_sources"):
            # A mirrored channel's repodata from its OCI mirror (daemon/oci/mirror.py)
            from provisiond.daemon.oci.mirror import sync_repodata

            await sync_repodata(self.settings, self.engine, spec)
        # Repodata older than the solve TTL is checked again: a channel's new versions show up.
        try:
            lock = await self.locker.relock(spec, previous, update=update, update_names=update_names)
        except (EngineError, SolveError) as exc:
            if not self.settings.offline or isinstance(exc, OfflineError):
                raise
            raise OfflineError(f"offline, with cached repodata only: {exc.message}",
                               hint="connect and set offline = false (or start provisiond without --offline)") from exc
        if spec.pip:
            lock = with_contents(lock, contents)
        self.store.cache_lock(key, lock)
        log.info("locked %s: %d packages in %.1f ms (env %s)", spec.source or "spec", len(lock.packages),
                 (time.perf_counter() - started) * 1000, lock.env_key[:16])
        return lock
