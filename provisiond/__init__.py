"""provisiond: a fast, content-addressed conda environment provisioner."""

__version__ = "0.1.0"
