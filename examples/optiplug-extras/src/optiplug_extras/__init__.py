"""optiplug-extras: example third-party optiplug plugins (Lion optimizer, Squareplus
activation).

Nothing is imported here: optiplug loads :mod:`optiplug_extras.lion` and
:mod:`optiplug_extras.squareplus` through their ``optiplug.plugins`` entry points when a config
first asks for ``lion`` or ``squareplus``.
"""

__version__ = "0.1.0"
