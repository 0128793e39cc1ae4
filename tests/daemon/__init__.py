"""Unit tests of provisiond.daemon parts without a socket: lifecycle, build slots, trust."""
