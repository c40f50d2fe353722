"""Everything that touches a run directory: its layout (``layout``), the command line's request
and its checks (``request``), the config a run trains with (``resolve``), the run state and its
round trip through checkpoints (``state``), the Orbax checkpoints themselves (``checkpoint``,
``checkpoint_meta``, ``checkpoint_files``), the trainer's lock (``lock``) and the one-line
errors of a file system that refuses a write (``disk``).

Importing the package imports nothing; ``layout``, ``request``, ``resolve``, ``lock`` and
``disk`` are free of JAX (``python -m jax_reset.train`` checks its input with them before JAX
starts), the others import JAX and Orbax.
"""
