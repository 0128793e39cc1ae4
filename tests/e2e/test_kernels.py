"""Jupyter kernels end to end: a real daemon writes the kernelspec, real jupyter_client starts the kernel.

The env's python is the host's CPython (``venv_python_pkg``), and ipykernel comes through the env's
``pip:`` section from wheels downloaded from PyPI once per session.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisiond.testing.channel import Pkg, build_channel, hello_pkg
from provisiond.testing.python import venv_python_pkg
from tests.conftest import Daemon, write_project

# Real kernels, ipykernel's 29 wheels installed by uv, daemon restarts: ~15 s on a quiet machine,
# but the two tests took 148 s together at a load average of 12 on 2 cores. Not a timing
# assertion: room so that a busy CI machine does not hit the suite's 120 s per test.
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="session")
def ipykernel_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ipykernel and its dependencies as wheels for this interpreter, fetched from PyPI once."""
    directory = tmp_path_factory.mktemp("ipykernel-wheels")
    run = subprocess.run([sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--disable-pip-version-check",
                          "-q", "-d", str(directory), "ipykernel"], capture_output=True, text=True, timeout=600)
    if run.returncode != 0:
        pytest.skip(f"cannot download ipykernel from PyPI: {run.stderr.strip()[-300:]}")
    return directory


@pytest.fixture(scope="module")
def kchannel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python`` over the host's interpreter, ``hello``, and a package with an activate.d script."""
    hook = Pkg("kernel-hook", "1.0", files={
        "etc/conda/activate.d/kernel-hook.sh": 'export KERNEL_HOOK="from activate.d in $CONDA_PREFIX"\n'})
    return build_channel(tmp_path_factory.mktemp("kchannel"), [venv_python_pkg(), hello_pkg("hello"), hook])


@pytest.fixture
def jupyter_env(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """jupyter_client in this process looks where the daemon writes (and nowhere of the user's)."""
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(daemon.jupyter))
    monkeypatch.setenv("JUPYTER_PATH", str(daemon.jupyter))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(daemon.home.parent / "jupyter-runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(daemon.home.parent / "ipython"))
    yield daemon.jupyter


def kernel_yml(wheels: Path) -> str:
    """A pip section installing ipykernel from the local wheels, and a ``variables:`` entry."""
    pip = ["--no-index", f"--find-links {wheels}", "ipykernel"]
    return ("  - pip:\n" + "".join(f"      - {json.dumps(line)}\n" for line in pip)
            + "variables:\n  NLP_MODE: notebook\n")


def run_in_kernel(kernel: str, code: str) -> str:
    """Start ``kernel`` with jupyter_client as JupyterLab does, run ``code``, return its stdout."""
    from jupyter_client.manager import KernelManager

    km = KernelManager(kernel_name=kernel)
    km.start_kernel()
    try:
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=90)
            out: list[str] = []

            def hook(msg: dict) -> None:
                if msg["msg_type"] == "stream":
                    out.append(msg["content"]["text"])
                elif msg["msg_type"] == "error":
                    out.append("\n".join(msg["content"]["traceback"]))

            reply = kc.execute_interactive(code, output_hook=hook, timeout=60)
            assert reply["content"]["status"] == "ok", "".join(out)
            return "".join(out)
        finally:
            kc.stop_channels()
    finally:
        km.shutdown_kernel(now=True)


def test_kernel_starts_in_the_env_with_its_activation(daemon: Daemon, kchannel: Path, ipykernel_wheels: Path,
                                                      jupyter_env: Path, tmp_path: Path) -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    project = write_project(tmp_path / "nlp", kchannel, ["python", "kernel-hook"], name="nlp-exp",
                            extra=kernel_yml(ipykernel_wheels))
    (project / ".env").write_text("NLP_TOKEN=s3cret\n")
    code, out, err = daemon.ctl("warm", str(project), "--json")
    assert code == 0, err
    view = json.loads(out)
    prefix = view["prefix"]

    code, out, err = daemon.ctl("kernels", "--json")
    assert code == 0, err
    listing = json.loads(out)
    assert [k["kernel"] for k in listing["kernels"]] == ["provisiond-nlp-exp"]
    spec_file = jupyter_env / "kernels" / "provisiond-nlp-exp" / "kernel.json"
    assert listing["kernels"][0]["path"] == str(spec_file)
    assert "s3cret" not in spec_file.read_text()  # .env values stay in the state dir

    spec = KernelSpecManager().get_kernel_spec("provisiond-nlp-exp")
    assert spec.display_name == "Python (nlp-exp)" and spec.language == "python"
    assert f"{prefix}/bin/python" in spec.argv

    lease = daemon.home / "leases" / view["env_key"]
    printed = run_in_kernel("provisiond-nlp-exp", "import os, sys\nprint(sys.prefix)\n"
                            "print(os.environ.get('KERNEL_HOOK'))\nprint(os.environ.get('NLP_MODE'))\n"
                            "print(os.environ.get('NLP_TOKEN'))\n"
                            f"print(os.path.exists('{lease}.%d' % os.getpid()))\n")
    # activate.d ran, variables: and .env are there, and the kernel holds a lease on its env (gc keeps it).
    assert printed.splitlines() == [prefix, f"from activate.d in {prefix}", "notebook", "s3cret", "True"]


def test_kernel_follows_rebuilds_and_goes_with_its_name(daemon: Daemon, kchannel: Path, ipykernel_wheels: Path,
                                                        jupyter_env: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "proj", kchannel, ["python"], name="nlp-exp",
                            extra=kernel_yml(ipykernel_wheels))
    code, out, err = daemon.ctl("warm", str(project), "--json")
    assert code == 0, err
    first = json.loads(out)
    spec_file = jupyter_env / "kernels" / "provisiond-nlp-exp" / "kernel.json"
    assert json.loads(spec_file.read_text())["argv"][6] == f"{first['prefix']}/bin/python"

    # A named env without ipykernel gets no kernel; `kernels` says so.
    plain = write_project(tmp_path / "plain", kchannel, ["hello"], name="plain")
    code, _, err = daemon.ctl("create", "-f", str(plain / "environment.yml"))
    assert code == 0, err

    # Rebuild: the same kernel name, now at the new prefix.
    write_project(project, kchannel, ["python", "hello"], name="nlp-exp", extra=kernel_yml(ipykernel_wheels))
    code, out, err = daemon.ctl("warm", str(project), "--json")
    assert code == 0, err
    second = json.loads(out)
    assert second["prefix"] != first["prefix"]
    assert json.loads(spec_file.read_text())["argv"][6] == f"{second['prefix']}/bin/python"
    code, out, err = daemon.ctl("kernels")
    assert code == 0, err
    assert out.splitlines() == [f"provisiond-nlp-exp  Python (nlp-exp)  {second['prefix']}",
                                "without ipykernel (no kernel): plain"]

    # A clone is a name too: it gets its own kernel.
    code, _, err = daemon.ctl("clone", "nlp-exp", "nlp-copy")
    assert code == 0, err
    assert (jupyter_env / "kernels" / "provisiond-nlp-copy" / "kernel.json").is_file()

    # Opting out removes what was written, at the next start.
    daemon.stop()
    daemon.base_env["PROVISIOND_KERNELS"] = "false"
    daemon.start()
    assert not (jupyter_env / "kernels" / "provisiond-nlp-exp").exists()
    assert json.loads(daemon.ctl("kernels", "--json")[1])["enabled"] is False
    daemon.stop()
    del daemon.base_env["PROVISIOND_KERNELS"]
    daemon.start()
    assert spec_file.is_file()

    # The setting changed while the daemon runs (SIGHUP): the specs go, and come back.
    config = daemon.home.parent / "none.toml"  # the daemon's PROVISIOND_CONFIG
    for value, present in (("false", False), ("true", True)):
        config.write_text(f"kernels = {value}\n")
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while spec_file.is_file() is not present:
            assert time.monotonic() < deadline, f"kernels = {value} was not applied"
            time.sleep(0.05)
    config.unlink()

    # A denied project runs nothing, its kernel neither; allowed again, the kernel is back.
    code, _, err = daemon.ctl("deny", str(project))
    assert code == 0, err
    assert not (jupyter_env / "kernels" / "provisiond-nlp-exp").exists()
    assert daemon.ctl("allow", str(project))[0] == 0
    daemon.wait_for("nlp-exp", lambda v: v["status"] == "ready")
    deadline = time.monotonic() + 60
    while not spec_file.is_file():
        assert time.monotonic() < deadline, "the kernel did not come back after allow"
        time.sleep(0.05)

    # remove: its spec goes; a user's own kernel beside ours is never touched.
    mine = jupyter_env / "kernels" / "provisiond-mine"
    mine.mkdir()
    (mine / "kernel.json").write_text('{"argv": ["python"], "display_name": "mine", "language": "python"}')
    code, _, err = daemon.ctl("remove", "nlp-copy")
    assert code == 0, err
    code, _, err = daemon.ctl("unwatch", "nlp-exp")
    assert code == 0, err
    assert not (jupyter_env / "kernels" / "provisiond-nlp-exp").exists()
    assert not (jupyter_env / "kernels" / "provisiond-nlp-copy").exists()
    assert (mine / "kernel.json").is_file()
    assert json.loads(daemon.ctl("kernels", "--json")[1])["kernels"] == []
