"""Text rendering of provisionctl results; with --json the result itself is printed instead."""

from __future__ import annotations

import json
from typing import Any

Result = Any


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows])


def render_env(view: dict[str, Any]) -> str:
    lines = [f"{view['name']}: {view['status']}"]
    for key in ("kind", "source", "env_key", "prefix", "build_id"):
        if view.get(key) is not None:
            lines.append(f"  {key}: {view[key]}")
    if view.get("projects"):
        lines.append(f"  projects: {', '.join(view['projects'])}")
    if view.get("error"):
        serving = " (the previous env is still served)" if view.get("prefix") else ""
        lines.append(f"  last error{serving}: {view['error']}")
    if "lock" in view:
        for p in view["lock"]["packages"]:
            lines.append(f"  {p['name']}={p['version']}={p['build']}  {p['url']}")
        for p in view["lock"].get("pip", ()):  # installed with uv after the conda packages
            pin = f"{p['name']}=={p['version']}" if p["version"] else p["name"]
            lines.append(f"  pip: {pin}  " + (f"-e {p['editable']}" if p.get("editable") else p["url"]))
    return "\n".join(lines)


def render_spec(spec: dict[str, Any]) -> str:
    """The normalised spec as environment.yml text (JSON scalars are valid YAML), then warnings."""
    out = [f"# {spec['source']}: ok"] if spec.get("source") else []
    if spec.get("name"):
        out.append(f"name: {json.dumps(spec['name'])}")
    channels = [*spec["channels"], *(["nodefaults"] if spec.get("nodefaults") else [])]
    out += ["channels:", *[f"  - {json.dumps(c)}" for c in channels]]
    if spec.get("channel_priority", "strict") != "strict":
        out.append(f"channel_priority: {spec['channel_priority']}")
    out += ["dependencies:", *[f"  - {json.dumps(d)}" for d in spec["dependencies"]]]
    if spec.get("pip"):
        out += ["  - pip:", *[f"      - {json.dumps(p)}" for p in spec["pip"]]]
    if spec.get("variables"):
        out += ["variables:", *[f"  {k}: {json.dumps(v)}" for k, v in spec["variables"].items()]]
    return "\n".join(out + [f"warning: {w}" for w in spec.get("warnings", [])])


def render_doctor(report: dict[str, Any]) -> str:
    reg = report["registry"]
    counts = f", {reg['envs']} envs, {reg['names']} names" if "envs" in reg else ""
    version = f" (schema version {reg['version']}{counts})" if reg["version"] is not None else ""
    lines = [f"store {report['store']}: registry {reg['status']}{version}"]
    repaired = report.get("repaired")
    if repaired:
        lines += [f"repaired: moved {m} aside" for m in repaired["moved_aside"]]
        lines.append(f"repaired: {repaired['envs']} envs in the registry")
        lines += [f"repaired: forgot env {k[:16]} (its prefix is incomplete)" for k in repaired["forgotten_envs"]]
        if repaired["projects"] or repaired["names"]:
            lines.append(f"repaired: restored projects {', '.join(repaired['projects']) or '-'}; "
                         f"names {', '.join(repaired['names']) or '-'}")
        lines += [f"skipped: {s}" for s in repaired["skipped"]]
        if repaired["projects"]:
            lines.append("note: consent is not restored: run 'provisionctl allow DIR' (or warm DIR) per project")
    for p in report["problems"]:
        fix = "" if p["repairable"] else " (not repairable)"
        lines.append(f"problem: {p['kind']}: {p['path']}: {p['message']}{fix}")
    if report["ok"]:
        lines.append("ok: no problems found")
    elif any(p["repairable"] for p in report["problems"]):
        lines.append("fix: stop the daemon, then run: provisionctl doctor --repair")
    return "\n".join(lines)


def _setting_sources(settings: Result) -> list[str]:
    """One line per setting that is not at its default: its value and where it came from
    (a flag, the environment, config.toml, a .condarc file)."""
    lines = []
    for key, source in sorted(settings.get("sources", {}).items()):
        value = settings.get(key, "")
        if isinstance(value, list):
            value = ", ".join(value) or "(none)"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "(none)"
        elif isinstance(value, bool):
            value = str(value).lower()
        lines.append(f"  {key}: {value} (from {source})")
    if settings.get("offline"):
        lines.append("  offline: solving from cached repodata, installing cached packages only")
    return lines


def render(command: str, result: Result) -> str:
    if command == "warm":
        return result.get("prefix") or render_env(result)
    if command in ("watch", "unwatch", "create", "show"):
        return render_env(result)
    if command == "list":
        rows = [[e["name"], e["status"], (e["env_key"] or "-")[:16], e["prefix"] or "-",
                 ", ".join(e["projects"]) or "-"] for e in result["envs"]]
        return _table(rows, ["NAME", "STATUS", "ENV_KEY", "PREFIX", "PROJECTS"]) if rows else \
            "no envs yet (provisionctl watch DIR, or provisionctl create -f FILE)"
    if command == "status":
        lines = [f"provisiond {result['version']} (pid {result['pid']}) on {result['socket']}",
                 f"engine: {result['engine_version']} ({result['platform']})",
                 f"store: {result['store']} ({result['store_envs']} envs, {result['envs']} names, "
                 f"{result['projects']} projects)"]
        if "settings" in result:
            lines.append(f"config: {result['settings']['config_file'] or 'none'}; "
                         f"log: {result['settings']['log_file'] or 'stderr'}")
            lines += _setting_sources(result["settings"])
        lines += [f"building: {b['name'] or b['env_key'][:16]} (build {b['id']})" for b in result["builds_running"]]
        lines += [f"failed: {f['name']}: {f['error']}" for f in result["failed"]]
        return "\n".join(lines)
    if command == "export":
        return result["text"].rstrip("\n") if "text" in result else f"wrote {result['file']}"
    if command == "clone":
        return render_env(result)
    if command == "remove":
        kept = "its env was deleted" if result["env_deleted"] else "its env is kept (still used, or none)"
        return f"removed {result['name']}; {kept}"
    if command == "gc":
        verb = "would free" if result["dry_run"] else "freed"
        lines = [f"{'would remove' if result['dry_run'] else 'removed'} env {e['env_key'][:16]} "
                 f"({_human(e['bytes'])})" for e in result["envs"]]
        lines += [f"{'would drop' if result['dry_run'] else 'dropped'} cached {p['package']} ({_human(p['bytes'])})"
                  for p in result["packages"]]
        lines += [f"kept env {k['env_key'][:16]}: {k['reason']}" for k in result["kept"]]
        return "\n".join([*lines, f"{verb} {_human(result['freed_bytes'])}"])
    if command == "daemon":
        return "\n".join([*(f"wrote {u}" for u in result["units"]), f"socket: {result.get('socket')}",
                          "enable with: systemctl --user daemon-reload && "
                          "systemctl --user enable --now provisiond.socket"])
    if command == "log":
        return str(result["log"]).rstrip("\n")
    if command == "doctor":
        return render_doctor(result)
    if command == "check":
        return render_spec(result)
    if command in ("bundle", "unbundle"):
        names = ", ".join(f"{n} (env {e['env_key'][:16]})" for n, e in result["names"].items())
        if command == "bundle":
            return f"wrote {result['output']}: {names}, {result['files']} files, {_human(result['bytes'])}, " \
                   f"for the store at {result['home']}"
        return f"unbundled {names} into {result['home']}"
    if command == "allow":
        built = f"; building {', '.join(result['names'])} in the background" if result["names"] else ""
        return f"allowed {result['path']}{built}"
    if command == "deny":
        was = "" if result["denied"] else " (it was not allowed)"
        return f"denied {result['path']}{was}; it will not be built or activated until 'provisionctl allow'"
    if command == "allowed":
        lines = [f"{a['path']}  (fingerprint {a['digest'][:16]})" for a in result["allowed"]]
        lines += [f"{p}/...  (trusted_prefixes)" for p in result["trusted_prefixes"]]
        return "\n".join(lines) or "nothing is allowed yet (provisionctl allow DIR)"
    if command in ("hook", "activate", "deactivate"):
        return str(result["script"]).rstrip("\n")
    return json.dumps(result, indent=2)


