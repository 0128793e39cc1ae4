"""Every path of the store and of the per-user state dir, spelled out once (stdlib only, strings).

``settings.Paths`` derives its typed paths from here; provisionctl's fast paths use the string
functions without importing pathlib; the shell hooks get their file names through the
placeholders ``shell.hook_script`` fills in; ``shell/cold-start`` (shipped verbatim into images)
spells the same names, and a test pins it to this module.

Store (``PROVISIOND_HOME``)::

    envs/<env_key[:16]>/            published prefixes; MARKER at the root, written last
    envs/.building/                 builds in progress and trash; emptied at start-up
    pkgs/                           the package cache
    locks/<env_key>.json            the lock of each published env
    logs/build-<id>.log             build logs
    activation/<env_key>/           an env's activation (no secrets)
    activation/names/<name>/        a name's activation: activate.{sh,bash,zsh,fish,json}, NAME_PROJECT
                                    (a project's dir), then NAME_TARGET
    leases/<env_key>.<pid>          a live process uses the env
    state.db, daemon.lock           the registry, and the flock of the daemon serving the store

Per-user state (never inside the store: it holds ``.env`` values and channel credentials)::

    projects/<absolute project path>/.provisiond/   activate.{bash,zsh,fish,sh,json}, STAMP, NOTICE
    credentials.json                                channel credentials (0600)
"""

from __future__ import annotations

import os

ENVS = "envs"
BUILDING = ".building"
PKGS = "pkgs"
LOCKS = "locks"
LOGS = "logs"
ACTIVATION = "activation"
LEASES = "leases"
DB = "state.db"
DAEMON_LOCK = "daemon.lock"
# Inside a prefix, at its root and not in conda-meta/ (conda reads every conda-meta/*.json as a
# package record): a prefix without it is not published.
MARKER = ".provisiond-complete.json"
NAMES = "names"
NAME_TARGET = "env"  # "env_key=…\nprefix=…\n", read first by cold-start with shell builtins
# A project's name: its directory, whose activation (with .env values) `activate NAME` prints.
NAME_PROJECT = "project"

PROJECTS = "projects"
# The leaf under a mirrored project path: a name no real project nests its own project under.
PROJECT_LEAF = ".provisiond"
STAMP = "stamp"  # the activation's generation: rewritten last, only when something changed
NOTICE = "notice"  # "KEY\nLINE\n": what the hook says once about a blocked or failing project
CREDENTIALS = "credentials.json"


def prefix(home: str, env_key: str) -> str:
    """The published prefix of an env: short enough for conda's 255-byte relocation limit."""
    return os.path.join(home, ENVS, env_key[:16])


def lease(home: str, env_key: str, pid: int) -> str:
    """The lease file of ``env_key`` held by process ``pid``."""
    return os.path.join(home, LEASES, f"{env_key}.{pid}")


def name_dir(home: str, name: str) -> str:
    """Where a name's activation lives in the store."""
    return os.path.join(home, ACTIVATION, NAMES, name)


def project_dir(state: str, project: str) -> str:
    """Where a project's activation lives: its absolute path mirrored under ``<state>/projects``."""
    return f"{state}/{PROJECTS}{os.path.abspath(project)}/{PROJECT_LEAF}"  # as the hooks concatenate it
