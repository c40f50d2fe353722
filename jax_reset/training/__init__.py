"""Training: a run's phases from the request to the last checkpoint (``setup``, with
``build_trainer``, the one place a trainer is built), the update loop (``trainer``), the
actor that steps the pool and collects rollouts (``actor``), the two rollout sources, in turn
or an overlapping actor thread (``rollout_source``), and the signal flag (``stop``).
"""
