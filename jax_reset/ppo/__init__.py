"""PPO with scan-based recurrent burn-in, data-parallel over a device mesh.

Public API (import from the submodules; this package imports nothing eagerly, so reading a
config does not import JAX):

- ``config``:  ``PPOConfig`` (frozen, reference defaults).
- ``train_state``: ``create_train_state(net_cfg, ppo_cfg, obs_shape, num_actions, rng)
               -> (network, TrainState)``; ``TrainState``, ``with_hyperparams``.
- ``update``:  ``make_update(network, ppo_cfg, mesh) -> update(state, batch) -> (state,
               metrics)``, the metrics by short name (``UPDATE_METRICS``).
- ``acting``:  ``make_act_fn(network, evaluate=False) -> act(params, obs [B,...],
               episode_start [B], entropy_boost [B], carry, rng, start_carry=None) -> ActOutput``
               (action, logp, value, carry).
- ``warmup``:  ``make_warmup_fn(network) -> warmup(params, obs [B, L, ...], mask [B, L])
               -> carry`` (the demo warm-up state, passed as ``start_carry`` when acting).
- ``data``:    the per-step layout ``Transition``; ``initial_burn_in``, ``assemble_batch``
               (rollout + carried-over burn-in -> ``TrainBatch`` and the next ``BurnIn``),
               ``shard_batch``, ``zeros_transition``.
- ``gae``, ``losses``: the pure math (``gae``, ``ppo_loss``, ``normalize_advantages``, ...).
- ``synthetic``: tiny configs and random batches for tests and benchmarks.

``jax_reset.networks``: ``NetworkConfig``, ``make_network``, ``init_carry``, ``init_params``,
``forward_flops``.
``jax_reset.parallel.mesh``: ``make_data_mesh``.
"""
