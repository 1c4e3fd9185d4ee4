r"""LIBERO simulation speed on this machine (genvla_jax/eval/envs/libero.py: one worker process of LIBERO's own
virtualenv per environment; `bash launch/setup_libero.sh` first).

  MUJOCO_GL=egl python benchmarks/libero_speed.py [--sizes=128,224,256] [--parallel=2] [--steps=100]

Per render size (both cameras, agent view + wrist, as openpi's protocol renders them; the observation is padded
to min(size, 224) px, openpi's 224 for the 256 px renders): a LIBERO-Object scene (task 0) is built and reset to
an initial state (build, then reset = hard reset + set_init_state + 10 settling steps), reset again (a new episode
of the same task: no build), then stepped `--steps` times with a gentle arm motion, first alone, then as
`--parallel` environments in as many processes stepped together (step_async / step_wait: every worker simulates
at once; what the harness would get by stepping its environments that way). No policy: env steps/s is the
ceiling an evaluation approaches when the policy is fast.

Projections (no policy time; every episode runs to its suite's max steps, what a policy that never succeeds
costs: the slowest case): episodes/min = 60 / (reset + max_steps / per-environment steps/s), times the
environments in parallel; wall-clock of the quick protocol (configs/eval_libero.py:quick: LIBERO-Object, 10 tasks x
2 trials, 128 px) and of the full one (50 trials per task, 256 px renders padded to 224: LIBERO-Object alone, and
the four standard suites), each with one environment and with --parallel stepped together.
The harness steps its environments together the same way (eval/harness.py step_all), so with num_envs > 1 its
wall-clock approaches the parallel column. Then (--harness_tasks, default 2; 0: skip) the quick protocol itself,
through eval's harness and report, on its first tasks with a policy that holds still (both cameras, 2 environments,
every episode to its 280 steps): measured seconds, episodes/min, and its 10 tasks extrapolated.
`--sizes=` (empty) runs only that.
"""

import concurrent.futures
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags
import numpy as np

FLAGS = flags.FLAGS
flags.DEFINE_string("sizes", "128,224,256", "render sizes (px, square)")
flags.DEFINE_integer("parallel", 2, "environments in parallel processes")
flags.DEFINE_integer("steps", 100, "steps timed per environment")
flags.DEFINE_string("suite", "object", "suite whose first task is measured")
flags.DEFINE_integer("harness_tasks", 2, "tasks of the quick protocol run through the harness (0: none)")


def _action(t: int) -> list[float]:
  """A slow circle of the end effector with the gripper open (physics like a reaching policy's, no contacts)."""
  return [0.3 * np.sin(t / 8), 0.3 * np.cos(t / 8), 0.05 * np.sin(t / 5), 0.0, 0.0, 0.0, -1.0]


def measure(size: int, parallel: int, steps: int, task: str) -> dict:
  from genvla_jax.eval.envs import libero

  kwargs = dict(render_size=size, image_size=min(size, libero.IMAGE_SIZE), cameras=("image", "wrist_image"))
  out = {"size": size}
  env = libero.LiberoEnv(**kwargs)
  try:
    env.reset(task, 0)
    out["build_s"], out["first_reset_s"] = env.info["seconds"]["build"], env.info["seconds"]["reset"]
    start = time.perf_counter()
    env.reset(task, 1)
    out["reset_s"] = time.perf_counter() - start
    start = time.perf_counter()
    for t in range(steps):
      env.step(_action(t))
    out["steps_per_s_1"] = steps / (time.perf_counter() - start)
  finally:
    env.close()

  libero._RNG_TAPE.clear()  # each parallel environment below replays its own way to its episode (no shared tape)
  envs = [libero.LiberoEnv(**kwargs) for _ in range(parallel)]
  try:
    with concurrent.futures.ThreadPoolExecutor(parallel) as pool:  # the workers build and reset at once
      start = time.perf_counter()
      list(pool.map(lambda i: envs[i].reset(task, 0), range(parallel)))
      out["parallel_build_reset_s"] = time.perf_counter() - start
      start = time.perf_counter()
      list(pool.map(lambda i: envs[i].reset(task, 1), range(parallel)))
      out["parallel_reset_s"] = time.perf_counter() - start
    start = time.perf_counter()
    for t in range(steps):
      for env in envs:
        env.step_async(_action(t))
      for env in envs:
        env.step_wait()
    out["steps_per_s_n"] = parallel * steps / (time.perf_counter() - start)  # all environments together
  finally:
    for env in envs:
      env.close()
  return out


class _HoldStill:
  """A policy that never succeeds: zero motion, gripper open; every episode runs to max_steps (the slowest case)."""

  def __init__(self, cameras):
    from genvla_jax.inference import protocol

    self.metadata = protocol.PolicyMetadata(horizon=10, action_dim=7, state_dim=8, cameras=tuple(cameras))

  def reset(self):
    pass

  def prompt_spec(self):
    return None

  def act(self, images, instructions, *, states=None, full_width=False):
    actions = np.zeros((len(images), 10, 7), np.float32)
    actions[..., 6] = -1.0
    return actions, np.ones(actions.shape, bool)


def harness_run(tasks: int) -> dict:
  """configs/eval_libero.py:quick on its first `tasks` tasks through eval's harness and report (both cameras)."""
  import tempfile

  from configs import eval_libero
  from genvla_jax.eval.__main__ import evaluate

  config = eval_libero.get_config("quick,tasks=" + "+".join(str(i) for i in range(tasks)))
  with tempfile.TemporaryDirectory() as out:
    start = time.perf_counter()
    summary = evaluate(config, _HoldStill(("image", "wrist_image")), out, "speed", printer=lambda *a, **k: None)
    seconds = time.perf_counter() - start
  return {"episodes": summary["overall"]["episodes"], "seconds": seconds, "num_envs": config.num_envs}


def episode_seconds(reset_s: float, steps_per_s_per_env: float, max_steps: int) -> float:
  return reset_s + max_steps / steps_per_s_per_env


def projections(rows: list[dict], n: int, suite: str) -> None:
  """The speed table (episodes/min of the measured suite) and the protocols' projected wall-clock."""
  from genvla_jax.eval.envs import libero

  print(f"| render px | build s | reset s | build+reset s, {n} at once | env steps/s, 1 env | env steps/s, {n} envs "
        f"(total) | speed-up | episodes/min, 1 env | episodes/min, {n} envs |")  # fmt: skip
  print("|---|---|---|---|---|---|---|---|---|")
  max_steps = libero.MAX_STEPS[libero.SUITE_NAMES[suite]]
  by_size = {}
  for r in rows:
    one = episode_seconds(r["reset_s"], r["steps_per_s_1"], max_steps)
    many = episode_seconds(r["parallel_reset_s"], r["steps_per_s_n"] / n, max_steps)
    by_size[r["size"]] = r
    print(
      f"| {r['size']} | {r['build_s']:.1f} | {r['reset_s']:.1f} | {r['parallel_build_reset_s']:.1f} | "
      f"{r['steps_per_s_1']:.1f} | {r['steps_per_s_n']:.1f} | {r['steps_per_s_n'] / r['steps_per_s_1']:.2f} | "
      f"{60 / one:.2f} | {60 * n / many:.2f} |"
    )
  print(f"\nepisodes/min: {suite} suite episodes run to their {max_steps} steps (no policy time)\n")

  def wall(r, tasks_steps, trials):
    """-> (minutes with 1 env, minutes with n envs stepped together) for [(tasks, max_steps)] x trials."""
    one = sum(
      t * (r["build_s"] + trials * episode_seconds(r["reset_s"], r["steps_per_s_1"], m)) for t, m in tasks_steps
    )
    groups = -(-trials // n)
    many = sum(
      t * (r["parallel_build_reset_s"] + groups * episode_seconds(r["parallel_reset_s"], r["steps_per_s_n"] / n, m))
      for t, m in tasks_steps
    )
    return one / 60, many / 60

  standard = [(10, libero.MAX_STEPS[s]) for s in ("libero_spatial", "libero_object", "libero_goal", "libero_10")]
  print(f"| protocol | render px | episodes | minutes, 1 env | minutes, {n} envs stepped together |")
  print("|---|---|---|---|---|")
  for name, size, tasks_steps, trials in (
    ("quick (object, 2 trials per task)", 128, [(10, libero.MAX_STEPS["libero_object"])], 2),
    ("full, LIBERO-Object (50 trials per task)", 256, [(10, libero.MAX_STEPS["libero_object"])], 50),
    ("full, spatial + object + goal + 10", 256, standard, 50),
  ):
    if size in by_size:
      one, many = wall(by_size[size], tasks_steps, trials)
      episodes = sum(t for t, _ in tasks_steps) * trials
      print(f"| {name} | {size} | {episodes} | {one:.0f} | {many:.0f} |")


def main(argv):
  del argv
  from genvla_jax.eval.envs import libero

  sizes = [int(s) for s in FLAGS.sizes.split(",") if s]
  n, task = FLAGS.parallel, libero.suite_tasks(FLAGS.suite)[0]
  probe = libero.LiberoEnv(render_size=64, image_size=64)
  versions = probe.versions
  probe.close()
  print(f"LIBERO worker: {versions}; MUJOCO_GL={os.environ.get('MUJOCO_GL', 'egl (default)')}")
  print(f"{os.cpu_count()} CPUs, load average before: {os.getloadavg()[0]:.2f}; task {task}", flush=True)
  rows = []
  for size in sizes:
    rows.append(measure(size, n, FLAGS.steps, task))
    print(f"  measured {size} px: {rows[-1]}", flush=True)
  if rows:
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")
    projections(rows, n, FLAGS.suite)
  if FLAGS.harness_tasks:
    print(f"\nload average before the harness run: {os.getloadavg()[0]:.2f}", flush=True)
    run = harness_run(FLAGS.harness_tasks)
    print(
      f"harness, quick protocol on {FLAGS.harness_tasks} of its 10 tasks ({run['episodes']} episodes of 280 steps, "
      f"{run['num_envs']} envs, a policy that holds still): {run['seconds']:.0f} s = "
      f"{run['episodes'] / run['seconds'] * 60:.2f} episodes/min; all 10 tasks: "
      f"{10 * run['seconds'] / FLAGS.harness_tasks / 60:.1f} min; load average after: {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
  app.run(main)
