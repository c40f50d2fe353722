"""Multi-process start-up over jax.distributed with CPU collectives, and the local launcher."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from jax_reset.parallel.distributed import DistributedError, free_port, spec_from

PROGRAM = textwrap.dedent('''
    import os, signal, sys, time
    import numpy as np
    from jax_reset.parallel.distributed import initialize, spec_from
    initialize(spec_from(heartbeat_timeout_s=5))
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P
    pid = jax.process_index()
    if "--die" in sys.argv and pid == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    if "--die" in sys.argv:
        print("waiting", flush=True)
        time.sleep(600)  # would wait for its peer for ten minutes
    mesh = jax.make_mesh((jax.device_count(),), ("d",))
    local = np.full((jax.local_device_count(),), pid + 1.0, np.float32)
    x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("d")), local)
    total = jax.jit(jax.shard_map(lambda v: jax.lax.psum(v, "d"), mesh=mesh, in_specs=P("d"),
                                  out_specs=P()))(x)
    print("processes", jax.process_count(), "devices", jax.device_count(),
          "psum", float(np.asarray(total.addressable_data(0))[0]), flush=True)
''')

LAUNCH = textwrap.dedent('''
    import sys
    from jax_reset.parallel.distributed import launch_local
    sys.exit(launch_local("probe_program", sys.argv[1:], num_processes=2, grace_s=5))
''')


@pytest.fixture
def probe(tmp_path):
    (tmp_path / "probe_program.py").write_text(PROGRAM)
    (tmp_path / "launch.py").write_text(LAUNCH)
    return tmp_path


def _launch(probe, *args, timeout=120):
    env_path = f"{probe}:{sys.path[0]}"
    return subprocess.run([sys.executable, str(probe / "launch.py"), *args], cwd=probe,
                          capture_output=True, text=True, timeout=timeout,
                          env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin",
                               "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})


def test_two_processes_reduce_across_hosts(probe):
    done = _launch(probe)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = [ln for ln in done.stdout.splitlines() if "psum" in ln]
    # 2 processes x 2 devices, values 1, 1, 2, 2.
    assert sorted(ln.split("]")[0] for ln in lines) == ["[p0", "[p1"]
    assert all(ln.endswith("processes 2 devices 4 psum 6.0") for ln in lines), lines


def test_a_killed_process_ends_the_job(probe):
    start = time.monotonic()
    done = _launch(probe, "--die")
    assert done.returncode == 1
    assert "process 1 was killed by signal 9" in done.stderr
    assert time.monotonic() - start < 60


def test_the_heartbeat_ends_survivors_without_the_launcher(probe):
    """On a cluster (no launcher), JAX's heartbeat ends a process whose peer died."""
    env = {"PYTHONPATH": f"{probe}:{sys.path[0]}", "PATH": "/usr/bin:/bin",
           "JAX_RESET_COORDINATOR": f"127.0.0.1:{free_port()}", "JAX_RESET_NUM_PROCESSES": "2"}
    start = time.monotonic()
    procs = [subprocess.Popen([sys.executable, "probe_program.py", "--die"], cwd=probe,
                              env=dict(env, JAX_RESET_PROCESS_ID=str(i)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for i in range(2)]
    try:
        codes = [p.wait(timeout=90) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert codes[1] == -9 and codes[0] != 0
    assert time.monotonic() - start < 60


def test_spec_validation():
    assert not spec_from(environ={}).wanted
    spec = spec_from(environ={"JAX_RESET_COORDINATOR": "h:1", "JAX_RESET_NUM_PROCESSES": "4",
                              "JAX_RESET_PROCESS_ID": "3"})
    assert (spec.coordinator, spec.num_processes, spec.process_id) == ("h:1", 4, 3)
    assert spec_from(process_id=1, num_processes=2, coordinator="a:1", environ={}).process_id == 1
    with pytest.raises(DistributedError, match="together"):
        spec_from(num_processes=2, environ={})
    with pytest.raises(DistributedError, match=r"not in 0\.\.1"):
        spec_from(coordinator="a:1", num_processes=2, process_id=2, environ={})
    assert spec_from(auto_detect=True, environ={}).wanted
