"""Pass@k Policy Optimization (Walder & Karkhanis, 2025)."""

__version__ = "0.3.0"
