"""Config-driven training recipes: ``optiplug run`` and ``optiplug compare``."""
