"""provisionctl: talk to provisiond. Subcommands return data; one renderer prints text or --json."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from provisiond import __version__
from provisiond.cli.client import Client, segment
from provisiond.cli.render import render
from provisiond.config.settings import Settings, load_settings
from provisiond.domain.errors import EnvNotFoundError, ProvisionError

Result = Any


def _client(args: argparse.Namespace) -> Client:
    settings: Settings = args.settings
    return Client(settings.paths.socket)


def _looks_like_path(target: str) -> bool:
    return "/" in target or target in (".", "..") or (os.path.exists(target) and not target.isidentifier())


def _project_name(client: Client, target: str, *, allow: bool = False) -> str:
    """A NAME stays a name; a PATH is registered (idempotent) and becomes its project's name.

    ``allow``: the command is one a user types to build that project (``warm PATH``), so it
    records consent for the project's current content (docs/activation.md, "Trust").
    """
    if not _looks_like_path(target):
        return target
    view = client.post("/v1/projects", {"path": str(Path(target).resolve()), "warm": False, "allow": allow})
    return str(view["name"])


def cmd_watch(args: argparse.Namespace) -> Result:
    return _client(args).post("/v1/projects", {"path": str(Path(args.dir).resolve()), "name": args.name,
                                               "warm": not args.no_warm, "allow": not args.if_allowed})


def _trust_target(path: str) -> str:
    """A file stays a file (a named env's); a directory becomes its project, found by walking up."""
    from provisiond.shell import activation

    if os.path.isfile(path):
        return str(Path(path).resolve())  # the daemon knows whether it is a project's or a named env's
    project = activation.find_project_dir(path)
    if project is None:
        raise EnvNotFoundError(f"{path}: no environment.yml in this directory or above",
                               hint="allow a project directory, or an env's file")
    return str(project.resolve())


def cmd_allow(args: argparse.Namespace) -> Result:
    return _client(args).post("/v1/trust", {"path": _trust_target(args.path)})


def cmd_deny(args: argparse.Namespace) -> Result:
    return _client(args).delete("/v1/trust", path=_trust_target(args.path))


def cmd_allowed(args: argparse.Namespace) -> Result:
    return _client(args).get("/v1/trust")


def cmd_unwatch(args: argparse.Namespace) -> Result:
    target = str(Path(args.target).resolve()) if _looks_like_path(args.target) else args.target
    return _client(args).delete("/v1/projects", project=target)


def _progress_delay() -> float:
    """Seconds before progress shows (PROVISIONCTL_PROGRESS_DELAY, default 0.3): a ready env stays quiet."""
    try:
        return float(os.environ.get("PROVISIONCTL_PROGRESS_DELAY", "0.3"))
    except ValueError:
        return 0.3


def _shows_progress(args: argparse.Namespace) -> bool | None:
    """True: a bar (stderr is a terminal); False: plain lines; None: quiet (--json)."""
    return None if args.json else sys.stderr.isatty()


def cmd_create(args: argparse.Namespace) -> Result:
    from provisiond.cli.progress import with_progress

    client, tty = _client(args), _shows_progress(args)
    body = {"file": str(Path(args.file).resolve()), "name": args.name, "update": args.update, "progress": bool(tty)}
    if tty is None:
        return client.post("/v1/envs", body)
    return with_progress(client, args.name, lambda: client.post("/v1/envs", body), tty=tty,
                         quiet_for=_progress_delay())


def cmd_warm(args: argparse.Namespace) -> Result:
    client, tty = _client(args), _shows_progress(args)
    name = _project_name(client, args.target, allow=True)
    path, body = f"/v1/envs/{segment(name)}/warm", {"update": args.update, "progress": bool(tty)}
    if tty is None:
        return client.post(path, body)
    from provisiond.cli.progress import with_progress

    return with_progress(client, name, lambda: client.post(path, body), tty=tty, quiet_for=_progress_delay())


def cmd_list(args: argparse.Namespace) -> Result:
    return _client(args).get("/v1/envs")


def cmd_show(args: argparse.Namespace) -> Result:
    client = _client(args)
    name = _project_name(client, args.target)
    view = client.get(f"/v1/envs/{segment(name)}")
    if args.lock:
        view["lock"] = client.get(f"/v1/envs/{segment(name)}/lock")
    return view


def cmd_status(args: argparse.Namespace) -> Result:
    return _client(args).get("/v1/status")


def cmd_log(args: argparse.Namespace) -> Result:
    client = _client(args)
    build_id = args.target
    if not build_id.isdigit():
        build_id = client.get(f"/v1/envs/{segment(_project_name(client, build_id))}").get("build_id")
        if build_id is None:
            raise ProvisionError(f"{args.target!r} has no build yet")
    return {"log": client.get(f"/v1/builds/{build_id}/log")}


def cmd_export(args: argparse.Namespace) -> Result:
    client = _client(args)
    name = _project_name(client, args.target)
    query = {"format": args.format}
    if args.no_builds:
        query["no_builds"] = "1"
    if args.from_history:
        query["from_history"] = "1"
    text = client.get(f"/v1/envs/{segment(name)}/export", **query)
    if args.file:
        Path(args.file).write_text(text)
        return {"name": name, "format": args.format, "file": str(Path(args.file).resolve())}
    return {"name": name, "format": args.format, "text": text}


def cmd_clone(args: argparse.Namespace) -> Result:
    client = _client(args)
    return client.post(f"/v1/envs/{segment(_project_name(client, args.source))}/clone", {"target": args.target})


def cmd_remove(args: argparse.Namespace) -> Result:
    client = _client(args)
    return client.delete(f"/v1/envs/{segment(_project_name(client, args.target))}")


def _size(text: str) -> int:
    units = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    number, unit = text.strip().lower().rstrip("ib").rstrip("b"), ""
    if number and number[-1] in units:
        number, unit = number[:-1], number[-1]
    try:
        return int(float(number) * units[unit])
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 500M, 20G)") from None


def cmd_gc(args: argparse.Namespace) -> Result:
    body: dict[str, Any] = {"dry_run": args.dry_run}
    if args.older_than is not None:
        body["older_than_days"] = args.older_than
    if args.cache_budget is not None:
        body["cache_budget_bytes"] = args.cache_budget
    return _client(args).post("/v1/gc", body)


def cmd_daemon(args: argparse.Namespace) -> Result:
    import shutil

    from provisiond.daemon.systemd import install_units

    exe = shutil.which("provisiond") or str(Path(sys.executable).with_name("provisiond"))
    directory = Path(args.dir).expanduser() if args.dir else \
        Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "systemd" / "user"
    return {"units": [str(p) for p in install_units(exe, directory)], "exe": exe}


def _shell(args: argparse.Namespace) -> str:
    """--shell, else the login shell's kind, else POSIX sh."""
    name = args.shell or os.path.basename(os.environ.get("SHELL", ""))
    return name if name in ("bash", "zsh", "fish", "sh", "json") else "sh"


def _ctl_argv(args: argparse.Namespace) -> list[str]:
    """How the hook runs this provisionctl (same install, same store) on its slow path."""
    argv0 = os.path.abspath(sys.argv[0])
    argv = [argv0] if os.path.basename(argv0) == "provisionctl" else [sys.executable, "-m", "provisiond.ctl"]
    for flag in ("home", "socket"):
        if getattr(args, flag):
            argv += [f"--{flag}", str(getattr(args.settings.paths, flag))]
    return argv


def cmd_hook(args: argparse.Namespace) -> Result:
    from provisiond.shell.hooks import hook_script  # stdlib only: the hook is eval'd at every shell start

    return {"script": hook_script(args.shell, str(args.settings.paths.projects_state), _ctl_argv(args))}


def cmd_activate(args: argparse.Namespace) -> Result:
    from provisiond.shell import activation

    shell, paths, target = _shell(args), args.settings.paths, args.target
    if _looks_like_path(target):
        project = activation.find_project_dir(target)
        if project is None:
            raise EnvNotFoundError(f"{target}: no environment.yml in this directory or above",
                                   hint="activate a named env: provisionctl activate NAME")
        target = str(project.resolve())
        script = activation.read_project_activation(paths, target, shell)  # ready: no daemon needed
        if script is not None:
            return {"script": script}
    client = _client(args)
    name = _project_name(client, target)
    view = client.get(f"/v1/envs/{segment(name)}")
    if not view.get("prefix"):
        view = client.post(f"/v1/envs/{segment(name)}/warm", {})
    if view["kind"] == "project" and view.get("source"):
        script = activation.read_project_activation(paths, view["source"], shell)
        if script is not None:
            return {"script": script}
    facts = activation.load_env_facts(paths, view["env_key"], view["prefix"])
    return {"script": activation.render_activation(activation.Activation(name=view["name"], facts=facts), shell)}


def cmd_deactivate(args: argparse.Namespace) -> Result:
    from provisiond.shell import activation

    return {"script": activation.render_deactivation(_shell(args))}


def cmd_run(args: argparse.Namespace) -> Result:
    from provisiond.cli import coldstart  # stdlib only; execs the command, so it returns only by raising

    coldstart.run(args.settings.paths, args.target, args.cmd, is_path=_looks_like_path(args.target))


def cmd_bundle(args: argparse.Namespace) -> Result:
    from provisiond.store.bundle import bundle

    return bundle(args.settings.paths, args.names, Path(args.output))


def cmd_unbundle(args: argparse.Namespace) -> Result:
    from provisiond.store.unbundle import unbundle

    home = Path(os.path.abspath(args.into)) if args.into else args.settings.paths.home
    return unbundle(Path(args.source), home)


def cmd_doctor(args: argparse.Namespace) -> Result:
    from provisiond.store.doctor import doctor  # works on the store itself: the daemon may refuse to start

    return doctor(args.settings.paths, repair=args.repair)


def cmd_check(args: argparse.Namespace) -> Result:
    from provisiond.domain.spec import load_spec  # ruamel + rattler: only this command pays for them

    return load_spec(args.file).to_wire()


# -- argv --------------------------------------------------------------------------------------

def args_watch(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="project directory")
    p.add_argument("-n", "--name", help="env name (default: the file's name:, else the directory name)")
    p.add_argument("--no-warm", action="store_true", help="register only; build on first warm")
    p.add_argument("--if-allowed", action="store_true",
                   help="what the shell hook runs: register only a project already allowed (or under "
                        "trusted_prefixes); never records consent")


def args_unwatch(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="NAME|DIR")


def args_create(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--file", required=True,
                   help="environment.yml, an @EXPLICIT file, conda-lock.yml or pixi.lock")
    p.add_argument("-n", "--name", help="env name (default: the file's name:)")
    p.add_argument("--update", action="store_true", help="re-solve even if a cached solve exists")


def args_warm(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="NAME|PATH")
    p.add_argument("--update", action="store_true", help="re-solve against fresh repodata")


def args_show(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="NAME|PATH")
    p.add_argument("--lock", action="store_true", help="include the resolved packages")


def args_log(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="NAME|PATH|BUILD_ID")


def args_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="NAME|PATH")
    p.add_argument("--format", choices=("yml", "explicit", "conda-lock"), default="yml",
                   help="environment.yml (default), @EXPLICIT, or conda-lock.yml v1")
    p.add_argument("--explicit", dest="format", action="store_const", const="explicit",
                   help="same as --format explicit (as in `conda list --explicit`)")
    p.add_argument("--no-builds", action="store_true", help="name=version only (portable)")
    p.add_argument("--from-history", action="store_true",
                   help="only the specs asked for, with their channels")
    p.add_argument("-f", "--file", help="write to FILE instead of stdout")


def args_clone(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SRC")
    p.add_argument("target", metavar="DST")


def args_remove(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="NAME|PATH")


def args_gc(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="report what would be removed")
    p.add_argument("--older-than", type=float, metavar="DAYS",
                   help="remove unreferenced envs unused for DAYS (default: gc_days, 30)")
    p.add_argument("--cache-budget", type=_size, metavar="SIZE",
                   help="prune the package cache to SIZE, least recently used first (e.g. 20G)")


def args_daemon(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("install-units",))
    p.add_argument("--dir", help="where to write the units (default: ~/.config/systemd/user)")


def args_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="NAME|PATH")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")


def args_bundle(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("-o", "--output", required=True, metavar="DIR|FILE.tar",
                   help="a new directory, or a .tar / .tar.gz file")


def args_unbundle(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="FILE.tar|DIR")
    p.add_argument("--home", dest="into", metavar="H",
                   help="the store to restore into (default: PROVISIOND_HOME); must be the "
                        "path the bundle was built for")


def args_check(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE")


def args_doctor(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repair", action="store_true",
                   help="fix what it found: move a broken state.db aside and rebuild it from the envs, "
                        "locks and activation files; remove leftovers")


def args_hook(p: argparse.ArgumentParser) -> None:
    p.add_argument("shell", choices=("bash", "zsh", "fish"))


def args_activate(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="NAME|PATH")
    p.add_argument("--shell", choices=("bash", "zsh", "fish", "sh", "json"),
                   help="the shell to print for, or json for tools (default: from $SHELL, else sh)")


def args_deactivate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shell", choices=("bash", "zsh", "fish", "sh"),
                   help="the shell to print for (default: from $SHELL, else sh)")


def _args_trust(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", metavar="PATH", nargs="?", default=".",
                   help="a project directory (or a dir inside it), or an env's file (default: .)")


args_allow = args_deny = _args_trust


_HERE = __name__

# name -> (the module holding cmd_NAME and args_NAME [and render_NAME], the one-line help).
# A command's module is imported, and its arguments declared, only when that command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "watch": (_HERE, "register a project directory holding environment.yml and build it in the background "
                         "(this allows its current content)"),
    "unwatch": (_HERE, "forget a project (its env stays in the store for other users of it)"),
    "allow": (_HERE, "trust a project's current environment.yml (channels, pip:, variables:) so the shell "
                         "hook builds and activates it; default: the project around the current directory"),
    "deny": (_HERE, "revoke `allow`: the project stops building and its shells deactivate"),
    "allowed": (_HERE, "list allowed projects and env files, and the trusted_prefixes setting"),
    "create": (_HERE, "create a named env from an environment file, like `conda env create -f`"),
    "warm": (_HERE, "make an env ready (solve, fetch, build) and print its prefix"),
    "lock": ("provisiond.cli.locks", "solve an environment file for each platform and write conda-lock.yml "
                                     "(no download or install); --check for CI"),
    "update": ("provisiond.cli.locks", "update the named packages of an env (the rest stay as locked) and build it"),
    "list": (_HERE, "list envs: name, status, env_key, prefix, projects"),
    "show": (_HERE, "show one env (--lock: its resolved packages)"),
    "status": (_HERE, "daemon status: engine, store, builds in progress, failures"),
    "log": (_HERE, "print the build log of an env (NAME|PATH) or of a build id"),
    "export": (_HERE, "export an env: environment.yml (pinned or --no-builds or --from-history), "
                           "@EXPLICIT, or conda-lock.yml"),
    "clone": (_HERE, "give an env a second name: O(1), no files copied"),
    "remove": (_HERE, "remove a name; its env is deleted only if nothing else uses it"),
    "gc": (_HERE, "remove envs nothing references or uses, and prune the package cache"),
    "daemon": (_HERE, "daemon set-up: `daemon install-units` writes the systemd user units"),
    "run": (_HERE, "run a command in an env: provisionctl run NAME|PATH -- CMD [ARGS...] "
                     "(no daemon needed once the env is ready)"),
    "bundle": (_HERE, "write what an image needs to cold-start envs (env, activation, lock, cold-start)"),
    "unbundle": (_HERE, "restore a bundle into the store at the path it was built for"),
    "doctor": (_HERE, "check the store without the daemon (registry, envs, leftovers); --repair rebuilds "
                           "a broken registry from the disk (stop the daemon first)"),
    "check": (_HERE, "validate an environment file without the daemon (exit 65 on error)"),
    "hook": (_HERE, "print the shell hook: eval \"$(provisionctl hook bash)\" in ~/.bashrc (zsh, fish too)"),
    "activate": (_HERE, "print an activation script: eval \"$(provisionctl activate NAME|PATH)\""),
    "deactivate": (_HERE, "print the script that undoes the active activation: "
                                   "eval \"$(provisionctl deactivate)\""),
}


def _command_in(argv: Sequence[str]) -> str | None:
    """The subcommand argv names, found without argparse (so only its parser is built)."""
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in ("--socket", "--home"):
            skip = True
        elif token == "--":
            return None
        elif token in COMMANDS:
            return token
    return None


def _module(command: str) -> Any:
    import importlib

    return importlib.import_module(COMMANDS[command][0])


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """provisionctl's parser; with ``command``, only that subcommand is declared (the others cost ~2 ms each)."""
    p = argparse.ArgumentParser(
        prog="provisionctl",
        description="Control provisiond: register projects, build and inspect conda environments.",
        epilog="Examples:\n  provisionctl watch ~/work/nlp\n  provisionctl warm nlp-exp\n"
               "  provisionctl create -f other/environment.yml -n tools\n  provisionctl list --json\n\n"
               "Exit codes: 0 ok, 1 doctor found problems, 65 bad environment file, 66 no such env, "
               "69 daemon not running, 70 engine failure, 78 bad configuration or registry.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--socket", help="daemon socket (env PROVISIOND_SOCKET)")
    p.add_argument("--home", help="store root, used to find the default socket (env PROVISIOND_HOME)")
    p.add_argument("--version", action="version", version=f"provisionctl {__version__}")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    common = argparse.ArgumentParser(add_help=False)  # the same flags after the subcommand
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON instead of text")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_module_name, text) in COMMANDS.items():
        if command is None or name == command:
            declare = getattr(_module(name), f"args_{name}", None)  # none: the command takes no arguments
            sub_parser = sub.add_parser(name, parents=[common], help=text, description=text)
            if declare is not None:
                declare(sub_parser)
    return p

class LocalIOError(ProvisionError, code="io-error", http_status=500, exit_code=os.EX_IOERR):
    """provisionctl could not read or write a local file."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser(_command_in(argv)).parse_args(argv)
    try:
        args.settings = load_settings({"home": args.home, "socket": args.socket})
        try:
            result = getattr(_module(args.command), f"cmd_{args.command}")(args)
        except OSError as exc:  # a file argument we cannot read or write (export -f DIR, ...)
            where = f"{exc.filename}: " if exc.filename else ""
            raise LocalIOError(f"{where}{exc.strerror or exc}") from None
    except ProvisionError as exc:
        if args.json:
            print(json.dumps({"error": exc.to_wire()}, indent=2))
        print(f"provisionctl: {exc.message}", file=sys.stderr)
        if exc.hint:
            print(f"hint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    custom = getattr(_module(args.command), f"render_{args.command}", None)
    print(json.dumps(result, indent=2) if args.json else (custom or partial(render, args.command))(result))
    if args.command == "doctor" and not result["ok"]:
        return 1  # like fsck: problems remain
    return 0

