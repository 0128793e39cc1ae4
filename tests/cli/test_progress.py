"""The progress line: never wider than the terminal, phases only forward, downloads with rate and ETA."""

from __future__ import annotations

import io

import pytest

from provisiond.cli import progress


def _events() -> list[dict]:
    mib = 1 << 20
    return [{"phase": "solved", "packages": 12, "time": 100.0},
            *({"phase": "download", "bytes": i * 4 * mib, "total": 40 * mib, "done": i, "packages": 10,
               "time": 100.0 + i} for i in range(1, 10)),
            {"phase": "link", "done": 3, "total": 12, "time": 110.0},
            {"phase": "download", "bytes": 40 * mib, "total": 40 * mib, "done": 10, "packages": 10, "time": 110.5},
            {"phase": "link", "done": 12, "total": 12, "time": 111.0},
            {"phase": "publish", "time": 112.0}, {"phase": "activation", "time": 112.1},
            {"phase": "done", "prefix": "/x/envs/0123456789abcdef", "time": 112.2}]


@pytest.mark.parametrize("columns", [10, 20, 40, 50, 80, 120, 200])
def test_the_bar_never_needs_more_than_the_terminal(columns: int) -> None:
    bar = progress._Bar(io.StringIO(), "a-rather-long-environment-name")
    for event in _events():
        bar.state.update(event)
        head, phase, rest = bar.line(columns)
        assert len(head + phase + rest) <= columns - 1, (columns, head + phase + rest)


def test_downloads_show_bytes_rate_and_time_left() -> None:
    bar = progress._Bar(io.StringIO(), "nlp")
    for event in _events()[:6]:
        bar.state.update(event)
    _, phase, rest = bar.line(120)
    assert phase == "download"
    assert "20.0 MiB/40.0 MiB 4.0 MiB/s ETA 0:05" in rest and " 5/10" in rest


def test_phases_only_move_forward_and_plain_lines_come_once_each() -> None:
    out = io.StringIO()
    lines = progress._Lines(out, "nlp")
    for event in _events():
        lines(event)
    assert out.getvalue().splitlines() == ["nlp: 12 packages resolved", "nlp: fetching 10 packages (40.0 MiB)",
                                           "nlp: linking 12 packages", "nlp: publish", "nlp: activation",
                                           "nlp: ready: /x/envs/0123456789abcdef"]


def test_no_colour_with_no_color_or_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert progress.color_allowed(Terminal()) and not progress.color_allowed(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not progress.color_allowed(Terminal())
    bar = progress._Bar(Terminal(), "nlp")
    bar({"phase": "solved", "packages": 1})
    assert "\033[1m" not in bar.out.getvalue() and "\r\033[K" in bar.out.getvalue()
