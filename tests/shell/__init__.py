"""Shell tests: activation rendered and run in real bash, zsh, fish and sh, without a daemon."""
