# provisiond hook for zsh. Install: eval "$(provisionctl hook zsh)" in ~/.zshrc
#
# On every cd (chpwd) and before each prompt (precmd), activates the env of the nearest directory
# above $PWD holding an environment.yml, and deactivates it when you leave. The fast path (nothing
# changed, or a ready project) runs only builtins and starts no process; only a project whose env
# is not ready yet starts `provisionctl watch` in the background, once.
typeset -g __provisiond_state=@STATE@
typeset -ga __provisiond_ctl
__provisiond_ctl=(@CTL@)
typeset -g __provisiond_pwd= __provisiond_pending= __provisiond_dir=
typeset -g __provisiond_asked=$'\n'

__provisiond_deactivate() {
  emulate -L zsh
@DEACTIVATE@
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

__provisiond_hook() {
  # Local zsh options: the user's errexit, nounset or ksharrays must not reach this code.
  emulate -L zsh
  local gen= dir base phys
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
    # Reached through a symlink? The daemon knows projects by their real path (:A resolves in-shell).
    phys=${dir:A}
    if [[ $phys != "$dir" && -f $__provisiond_state$phys/.provisiond/stamp ]]; then
      dir=$phys
      base=$__provisiond_state$dir/.provisiond
    fi
  fi
  if [[ -f $base/stamp && -f $base/activate.zsh ]]; then
    __provisiond_pending=
    { read -r gen <"$base/stamp"; } 2>/dev/null
    [[ ${_PROVISIOND_PROJECT-} == "$dir" && -n $gen && $gen == "${_PROVISIOND_GEN-}" ]] && return 0
    # The script deactivates whatever is active first.
    . "$base/activate.zsh"
    return 0
  fi
  # No env for this project yet: leave the previous one (it is not this project's), ask once.
  [[ -n ${_PROVISIOND_PROJECT-} ]] && __provisiond_deactivate
  __provisiond_pending=$dir
  [[ $__provisiond_asked == *$'\n'"$dir"$'\n'* ]] && return 0
  __provisiond_asked+="$dir"$'\n'
  print -ru2 -- "provisiond: preparing the env of $dir; it activates at a prompt once ready"
  ("${__provisiond_ctl[@]}" watch "$dir" </dev/null >/dev/null 2>&1 &)
}

autoload -Uz add-zsh-hook
add-zsh-hook chpwd __provisiond_hook
add-zsh-hook precmd __provisiond_hook
