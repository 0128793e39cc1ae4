# shellcheck shell=sh
# Sourced by scripts/*: make sure .venv exists and holds provisiond (+ extras) installed editable.
# Usage: ensure_venv [EXTRAS]   e.g. ensure_venv test
# editable_mode=compat: a plain .pth path entry. The default finder hook costs every Python
# start in the venv ~8 ms, which provisionctl would pay on each command.
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${PROVISIOND_VENV:-$ROOT/.venv}"
ensure_venv() {
    extras="${1:-}"
    stamp="$VENV/.provisiond-installed${extras:+-$extras}"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "creating $VENV" >&2
        python3 -m venv "$VENV"
    fi
    if [ ! -f "$stamp" ] || [ -n "$(find "$ROOT/pyproject.toml" -newer "$stamp")" ]; then
        echo "installing provisiond${extras:+[$extras]} into $VENV" >&2
        if ! { "$VENV/bin/python" -m pip install --upgrade pip &&
               "$VENV/bin/python" -m pip install --config-settings editable_mode=compat \
                   -e "$ROOT${extras:+[$extras]}"; } >"$VENV/install.log" 2>&1; then
            cat "$VENV/install.log" >&2
            echo "install failed (log: $VENV/install.log)" >&2
            exit 1
        fi
        touch "$stamp"
    fi
}
