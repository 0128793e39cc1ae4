# provisiond hook for fish. Install: provisionctl hook fish | source   (in ~/.config/fish/config.fish)
#
# On every cd (PWD changes) and before each prompt, activates the env of the nearest directory
# above $PWD holding an environment.yml, and deactivates it when you leave. The fast path (nothing
# changed, or a ready project) runs only builtins and starts no process; only a project whose env
# is not ready yet starts `provisionctl watch` in the background, once.
set -g __provisiond_state @STATE@
set -g __provisiond_ctl @CTL@
set -g __provisiond_pwd
set -g __provisiond_pending
set -g __provisiond_asked

function __provisiond_deactivate
@DEACTIVATE@
end

# Prints the nearest dir at or above $PWD holding an environment file (builtins only: no fork).
function __provisiond_find
    set -l d $PWD
    while true
        if test -f "$d/environment.yml"; or test -f "$d/environment.yaml"
            echo $d
            return 0
        end
        if test -z "$d"; or test "$d" = /
            return 1
        end
        set d (string replace -r '/[^/]*$' '' -- $d)
        test -n "$d"; or set d /
    end
end

function __provisiond_hook --on-event fish_prompt --on-variable PWD
    set -l gen
    if test "$PWD" = "$__provisiond_pwd"
        if test -n "$__provisiond_pending"
            test -f "$__provisiond_state$__provisiond_pending/.provisiond/stamp"; or return 0
        else if set -q _PROVISIOND_PROJECT
            set -l stamp "$__provisiond_state$_PROVISIOND_PROJECT/.provisiond/stamp"
            test -f $stamp; and read -l line <$stamp; and set gen $line
            test "$gen" = "$_PROVISIOND_GEN"; and return 0
        else
            return 0
        end
    end
    set -g __provisiond_pwd $PWD
    set -l dir (__provisiond_find)
    if test -z "$dir"
        set -g __provisiond_pending
        set -q _PROVISIOND_PROJECT; and __provisiond_deactivate
        return 0
    end
    set -l base "$__provisiond_state$dir/.provisiond"
    if not test -f "$base/stamp"
        # Reached through a symlink? The daemon knows projects by their real path.
        set -l phys (builtin realpath -- $dir 2>/dev/null)
        if test -n "$phys"; and test "$phys" != "$dir"; and test -f "$__provisiond_state$phys/.provisiond/stamp"
            set dir $phys
            set base "$__provisiond_state$dir/.provisiond"
        end
    end
    if test -f "$base/stamp"; and test -f "$base/activate.fish"
        set -g __provisiond_pending
        read -l line <"$base/stamp"; and set gen $line
        if test "$_PROVISIOND_PROJECT" = "$dir"; and test -n "$gen"; and test "$gen" = "$_PROVISIOND_GEN"
            return 0
        end
        # The script deactivates whatever is active first.
        source "$base/activate.fish"
        return 0
    end
    # No env for this project yet: leave the previous one (it is not this project's), ask once.
    set -q _PROVISIOND_PROJECT; and __provisiond_deactivate
    set -g __provisiond_pending $dir
    contains -- $dir $__provisiond_asked; and return 0
    set -a __provisiond_asked $dir
    printf 'provisiond: preparing the env of %s; it activates at a prompt once ready\n' $dir >&2
    $__provisiond_ctl watch $dir </dev/null >/dev/null 2>&1 &
    disown $last_pid 2>/dev/null
end
