"""Playing a trained policy: full games under the standard protocols on EnvPool (``play``,
``envs``), MP4 videos (``video``), and a run's best game as a new demo (``from_run``).
``python -m jax_reset.evaluate`` and ``python -m jax_reset.demo from-run`` are the commands.
"""
