"""Kernel names: what jupyter_client accepts ([a-z0-9._-], case folded), unique per env name."""

from __future__ import annotations

import re

from provisiond.daemon.kernels import kernel_name


def test_a_plain_name_is_kept() -> None:
    assert kernel_name("nlp-exp") == "provisiond-nlp-exp"
    assert kernel_name("py3.11_base") == "provisiond-py3.11_base"


def test_other_names_are_made_valid_and_stay_apart() -> None:
    names = ["My.Env", "my.env", "a+b", "a@b", "~tilde", "x=1", "-"]
    kernels = [kernel_name(n) for n in names]
    assert all(re.fullmatch(r"[a-z0-9._-]+", k) for k in kernels)
    assert len({k.lower() for k in kernels}) == len(names)  # Jupyter folds case: still all different
    assert kernel_name("My.Env").startswith("provisiond-my.env-")
