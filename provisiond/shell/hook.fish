# provisiond hook for fish. Install: provisionctl hook fish | source   (in ~/.config/fish/config.fish)
#
# On every cd (PWD changes) and before each prompt, activates the env of the nearest directory
# above $PWD holding an environment.yml, and deactivates it when you leave. The fast path (nothing
# changed, or a ready project) runs only builtins and starts no process. Entering a project with
# no env runs `provisionctl watch --if-allowed` once: it registers the project only if you allowed
# it (`provisionctl allow`), and prints one line saying what happens. A blocked project, a failed
# build or a broken file is said once, in one line, from the notice the daemon leaves.
set -g __provisiond_state @STATE@
set -g __provisiond_ctl @CTL@
set -g __provisiond_pwd
set -g __provisiond_pending
set -g __provisiond_applied
set -g __provisiond_asked
set -g __provisiond_noticed

function __provisiond_deactivate
@DEACTIVATE@
end

# Leaves the active env: by the activation's own straight-line undo when this shell ran it
# (shell/undo.py), else by the generic code above (a child shell, a `provisionctl activate` elsewhere).
function __provisiond_leave
    if set -q __provisiond_undo_gen; and test -n "$__provisiond_undo_gen"; and test "$__provisiond_undo_gen" = "$_PROVISIOND_GEN"
        __provisiond_undo
    else
        __provisiond_deactivate
    end
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

# Prints a project's notice (blocked, build failed, broken file: the daemon writes "KEY\nLINE")
# once per KEY; with a second argument, only marks it as seen.
function __provisiond_notice
    set -l file "$__provisiond_state$argv[1]/@LEAF@/@NOTICE@"
    test -f $file; or return 0
    set -l lines
    while read -l line
        set -a lines $line
    end <$file
    test (count $lines) -ge 2; or return 0
    set -l seen "$argv[1] $lines[1]"
    contains -- $seen $__provisiond_noticed; and return 0
    set -a __provisiond_noticed $seen
    test (count $argv) -ge 2; or printf '%s\n' $lines[2] >&2
end

function __provisiond_hook --on-event fish_prompt --on-variable PWD
    set -l gen
    if test "$PWD" = "$__provisiond_pwd"
        if test -n "$__provisiond_pending"
            __provisiond_notice $__provisiond_pending
            test -f "$__provisiond_state$__provisiond_pending/@LEAF@/@STAMP@"; or return 0
        else if set -q _PROVISIOND_PROJECT
            set -l stamp "$__provisiond_state$_PROVISIOND_PROJECT/@LEAF@/@STAMP@"
            test -f $stamp; and read -l line <$stamp; and set gen $line
            test -f "$__provisiond_state$_PROVISIOND_PROJECT/@LEAF@/@NOTICE@"; and __provisiond_notice $_PROVISIOND_PROJECT
            test "$gen" = "$_PROVISIOND_GEN"; and return 0
        else
            return 0
        end
    end
    set -g __provisiond_pwd $PWD
    set -l dir (__provisiond_find)
    if test -z "$dir"
        set -g __provisiond_pending
        set -q _PROVISIOND_PROJECT; and __provisiond_leave
        return 0
    end
    set -l base "$__provisiond_state$dir/@LEAF@"
    if not test -f "$base/@STAMP@"; and not test -f "$base/@NOTICE@"
        # Reached through a symlink? The daemon knows projects by their real path.
        set -l phys (builtin realpath -- $dir 2>/dev/null)
        if test -n "$phys"; and test "$phys" != "$dir"
            set dir $phys
            set base "$__provisiond_state$dir/@LEAF@"
        end
    end
    if test -f "$base/@STAMP@"; and test -f "$base/activate.fish"
        set -g __provisiond_pending
        __provisiond_notice $dir # a failed rebuild: the previous env stays active, and we say why
        read -l line <"$base/@STAMP@"; and set gen $line
        # Active already, and applied in this shell (a child shell inherits the variables, not the prompt).
        if test "$_PROVISIOND_PROJECT" = "$dir"; and test -n "$gen"; and test "$gen" = "$_PROVISIOND_GEN"
            and test "$gen" = "$__provisiond_applied"
            return 0
        end
        set -g __provisiond_applied $gen
        # The script deactivates whatever is active first.
        source "$base/activate.fish"
        return 0
    end
    # No env for this project (yet): leave the previous one (it is not this project's).
    set -q _PROVISIOND_PROJECT; and __provisiond_leave
    set -g __provisiond_pending $dir
    if test -f "$base/@NOTICE@"
        __provisiond_notice $dir # blocked or failing: the daemon already knows, nothing to ask
        return 0
    end
    contains -- $dir $__provisiond_asked; and return 0
    # Registers the project only if the user allowed it, and prints one line saying what happens.
    # Asked once per shell; again on the next visit only if the daemon was down (exit status 69).
    $__provisiond_ctl watch --if-allowed $dir </dev/null >/dev/null; and set -a __provisiond_asked $dir
    __provisiond_notice $dir seen # that line was it
end
