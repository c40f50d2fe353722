"""`python -m jax_reset.bench {env,learner,curriculum,train} [options]`: the benchmarks.

Kept free of heavy imports: worker processes started with "spawn" import this module again.
"""

from __future__ import annotations

import importlib
import sys

from jax_reset.parallel.huge_pages import restart_with_huge_pages

BENCHMARKS = {
    "env": "jax_reset.bench.env",  # the Atari pool against EnvPool and raw ALE
    "learner": "jax_reset.bench.learner",  # the PPO update
    "curriculum": "jax_reset.bench.curriculum",  # the curriculum rules on a synthetic agent
    "train": "jax_reset.bench.train",  # the training job's variants, the pool, the CPU bound
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in BENCHMARKS:
        print(f"usage: python -m jax_reset.bench {{{','.join(BENCHMARKS)}}} [options]")
        return 2
    module = importlib.import_module(BENCHMARKS[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    restart_with_huge_pages()  # XLA's host buffers on huge pages (a new start, once)
    sys.exit(main())
