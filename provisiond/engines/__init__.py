"""Engines turn an EnvSpec into a Lock (solve) and a Lock into a prefix (install); ``choose.engine_for`` picks one."""
