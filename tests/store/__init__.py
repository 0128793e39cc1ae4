"""Unit tests of provisiond.store on real temp dirs: the store, registry, retention, durability, credentials."""
