"""Errors in one line by default (cli/errors.py): the summary of real engine messages."""

from __future__ import annotations

import pytest

from provisiond.cli import commands as cli
from provisiond.cli import errors

NETWORK = """cannot read channel repodata: Request failed after 3 retries
Caused by: error sending request for url (http://127.0.0.1:1/nope/linux-64/repodata_shards.msgpack.zst)
Caused by: client error (Connect)
Caused by: tcp connect error
Caused by: Connection refused (os error 111)"""

SOLVER = """/home/me/nlp/environment.yml: cannot be solved:
Cannot solve the request because of: The following packages are incompatible
├─ hello ==2.0 can be installed with any of the following options:
│  └─ hello 2.0
└─ hello ==1.0 cannot be installed because there are no viable options:
   └─ hello 1.0, which conflicts with the versions reported above.
"""


@pytest.mark.parametrize(("message", "line", "more"), [
    (NETWORK, "cannot read channel repodata: Request failed after 3 retries: Connection refused (os error 111)",
     True),
    (SOLVER, "/home/me/nlp/environment.yml: cannot be solved: Cannot solve the request because of: The following "
             "packages are incompatible", True),
    ("x.yml: cannot be solved:\nNo candidates were found for nope *.", "x.yml: cannot be solved: No candidates "
                                                                        "were found for nope *.", False),
    ("no env named 'x'", "no env named 'x'", False),
])
def test_summary(message: str, line: str, more: bool) -> None:
    assert errors.summary(message) == (line, more)


def test_v_prints_the_whole_message_and_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    from provisiond.domain.errors import EngineError

    assert errors.report(EngineError(NETWORK, hint="check the channel URLs"), as_json=False, verbose=0) == 70
    err = capsys.readouterr().err.splitlines()
    assert err == ["provisionctl: cannot read channel repodata: Request failed after 3 retries: Connection refused "
                   "(os error 111)", "hint: check the channel URLs; add -v for the whole error"]
    errors.report(EngineError(NETWORK, hint="check the channel URLs"), as_json=False, verbose=1)
    err = capsys.readouterr().err.splitlines()
    assert err[:5] == ["provisionctl: " + NETWORK.splitlines()[0], *NETWORK.splitlines()[1:]]
    assert err[-2:] == ["hint: check the channel URLs", "error code: engine-failed (exit 70)"]
    assert cli.main(["--socket", "/nonexistent/x.sock", "-v", "list"]) == 69
    assert capsys.readouterr().err.endswith("error code: daemon-down (exit 69)\n")
