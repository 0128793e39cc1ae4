"""End-to-end tests: a real provisiond on a real socket, driven by provisionctl, the client and real shells."""
