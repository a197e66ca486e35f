"""The conformance kit: check a plugin against the optiplug contract."""
