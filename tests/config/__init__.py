"""Unit tests of provisiond.config: settings and their precedence."""
