"""Unit tests of provisiond.domain: spec, lock, lockfiles, urls, and real environment.yml files."""
