"""provisionctl: talk to provisiond. Subcommands return data; one renderer prints text or --json."""

from __future__ import annotations

import os
import sys

from provisiond import __version__
from provisiond.cli import argv as cli_argv
from provisiond.cli.client import Client, segment
from provisiond.domain.errors import EnvNotFoundError, ProvisionError

# Every command starts this module: what it imports at the top, each command pays (typing, argparse,
# json, pathlib and dataclasses cost 2-10 ms each, against ~11 ms for Python itself). Import inside
# the command that needs it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Sequence
    from typing import Any

    Result = Any


def _client(args: argparse.Namespace) -> Client:
    socket_path = getattr(args, "socket_path", None)  # argv.Args; a plain Namespace brings its settings
    return Client(socket_path() if socket_path is not None else args.settings.paths.socket)


def _looks_like_path(target: str) -> bool:
    return "/" in target or target in (".", "..") or (os.path.exists(target) and not target.isidentifier())


def _project_dir(path: str) -> str:
    """The project a path means: the nearest directory at or above it holding an environment file
    (as ``run .`` and ``activate .`` find it), by its real path; a file stays that file."""
    from provisiond.config.locations import SPEC_FILES

    real = os.path.realpath(path)
    if os.path.isfile(real):
        return real
    directory = real
    while not any(os.path.isfile(os.path.join(directory, f)) for f in SPEC_FILES):
        if directory == "/":
            raise EnvNotFoundError(f"{path}: no environment.yml in this directory or above",
                                   hint="give a project directory, or an env's NAME (provisionctl list)")
        directory = os.path.dirname(directory)
    return directory


def _project_name(client: Client, target: str, *, allow: bool = False) -> str:
    """A NAME stays a name; a PATH is registered (idempotent) and becomes its project's name.

    ``allow``: the command is one a user types to build that project (``warm PATH``), so it
    records consent for the project's current content (docs/activation.md, "Trust").
    """
    if not _looks_like_path(target):
        return target
    view = client.post("/v1/projects", {"path": _project_dir(target), "warm": False, "allow": allow})
    return str(view["name"])


def cmd_watch(args: argparse.Namespace) -> Result:
    return _client(args).post("/v1/projects", {"path": os.path.realpath(args.dir), "name": args.name,
                                               "warm": not args.no_warm, "allow": not args.if_allowed})


def _trust_target(path: str) -> str:
    """A file stays a file (a named env's); a directory becomes its project, found by walking up."""
    from provisiond.shell import activation

    if os.path.isfile(path):
        return os.path.realpath(path)  # the daemon knows whether it is a project's or a named env's
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
    target = os.path.realpath(args.target) if _looks_like_path(args.target) else args.target
    return _client(args).delete("/v1/projects", project=target)


def _progress_delay() -> float:
    """Seconds before progress shows (PROVISIONCTL_PROGRESS_DELAY, default 0.3): a ready env stays quiet."""
    try:
        return float(os.environ.get("PROVISIONCTL_PROGRESS_DELAY", "0.3"))
    except ValueError:
        return 0.3


def _shows_progress(args: argparse.Namespace) -> bool | None:
    """True: a bar (stderr is a terminal); False: plain lines; None: quiet (--json, -q)."""
    return None if args.json or args.quiet else sys.stderr.isatty()


def _build(client: Client, name: str | None, request: Callable[[], Result], args: argparse.Namespace) -> Result:
    """Run a blocking warm/create, with progress unless quiet; Ctrl-C says the build goes on."""
    tty = _shows_progress(args)
    if tty is None:
        try:
            return request()
        except KeyboardInterrupt:
            from provisiond.cli.progress import interrupted

            raise interrupted(name) from None
    from provisiond.cli.progress import with_progress

    return with_progress(client, name, request, tty=tty, quiet_for=_progress_delay())


def _file_body(file: str) -> dict[str, str]:
    """A regular file goes by path (the daemon reads it, and a file env follows later edits); any
    other (``<(...)``, a FIFO, /dev/stdin) by its text: the daemon cannot open the CLI's pipes."""
    import stat

    real = os.path.realpath(file)  # /dev/fd/63 resolves to "/proc/PID/fd/pipe:[N]": stat the name given
    try:
        if stat.S_ISREG(os.stat(file).st_mode):
            return {"file": real}
    except OSError:
        pass  # the daemon says what is wrong with the path
    else:
        with open(file, encoding="utf-8") as f:
            return {"file": file, "content": f.read()}
    return {"file": real}


def _name_in(body: dict[str, str]) -> str | None:
    """The ``name:`` of an environment file, read without a YAML parser: which build the progress
    line follows when there is no ``-n`` (a wrong guess only means no progress line)."""
    try:
        if "content" in body:
            text = body["content"][:65536]
        else:
            with open(body["file"], encoding="utf-8", errors="replace") as f:
                text = f.read(65536)
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("name:"):
            value = line[5:].split(" #", 1)[0].strip().strip("\"'")
            return value or None
    return None


def cmd_create(args: argparse.Namespace) -> Result:
    client = _client(args)
    body = {**_file_body(args.file), "name": args.name, "update": args.update, "force": args.force,
            "progress": bool(_shows_progress(args))}
    if args.environment is not None:
        body["environment"] = args.environment
    name = args.name or (_name_in(body) if _shows_progress(args) is not None else None)
    return _build(client, name, lambda: client.post("/v1/envs", body), args)


def cmd_warm(args: argparse.Namespace) -> Result:
    client = _client(args)
    name = _project_name(client, args.target, allow=True)
    path, body = f"/v1/envs/{segment(name)}/warm", {"update": args.update, "progress": bool(_shows_progress(args))}
    return _build(client, name, lambda: client.post(path, body), args)


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
        from pathlib import Path

        Path(args.file).write_text(text)
        return {"name": name, "format": args.format, "file": os.path.realpath(args.file)}
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
        import argparse

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
    from pathlib import Path

    from provisiond.config.units import unit_dir
    from provisiond.daemon.systemd import install_units

    exe = shutil.which("provisiond") or str(Path(sys.executable).with_name("provisiond"))
    directory = Path(args.dir).expanduser() if args.dir else Path(unit_dir(os.environ))
    socket = str(args.settings.paths.socket)  # the one provisionctl uses: the units listen there
    return {"units": [str(p) for p in install_units(exe, directory, socket, os.environ)], "exe": exe,
            "socket": socket}


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
    directory = activation.name_activation_dir(paths, view["name"])
    if directory is not None and activation.target_of_name(paths, view["name"]) == (view["env_key"], view["prefix"]):
        try:  # what the fast path prints (cli/entry.py): the name's script, with its `variables:`
            return {"script": (directory / f"activate.{shell}").read_text(encoding="utf-8")}
        except FileNotFoundError:
            pass  # a store from before these files: rendered here
    facts = activation.load_env_facts(paths, view["env_key"], view["prefix"])
    variables = activation.name_variables(paths, view["name"])  # a file env's `variables:`, as `run` exports them
    act = activation.Activation(name=view["name"], facts=facts, variables=variables, prompt=args.settings.changeps1)
    return {"script": activation.render_activation(act, shell)}


def cmd_deactivate(args: argparse.Namespace) -> Result:
    from provisiond.shell import activation

    return {"script": activation.render_deactivation(_shell(args))}


def cmd_run(args: argparse.Namespace) -> Result:
    from provisiond.cli import coldstart  # stdlib only; execs the command, so it returns only by raising

    coldstart.run(args.settings.paths, args.target, args.cmd, is_path=_looks_like_path(args.target))


def cmd_bundle(args: argparse.Namespace) -> Result:
    from pathlib import Path

    from provisiond.store.bundle import bundle

    return bundle(args.settings.paths, args.names, Path(args.output))


def cmd_unbundle(args: argparse.Namespace) -> Result:
    from pathlib import Path

    from provisiond.store.unbundle import unbundle

    home = Path(os.path.abspath(args.into)) if args.into else args.settings.paths.home
    return unbundle(Path(args.source), home)


def cmd_doctor(args: argparse.Namespace) -> Result:
    from provisiond.store.doctor import doctor  # works on the store itself: the daemon may refuse to start

    return doctor(args.settings.paths, repair=args.repair)


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
    p.add_argument("-e", "--environment", metavar="E", help="the environment of a pixi.lock (default: 'default')")
    p.add_argument("--force", action="store_true",
                   help="replace an env of that name (served until the new one is ready; kept if this fails)")


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
    p.add_argument("cmd", nargs=cli_argv.REMAINDER, metavar="-- CMD [ARGS...]")


def args_bundle(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("-o", "--output", required=True, metavar="DIR|FILE.tar",
                   help="a new directory, or a .tar / .tar.gz file")


def args_unbundle(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="FILE.tar|DIR")
    p.add_argument("--home", dest="into", metavar="H",
                   help="the store to restore into (default: PROVISIOND_HOME); must be the "
                        "path the bundle was built for")


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
    "push": ("provisiond.cli.oci", "push an env to an OCI registry: one blob per package, the lock as config"),
    "pull": ("provisiond.cli.oci", "pull an env pushed with `push` and build it offline, same env_key"),
    "image": ("provisiond.cli.oci", "write a runnable OCI image (base + env + cold-start) to a registry"),
    "check": ("provisiond.cli.check", "validate an environment file or a lockfile without the daemon "
                                      "(exit 65 on error)"),
    "hook": (_HERE, "print the shell hook: eval \"$(provisionctl hook bash)\" in ~/.bashrc (zsh, fish too)"),
    "activate": (_HERE, "print an activation script: eval \"$(provisionctl activate NAME|PATH)\""),
    "cancel": ("provisiond.cli.cancel", "stop the builds of a name (what Ctrl-C during warm leaves running)"),
    "completion": ("provisiond.cli.completion", "print shell completion for bash, zsh or fish: "
                                                "eval \"$(provisionctl completion bash)\""),
    "deactivate": (_HERE, "print the script that undoes the active activation: "
                                   "eval \"$(provisionctl deactivate)\""),
    "kernels": ("provisiond.cli.jupyter", "list the Jupyter kernelspecs written for envs holding ipykernel"),
    "sbom": ("provisiond.cli.sbom", "write an SBOM of an env: CycloneDX (default) or SPDX JSON, with purls, hashes "
                                    "and licenses"),
    "audit": ("provisiond.cli.audit", "match the packages of live envs against an OSV vulnerability database "
                                      "(--fail-on SEVERITY: exit 1 when a finding reaches it)"),
}


def _command_in(argv: Sequence[str]) -> int | None:
    """The index of the subcommand in argv, found without argparse (so only its parser is built)."""
    skip = False
    for i, token in enumerate(argv):
        if skip:
            skip = False
        elif token in ("--socket", "--home"):
            skip = True
        elif token == "--" or not token.startswith("-"):
            return i if token in COMMANDS else None
    return None


def _module(command: str) -> Any:
    name = COMMANDS[command][0]
    __import__(name)  # importlib itself costs ~0.5 ms
    return sys.modules[name]


def parser(command: str | None = None) -> argparse.ArgumentParser:
    """provisionctl's argparse parser; with ``command``, only that subcommand is declared (the others
    cost ~2 ms each). Only help, errors and unusual forms get here: argv.py reads the usual ones."""
    import argparse

    p = argparse.ArgumentParser(
        prog="provisionctl",
        description="Control provisiond: register projects, build and inspect conda environments.",
        epilog="Examples:\n  provisionctl watch ~/work/nlp\n  provisionctl warm nlp-exp\n"
               "  provisionctl create -f other/environment.yml -n tools\n  provisionctl list --json\n\n"
               "--json, -q and -v go before or after the command. Shell completion: "
               "provisionctl completion bash|zsh|fish\n\n"
               "Exit codes: 0 ok, 1 doctor found problems or an audit finding reached --fail-on, "
               "65 bad environment file, 66 no such env, "
               "69 daemon not running, 70 engine failure, 78 bad configuration or registry.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cli_argv.declare_globals(p, top=True)
    p.add_argument("--version", action="version", version=f"provisionctl {__version__}")
    common = argparse.ArgumentParser(add_help=False)  # the same flags after the subcommand
    cli_argv.declare_globals(common, top=False)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_module_name, text) in COMMANDS.items():
        if command is None or name == command:
            declare = getattr(_module(name), f"args_{name}", None)  # none: the command takes no arguments
            sub_parser = sub.add_parser(name, parents=[common], help=text, description=text)
            if declare is not None:
                declare(sub_parser)
    return p


def parse(argv: Sequence[str]) -> Any:
    """argv as a namespace (an ``argv.Args``): by argv.py when it can, else by argparse, which also
    prints help and usage errors (SystemExit). After a REMAINDER argument's ``--`` (``run NAME --
    CMD``), nothing is parsed: the words go to it as they are."""
    argv = list(argv)
    at = _command_in(argv)
    if at is None:
        if "--version" in argv and all(t.startswith("-") for t in argv):
            print(f"provisionctl {__version__}")
            raise SystemExit(0)
        return parser().parse_args(argv, namespace=cli_argv.Args())  # help, or argparse's usage error
    command, top, rest = argv[at], argv[:at], argv[at + 1:]
    light = cli_argv.Parser()
    cli_argv.declare_globals(light, top=False)
    declare = getattr(_module(command), f"args_{command}", None)
    if declare is not None:
        declare(light)
    remainder = next((p.dest for p in light.positionals if p.nargs == cli_argv.REMAINDER), None)
    passthrough = None
    if remainder is not None and "--" in rest:
        passthrough = rest[rest.index("--") + 1:]
        rest = rest[:rest.index("--")]
        # Before the --, options are options (run NAME --json -- CMD): the REMAINDER takes nothing.
        light.positionals = [p for p in light.positionals if p.nargs != cli_argv.REMAINDER]
    try:
        if "--version" in top:
            raise cli_argv.Fallback
        top_parser = cli_argv.Parser()
        cli_argv.declare_globals(top_parser, top=True)
        args = top_parser.parse(top, cli_argv.Args(command=command))
        light.parse(rest, args)
    except cli_argv.Fallback:
        args = parser(command).parse_args([*top, command, *rest], namespace=cli_argv.Args())
    if passthrough is not None:
        setattr(args, remainder, passthrough)  # type: ignore[arg-type]  # not None: found above
    return args


class LocalIOError(ProvisionError, code="io-error", http_status=500, exit_code=os.EX_IOERR):
    """provisionctl could not read or write a local file."""


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    try:
        try:
            result = getattr(_module(args.command), f"cmd_{args.command}")(args)
        except OSError as exc:  # a file argument we cannot read or write (export -f DIR, ...)
            where = f"{exc.filename}: " if exc.filename else ""
            raise LocalIOError(f"{where}{exc.strerror or exc}") from None
    except ProvisionError as exc:
        from provisiond.cli.errors import report

        return report(exc, as_json=args.json, verbose=args.verbose or 0)
    from provisiond.cli import jsontext

    if args.json:
        text = jsontext.dumps(result, indent=2)
    else:
        custom = getattr(_module(args.command), f"render_{args.command}", None)
        if custom is None:
            from provisiond.cli.render import render

            text = render(args.command, result)
        else:
            text = custom(result)
    print(text)
    if args.command == "doctor" and not result["ok"]:
        return 1  # like fsck: problems remain
    status = getattr(_module(args.command), f"exit_{args.command}", None)  # a result that is a failure
    return status(result) if status is not None else 0

