"""Devices and processes: several processes on ``jax.distributed`` and the local launcher
(``distributed``), what the trainer exchanges between processes (``process_group``), which
devices act and which learn (``placement``), the data mesh (``mesh``) and every size of a run
derived from ``train.num_envs`` (``sizes``). ``distributed``, ``placement`` and ``sizes`` are
free of JAX at import (the fake CPU devices are asked for before JAX starts).
"""
