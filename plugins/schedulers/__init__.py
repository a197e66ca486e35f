"""Builtin optiplug techniques (each module is one plugin, registered by entry point)."""
