"""Multi-process start-up: `jax.distributed.initialize` from the config or the environment.

config.distributed:
  initialize            "auto": only where the environment says there are several processes
                        (JAX_COORDINATOR_ADDRESS, a SLURM job step with > 1 task, Open MPI with > 1 rank,
                        Cloud TPU / GKE multi-host variables) -> JAX's own cluster detection fills in
                        coordinator, process count and id; "always": call it anyway (TPU pod workers);
                        "never": one process.
  coordinator_address   "host:port" of process 0; set it (with num_processes, process_id) to start
                        processes by hand, e.g. two on localhost (tests/test_multiprocess.py).
  num_processes, process_id
  cpu_collectives       how CPU devices of different processes exchange data ("gloo"); GPUs use NCCL
                        and TPUs their interconnect whatever this says.
Must run before anything touches a JAX backend (training/trainer.py calls it first).
"""

import os

import jax


def _env_int(name: str) -> int:
  try:
    return int(os.environ.get(name, "0").split("(")[0])  # SLURM writes e.g. "2(x4)"
  except ValueError:
    return 0


def detected_cluster() -> str | None:
  """The kind of multi-process environment we run in, or None for a single process."""
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    return "JAX_COORDINATOR_ADDRESS"
  if os.environ.get("SLURM_JOB_ID") and _env_int("SLURM_NTASKS") > 1 and "SLURM_STEP_ID" in os.environ:
    return "slurm"
  if _env_int("OMPI_COMM_WORLD_SIZE") > 1:
    return "open mpi"
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("TPU_PROCESS_ADDRESSES") or ""
  if "," in hosts or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return "cloud tpu"
  return None


def initialize(dist_config) -> str:
  """Starts the distributed runtime if the config / environment asks for it. -> a one-line description
  of what was done (for the run's log)."""
  if jax.distributed.is_initialized():
    return f"distributed: already initialised (process {jax.process_index()} of {jax.process_count()})"
  mode = dist_config.initialize
  if mode not in ("auto", "always", "never"):
    raise ValueError(f"config.distributed.initialize must be auto|always|never, got {mode!r}")
  explicit = bool(dist_config.coordinator_address)
  cluster = detected_cluster()
  if mode == "never" or (mode == "auto" and not explicit and cluster is None):
    return "distributed: single process"
  if dist_config.cpu_collectives:
    jax.config.update("jax_cpu_collectives_implementation", dist_config.cpu_collectives)
  if explicit:
    if dist_config.num_processes < 1 or not 0 <= dist_config.process_id < dist_config.num_processes:
      raise ValueError(
        "config.distributed.coordinator_address needs num_processes >= 1 and "
        f"0 <= process_id < num_processes (got {dist_config.num_processes}, "
        f"{dist_config.process_id})"
      )
    jax.distributed.initialize(dist_config.coordinator_address, dist_config.num_processes, dist_config.process_id)
    source = f"coordinator {dist_config.coordinator_address}"
  else:
    jax.distributed.initialize()
    source = f"detected {cluster or 'by JAX'}"
  return (
    f"distributed: process {jax.process_index()} of {jax.process_count()} ({source}); "
    f"{jax.local_device_count()} local / {jax.device_count()} global devices"
  )
