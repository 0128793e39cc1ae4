# provisiond hook for bash. Install: eval "$(provisionctl hook bash)" in ~/.bashrc
#
# Before each prompt, activates the env of the nearest directory above $PWD holding an
# environment.yml, and deactivates it when you leave. The fast path (nothing changed, or a ready
# project) runs only builtins and starts no process; only a project whose env is not ready yet
# starts `provisionctl watch` in the background, once.
__provisiond_state=@STATE@
__provisiond_ctl=(@CTL@)
__provisiond_pwd=
__provisiond_pending=
__provisiond_asked=$'\n'

__provisiond_deactivate() {
@DEACTIVATE@
}

# Sets __provisiond_dir to the nearest dir at or above $PWD holding an environment file, or ''.
__provisiond_find() {
  local d=$PWD
  while :; do
    if [[ -f $d/environment.yml || -f $d/environment.yaml ]]; then
      __provisiond_dir=$d
      return 0
    fi
    [[ -z $d || $d == / ]] && break
    d=${d%/*}
    d=${d:-/}
  done
  __provisiond_dir=
}

__provisiond_update() {
  local gen='' dir base phys
  if [[ $PWD == "$__provisiond_pwd" ]]; then
    if [[ -n $__provisiond_pending ]]; then
      [[ -f $__provisiond_state$__provisiond_pending/.provisiond/stamp ]] || return 0
    elif [[ -n ${_PROVISIOND_PROJECT-} ]]; then
      { read -r gen <"$__provisiond_state$_PROVISIOND_PROJECT/.provisiond/stamp"; } 2>/dev/null
      [[ $gen == "${_PROVISIOND_GEN-}" ]] && return 0
    else
      return 0
    fi
  fi
  __provisiond_pwd=$PWD
  __provisiond_find
  dir=$__provisiond_dir
  if [[ -z $dir ]]; then
    __provisiond_pending=
    [[ -n ${_PROVISIOND_PROJECT-} ]] && __provisiond_deactivate
    return 0
  fi
  base=$__provisiond_state$dir/.provisiond
  if [[ ! -f $base/stamp ]]; then
    # Reached through a symlink? The daemon knows projects by their real path (slow path: a subshell).
    phys=$(builtin cd -P -- "$dir" 2>/dev/null && builtin pwd -P) || phys=
    if [[ -n $phys && $phys != "$dir" && -f $__provisiond_state$phys/.provisiond/stamp ]]; then
      dir=$phys
      base=$__provisiond_state$dir/.provisiond
    fi
  fi
  if [[ -f $base/stamp && -f $base/activate.bash ]]; then
    __provisiond_pending=
    { read -r gen <"$base/stamp"; } 2>/dev/null
    [[ ${_PROVISIOND_PROJECT-} == "$dir" && -n $gen && $gen == "${_PROVISIOND_GEN-}" ]] && return 0
    # The script deactivates whatever is active first.
    # shellcheck source=/dev/null
    . "$base/activate.bash"
    return 0
  fi
  # No env for this project yet: leave the previous one (it is not this project's), ask once.
  [[ -n ${_PROVISIOND_PROJECT-} ]] && __provisiond_deactivate
  __provisiond_pending=$dir
  [[ $__provisiond_asked == *$'\n'"$dir"$'\n'* ]] && return 0
  __provisiond_asked+="$dir"$'\n'
  printf 'provisiond: preparing the env of %s; it activates at a prompt once ready\n' "$dir" >&2
  ("${__provisiond_ctl[@]}" watch "$dir" </dev/null >/dev/null 2>&1 &)
}

__provisiond_hook() {
  local status=$? gen=
  # The fast path first, here: bash copies a function's body at every call, so this small function
  # does the common case (same $PWD, no pending project, the active stamp unchanged) and the large
  # __provisiond_update runs only when something changed. Safe under set -eu as written.
  if [[ $PWD == "$__provisiond_pwd" && -z $__provisiond_pending ]]; then
    [[ -z ${_PROVISIOND_PROJECT-} ]] && return $status
    { read -r gen <"$__provisiond_state$_PROVISIOND_PROJECT/.provisiond/stamp"; } 2>/dev/null || :
    [[ $gen == "${_PROVISIOND_GEN-}" ]] && return $status
  fi
  local opts=$-
  # Our own code runs without errexit/nounset: a failing test must not close the user's shell.
  set +eu
  __provisiond_update
  [[ $opts == *e* ]] && set -e
  [[ $opts == *u* ]] && set -u
  return $status
}

# Run first, so that later prompt commands (themes showing $CONDA_DEFAULT_ENV) see the new env;
# __provisiond_hook returns the previous $? for them. PROMPT_COMMAND may be an array (bash >= 5.1).
if [[ ${PROMPT_COMMAND+x} ]] && ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] >= 404)) &&
  [[ ${PROMPT_COMMAND@a} == *a* ]]; then
  [[ " ${PROMPT_COMMAND[*]} " == *" __provisiond_hook "* ]] ||
    PROMPT_COMMAND=(__provisiond_hook "${PROMPT_COMMAND[@]}")
elif [[ ${PROMPT_COMMAND-} != *__provisiond_hook* ]]; then
  # A string here (the array case is above).
  # shellcheck disable=SC2128,SC2178
  PROMPT_COMMAND="__provisiond_hook${PROMPT_COMMAND:+$'\n'$PROMPT_COMMAND}"
fi
