"""hmh: multi-hypothesis 3D hand mesh sequences from a single motion-blurred image."""

__version__ = "0.1.0"
