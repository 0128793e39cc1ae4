"""Tests of provisiond.testing: the local channel builder the other tests rely on."""
