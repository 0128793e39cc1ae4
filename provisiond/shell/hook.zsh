# provisiond hook for zsh. Install: eval "$(provisionctl hook zsh)" in ~/.zshrc
#
# On every cd (chpwd) and before each prompt (precmd), activates the env of the nearest directory
# above $PWD holding an environment.yml, and deactivates it when you leave. The fast path (nothing
# changed, or a ready project) runs only builtins and starts no process. Entering a project with
# no env runs `provisionctl watch --if-allowed` once: it registers the project only if you allowed
# it (`provisionctl allow`), and prints one line saying what happens. A blocked project, a failed
# build or a broken file is said once, in one line, from the notice the daemon leaves.
typeset -g __provisiond_state=@STATE@
typeset -ga __provisiond_ctl
__provisiond_ctl=(@CTL@)
typeset -g __provisiond_pwd= __provisiond_pending= __provisiond_dir= __provisiond_applied=
typeset -g __provisiond_asked=$'\n' __provisiond_noticed=$'\n'

__provisiond_deactivate() {
  emulate -L zsh
@DEACTIVATE@
}

# Leaves the active env: by the activation's own straight-line undo when this shell ran it
# (shell/undo.py), else by the generic code above (a child shell, a `provisionctl activate` elsewhere).
__provisiond_leave() {
  if [[ -n ${__provisiond_undo_gen-} && $__provisiond_undo_gen == "${_PROVISIOND_GEN-}" ]]; then
    __provisiond_undo
  else
    __provisiond_deactivate
  fi
}

# Sets __provisiond_dir to the nearest dir at or above $PWD holding an environment file, or ''.
__provisiond_find() {
  emulate -L zsh
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

# Prints a project's notice (blocked, build failed, broken file: the daemon writes "KEY\nLINE")
# once per KEY; with a second argument, only marks it as seen.
__provisiond_notice() {
  emulate -L zsh
  local file=$__provisiond_state$1/@LEAF@/@NOTICE@ key= line=
  [[ -f $file ]] || return 0
  { { read -r key && read -r line; } <"$file"; } 2>/dev/null
  [[ -z $key || $__provisiond_noticed == *$'\n'"$1 $key"$'\n'* ]] && return 0
  __provisiond_noticed+="$1 $key"$'\n'
  [[ -n ${2-} ]] || print -ru2 -- "$line"
}

__provisiond_hook() {
  # Local zsh options: the user's errexit, nounset or ksharrays must not reach this code.
  emulate -L zsh
  local gen= dir base phys
  if [[ $PWD == "$__provisiond_pwd" ]]; then
    if [[ -n $__provisiond_pending ]]; then
      __provisiond_notice "$__provisiond_pending"
      [[ -f $__provisiond_state$__provisiond_pending/@LEAF@/@STAMP@ ]] || return 0
    elif [[ -n ${_PROVISIOND_PROJECT-} ]]; then
      { read -r gen <"$__provisiond_state$_PROVISIOND_PROJECT/@LEAF@/@STAMP@"; } 2>/dev/null
      [[ -f $__provisiond_state$_PROVISIOND_PROJECT/@LEAF@/@NOTICE@ ]] && __provisiond_notice "$_PROVISIOND_PROJECT"
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
    [[ -n ${_PROVISIOND_PROJECT-} ]] && __provisiond_leave
    return 0
  fi
  base=$__provisiond_state$dir/@LEAF@
  if [[ ! -f $base/@STAMP@ && ! -f $base/@NOTICE@ ]]; then
    # Reached through a symlink? The daemon knows projects by their real path (:A resolves in-shell).
    phys=${dir:A}
    if [[ $phys != "$dir" ]]; then
      dir=$phys
      base=$__provisiond_state$dir/@LEAF@
    fi
  fi
  if [[ -f $base/@STAMP@ && -f $base/activate.zsh ]]; then
    __provisiond_pending=
    __provisiond_notice "$dir"  # a failed rebuild: the previous env stays active, and we say why
    { read -r gen <"$base/@STAMP@"; } 2>/dev/null
    # Active already, and applied in this shell (a child shell inherits the variables, not the prompt).
    [[ ${_PROVISIOND_PROJECT-} == "$dir" && -n $gen && $gen == "${_PROVISIOND_GEN-}" &&
      $gen == "$__provisiond_applied" ]] && return 0
    __provisiond_applied=$gen
    # The script deactivates whatever is active first.
    . "$base/activate.zsh"
    return 0
  fi
  # No env for this project (yet): leave the previous one (it is not this project's).
  [[ -n ${_PROVISIOND_PROJECT-} ]] && __provisiond_leave
  __provisiond_pending=$dir
  if [[ -f $base/@NOTICE@ ]]; then
    __provisiond_notice "$dir"  # blocked or failing: the daemon already knows, nothing to ask
    return 0
  fi
  [[ $__provisiond_asked == *$'\n'"$dir"$'\n'* ]] && return 0
  # Registers the project only if the user allowed it, and prints one line saying what happens.
  # Asked once per shell; again on the next visit only if the daemon was down (exit status 69).
  "${__provisiond_ctl[@]}" watch --if-allowed "$dir" </dev/null >/dev/null && __provisiond_asked+="$dir"$'\n'
  __provisiond_notice "$dir" seen  # that line was it
}

autoload -Uz add-zsh-hook
add-zsh-hook chpwd __provisiond_hook
add-zsh-hook precmd __provisiond_hook
