"""Unit tests of provisiond.cli: argument parsing and rendering, in process."""
