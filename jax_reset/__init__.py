"""jax-reset: learn Atari policies from a single demonstration by resetting from demo states."""

__version__ = "0.1.0"
