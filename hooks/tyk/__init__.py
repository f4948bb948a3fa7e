"""Tyk plugin compatibility: `tyk.decorators` and the `gateway` module."""
