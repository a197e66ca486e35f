"""Bridges: plugins that register another library's techniques (``pto.*``)."""
