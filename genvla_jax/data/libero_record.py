r"""LIBERO demonstrations by the scripted expert (eval/envs/libero.py `Expert`), written as a LeRobot dataset by the
`lerobot` library itself, in the layout of openpi's LIBERO dataset (so the `libero` entry of data/registry.py
converts it, as it converts the published demonstrations).

  python -m genvla_jax.data.libero_record --suite=object --episodes_per_task=N --out=DIR [--scenes=fixed|fresh]
      [--tasks=0,5] [--first_episode=0] [--image_size=256] [--num_envs=1] [--lerobot_python=PY]

--scenes=fixed (the default): episode k of a task starts from the task's k-th fixed initial state under openpi's
protocol (libero.py: seed 7, 10 settling steps, the suite's step limit), k = first_episode .. first_episode + N - 1
(at most 49): the very scenes the evaluation runs, so a policy trained on them is tested on its training scenes.
--scenes=fresh: episode k starts from a scene LIBERO's own placement sampler draws after seeding numpy with
100000 + k (libero.FRESH_SEED_BASE + k; the evaluation seeds 7 and takes its objects from the fixed states), the
arm's joints with the fixed states' noise, no initial state set; then the same 10 settling steps and step limit
(any k >= 0). The same seed gives the same scene; each episode's file and DIR/summary.json keep its seed and its
distance to the nearest of the task's 50 fixed initial states (the largest object displacement, m). Measured:
LIBERO-Object's fixed layouts vary by at most ~3 cm per object (several objects never move), so that distance is
millimetres: fresh scenes come from the distribution the fixed states were drawn from, as LIBERO's published
demonstrations do, only not from those 50 states. One DIR holds one kind: mixing is refused.
--tasks: task indices within the suite (default all). Every step keeps the
observation the policy would see (agent view and wrist camera rendered at image_size and turned 180 degrees, as
openpi's dataset stores them; the 8-D state) and the expert's action [7]. Only successful episodes are kept;
failures are counted (and listed in DIR/summary.json).

Resumable: each finished episode is a file under DIR/episodes/ (t<task>_e<episode>.npz for fixed scenes,
t<task>_fresh<episode>.npz for fresh ones, or .failed.json), reused by a second run. Then DIR/lerobot is written
(again when the set of episodes changed) by libero_lerobot_writer.py in the lerobot virtualenv
(${GENVLA_CACHE:-~/.cache/genvla_jax}/venv-lerobot-0.4.4, built by tests/fixtures/make_lerobot_fixtures.sh):
features image, wrist_image (uint8 [S,S,3], stored as images), state float32 [8], actions float32 [7], the task's
instruction; 10 fps, robot_type panda. Then:

  python -m genvla_jax.data.convert_lerobot --dataset=libero --root=DIR/lerobot --out=CONVERTED
  python -m genvla_jax.train --config=configs/pi0_plus.py:full,mixture=libero,robot_dir=CONVERTED ...   # full size
  python -m genvla_jax.train --config=configs/pi0_plus.py:demo,ablation=DS --workdir=RUN \
      --set='data.robot=[{"name": "libero", "path": "CONVERTED", "split": "train", "weight": 1.0}]' \
      --set='data.cameras=["image", "wrist_image"]' --config.model.num_cameras=2 --config.model.image_size=64 \
      --config.tokenizer.max_text_len=128          # the tiny model on a CPU (benchmarks/RESULTS.md, LIBERO item 4)
"""

import dataclasses
import json
import os
import re
import subprocess
import tempfile
import time

from absl import flags
import numpy as np

from genvla_jax import cli
from genvla_jax.eval.envs import libero
from genvla_jax.intervals import wilson_interval

WRITER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "libero_lerobot_writer.py")
LEROBOT_VERSION = "0.4.4"  # writes LeRobot format v3.0
IMAGE_SIZE = 256  # openpi's LIBERO dataset: 256 x 256 agent-view and wrist images
FPS = 10  # openpi's LIBERO conversion (the controller runs at 20 Hz; the published data says 10)


@dataclasses.dataclass
class Recording:
  """One expert episode: image / wrist_image uint8 [T,S,S,3], state float32 [T,8], actions float32 [T,7]."""

  task: str
  episode: int
  instruction: str
  success: bool
  image: np.ndarray
  wrist_image: np.ndarray
  state: np.ndarray
  actions: np.ndarray
  phases: list  # the expert's phase at each step (diagnostics)
  scene: str = "fixed"  # libero.SCENES
  sim_seed: int = 0  # the simulator's seed: openpi's 7 (fixed) or libero.fresh_seed(episode) (fresh)
  seconds: float = 0.0  # wall-clock from the reset to the last step
  nearest_fixed: dict = dataclasses.field(default_factory=dict)  # libero.nearest_fixed_state of the start


# an episode file's stem per scene kind (episode_stem): fixed t03_e007, fresh t03_fresh007
STEM_PATTERNS = {"fixed": re.compile(r"^t\d+_e\d+\."), "fresh": re.compile(r"^t\d+_fresh\d+\.")}


def episode_stem(task: str, episode: int, scene: str = "fixed") -> str:
  """File name stem of (task, episode): t<index within its suite>_e<episode> (fixed initial state, e.g. t03_e007)
  or t<index>_fresh<episode> (fresh scene, e.g. t03_fresh007)."""
  suite, name = libero.split_task(task)
  if scene not in libero.SCENES:
    raise ValueError(f"unknown scene {scene!r}; choose from {libero.SCENES}")
  kind = "e" if scene == "fixed" else "fresh"
  return f"t{libero.SUITES[suite].index(name):02d}_{kind}{episode:03d}"


def check_scenes(episodes_dir: str, scene: str) -> None:
  """UserError when episodes_dir already holds episodes of the other scene kind: one dataset, one kind."""
  if not os.path.isdir(episodes_dir):
    return
  for other, pattern in STEM_PATTERNS.items():
    clash = sorted(f for f in os.listdir(episodes_dir) if pattern.match(f))
    if other != scene and clash:
      raise cli.UserError(
        f"{episodes_dir} holds {len(clash)} {other}-scene episode file(s) ({clash[0]}, ..) and this run records "
        f"{scene} scenes: one directory holds one kind (--scenes={other} to add to it, or another --out)"
      )


def make_env(image_size: int = IMAGE_SIZE) -> libero.LiberoEnv:
  """The recording environment: both cameras, rendered at image_size (no resize), openpi's protocol."""
  return libero.LiberoEnv(image_size=image_size, render_size=image_size, cameras=("image", "wrist_image"))


def record_episodes(envs, jobs, printer=print, scene: str = "fixed"):
  """Runs the expert on each (task, episode) of `jobs`, len(envs) at a time (their simulators step in parallel),
  from fixed initial states or fresh scenes (`scene`, libero.SCENES). Yields a Recording per job as it finishes
  (in finishing order)."""
  jobs = list(jobs)
  running = [None] * len(envs)  # per env: (task, episode, lists) or None

  def start(i):
    if not jobs:
      running[i] = None
      return
    task, episode = jobs.pop(0)
    started = time.perf_counter()
    obs = envs[i].reset(task, episode, scene=scene)
    lists = {"obs": obs, "image": [], "wrist_image": [], "state": [], "actions": [], "phases": []}
    lists.update(started=started, info=envs[i].info)
    running[i] = (task, episode, lists)

  for i in range(len(envs)):
    start(i)
  while any(r is not None for r in running):
    active = [i for i, r in enumerate(running) if r is not None]
    for i in active:
      _, _, lists = running[i]
      action = envs[i].expert_action()
      obs = lists["obs"]
      lists["image"].append(obs["image"][0])
      lists["wrist_image"].append(obs["image"][1])
      lists["state"].append(obs["state"])
      lists["actions"].append(action)
      lists["phases"].append(envs[i].expert_phase[0])
      envs[i].step_async(action)
    for i in active:
      obs, success, done = envs[i].step_wait()
      task, episode, lists = running[i]
      lists["obs"] = obs
      if done:
        yield Recording(
          task,
          episode,
          envs[i].episode.instruction,
          bool(success),
          np.stack(lists["image"]),
          np.stack(lists["wrist_image"]),
          np.stack(lists["state"]).astype(np.float32),
          np.stack(lists["actions"]).astype(np.float32),
          lists["phases"],
          scene=scene,
          sim_seed=int(lists["info"]["sim_seed"]),
          seconds=time.perf_counter() - lists["started"],
          nearest_fixed=libero.nearest_fixed_state(lists["info"]["to_fixed_states"]),
        )
        start(i)


def save_recording(recording: Recording, episodes_dir: str) -> str:
  """A successful episode -> episodes_dir/<stem>.npz (atomically); a failed one -> <stem>.failed.json. -> path."""
  stem = os.path.join(episodes_dir, episode_stem(recording.task, recording.episode, recording.scene))
  meta = {
    "task": recording.task,
    "episode": recording.episode,
    "instruction": recording.instruction,
    "steps": len(recording.actions),
    "success": recording.success,
    "final_phase": recording.phases[-1] if recording.phases else "",
    "scene": recording.scene,
    "sim_seed": recording.sim_seed,
    "seconds": round(recording.seconds, 2),
    "nearest_fixed": recording.nearest_fixed,
  }
  if not recording.success:
    path = stem + ".failed.json"
    with open(path + ".tmp", "w") as f:
      json.dump(meta, f)
  else:
    path = stem + ".npz"
    with open(path + ".tmp", "wb") as f:
      np.savez(
        f,
        image=recording.image,
        wrist_image=recording.wrist_image,
        state=recording.state,
        actions=recording.actions,
        meta=np.array(json.dumps(meta)),
      )
  os.replace(path + ".tmp", path)
  return path


def load_recording(path: str) -> dict:
  """An episode file -> {image, wrist_image, state, actions, meta (dict)}."""
  with np.load(path) as data:
    out = {k: data[k] for k in ("image", "wrist_image", "state", "actions")}
    out["meta"] = json.loads(str(data["meta"]))
  return out


def finished(episodes_dir: str, task: str, episode: int, scene: str = "fixed") -> str | None:
  """The file of a finished (task, episode) from `scene`, or None."""
  stem = os.path.join(episodes_dir, episode_stem(task, episode, scene))
  for suffix in (".npz", ".failed.json"):
    if os.path.exists(stem + suffix):
      return stem + suffix
  return None


def episode_meta(path: str) -> dict:
  """A finished episode's meta (its .npz's meta, or its .failed.json)."""
  if path.endswith(".npz"):
    with np.load(path) as data:
      return json.loads(str(data["meta"]))
  with open(path) as f:
    return json.load(f)


def summarize(episodes_dir: str, jobs, scene: str = "fixed") -> dict:
  """Success per task and overall (with Wilson 95% intervals) over the finished jobs; seconds per episode and the
  scenes' distance to the nearest fixed initial state (m) where the episode files record them."""
  per_task, seconds, distances = {}, [], []
  for task, episode in jobs:
    path = finished(episodes_dir, task, episode, scene)
    if path is None:
      continue
    entry = per_task.setdefault(task, {"episodes": 0, "successes": 0, "failed": [], "steps": []})
    entry["episodes"] += 1
    meta = episode_meta(path)
    if meta.get("seconds"):  # episodes recorded before these were kept have neither
      seconds.append(meta["seconds"])
    if "max_object_m" in meta.get("nearest_fixed", {}):
      distances.append(meta["nearest_fixed"]["max_object_m"])
    if path.endswith(".npz"):
      entry["successes"] += 1
      entry["steps"].append(int(meta["steps"]))
    else:
      entry["failed"].append(episode)
  for entry in per_task.values():
    entry["success_rate"] = entry["successes"] / entry["episodes"]
    entry["wilson95"] = wilson_interval(entry["successes"], entry["episodes"])
    entry["mean_steps"] = float(np.mean(entry["steps"])) if entry["steps"] else 0.0
    del entry["steps"]
  n = sum(e["episodes"] for e in per_task.values())
  s = sum(e["successes"] for e in per_task.values())
  return {
    "episodes": n,
    "successes": s,
    "success_rate": s / n if n else 0.0,
    "wilson95": wilson_interval(s, n),
    "seconds_per_episode": float(np.mean(seconds)) if seconds else None,
    "min_distance_to_fixed_m": float(np.min(distances)) if distances else None,
    "tasks": per_task,
  }


def select_tasks(suite: str, indices=None) -> tuple[str, ...]:
  """The task ids of `suite` at `indices` (within the suite, in its order; None or empty: all of them)."""
  try:
    tasks = libero.suite_tasks(suite)
  except ValueError as e:
    raise cli.UserError(str(e)) from None
  if not indices:
    return tasks
  bad = [i for i in indices if not 0 <= int(i) < len(tasks)]
  if bad:
    raise cli.UserError(f"--tasks={','.join(map(str, indices))}: suite {suite} has tasks 0..{len(tasks) - 1}")
  return tuple(tasks[int(i)] for i in dict.fromkeys(int(i) for i in indices))


def lerobot_python(explicit: str = "") -> str:
  cache = os.environ.get("GENVLA_CACHE") or os.path.expanduser("~/.cache/genvla_jax")
  python = explicit or os.path.join(cache, f"venv-lerobot-{LEROBOT_VERSION}", "bin", "python")
  if not os.path.exists(python):
    raise cli.UserError(
      f"the lerobot virtualenv is missing (no {python}): build it with `bash tests/fixtures/make_lerobot_fixtures.sh` "
      "(it makes ~/.cache/genvla_jax/venv-lerobot-0.4.4), or give --lerobot_python"
    )
  return python


def write_lerobot(episode_files, root: str, python: str, repo_id: str) -> None:
  """The successful episodes' files -> a LeRobot dataset at `root` (replaced), by lerobot in its virtualenv."""
  parent = os.path.dirname(os.path.abspath(root))
  with tempfile.TemporaryDirectory(dir=parent) as tmp:
    listing = os.path.join(tmp, "episodes.json")
    with open(listing, "w") as f:
      json.dump(list(episode_files), f)
    out = os.path.join(tmp, "dataset")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.pop("PYTHONPATH", None)
    # -P: the writer's folder (data/, whose inspect.py would shadow the standard library's) stays off sys.path
    command = [python, "-P", WRITER, listing, out, repo_id, str(FPS)]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode:
      raise RuntimeError(f"writing the LeRobot dataset with {python} failed:\n{result.stderr[-3000:]}")
    if os.path.exists(root):
      old = root + f".old{os.getpid()}"
      os.replace(root, old)
      subprocess.run(["rm", "-rf", old], check=True)
    os.replace(out, root)


def run(
  suite: str,
  episodes_per_task: int,
  out: str,
  first_episode: int = 0,
  image_size: int = IMAGE_SIZE,
  num_envs: int = 1,
  python: str = "",
  printer=print,
  scenes: str = "fixed",
  tasks=None,
) -> dict:
  """Records (or reuses) the episodes of `tasks` (indices within the suite; None: all) from fixed initial states
  or fresh scenes (`scenes`), writes out/lerobot and out/summary.json. -> the summary."""
  tasks = select_tasks(suite, tasks)
  libero.check_expert_tasks(tasks)
  if scenes not in libero.SCENES:
    raise cli.UserError(f"--scenes={scenes}: choose from {', '.join(libero.SCENES)}")
  if first_episode < 0 or episodes_per_task < 1:
    raise cli.UserError(f"--first_episode={first_episode} --episodes_per_task={episodes_per_task}: need >= 0 and >= 1")
  if scenes == "fixed" and first_episode + episodes_per_task > 50:
    raise cli.UserError(
      f"--first_episode={first_episode} --episodes_per_task={episodes_per_task}: each task has initial states 0..49"
    )
  episodes_dir = os.path.join(out, "episodes")
  check_scenes(episodes_dir, scenes)
  python = lerobot_python(python)  # before hours of simulation
  os.makedirs(episodes_dir, exist_ok=True)
  jobs = [(t, first_episode + k) for k in range(episodes_per_task) for t in tasks]  # every task early on
  todo = [j for j in jobs if finished(episodes_dir, *j, scenes) is None]
  printer(
    f"[record] {suite}, {scenes} scenes: {len(jobs)} episodes, {len(jobs) - len(todo)} already recorded, "
    f"{len(todo)} to run"
  )
  started, done = time.perf_counter(), 0
  if todo:
    so_far = summarize(episodes_dir, jobs, scenes)  # the progress line's counts, kept up to date below
    recorded, solved = so_far["episodes"], so_far["successes"]
    envs = [make_env(image_size) for _ in range(min(num_envs, len(todo)))]
    try:
      for recording in record_episodes(envs, todo, scene=scenes):
        save_recording(recording, episodes_dir)
        done, recorded, solved = done + 1, recorded + 1, solved + int(recording.success)
        elapsed = time.perf_counter() - started
        stem = episode_stem(recording.task, recording.episode, scenes)
        printer(
          f"[record] {recorded}/{len(jobs)} episodes | {stem} (seed {recording.sim_seed}) "
          f"{'ok' if recording.success else 'FAILED'} in {len(recording.actions)} steps, {recording.seconds:.0f}s, "
          f"{recording.nearest_fixed['max_object_m'] * 1000:.1f} mm from fixed state "
          f"{recording.nearest_fixed['state']} | success "
          f"{solved}/{recorded} | {elapsed:.0f}s, ETA {elapsed / done * (len(todo) - done):.0f}s",
          flush=True,
        )
    finally:
      for env in envs:
        env.close()
  summary = summarize(episodes_dir, jobs, scenes)
  kept = [finished(episodes_dir, *j, scenes) for j in jobs]
  kept = sorted(p for p in kept if p and p.endswith(".npz"))
  root = os.path.join(out, "lerobot")
  marker = os.path.join(root, "genvla_episodes.json")
  names = [os.path.basename(p) for p in kept]
  if not kept:
    raise RuntimeError(f"the expert solved none of the {len(jobs)} episodes: nothing to write")
  if not (os.path.exists(marker) and json.load(open(marker)) == names):
    t = time.perf_counter()
    write_lerobot(kept, root, python, f"genvla_jax/libero_{suite}_expert" + ("_fresh" if scenes == "fresh" else ""))
    with open(marker, "w") as f:
      json.dump(names, f)
    printer(f"[record] LeRobot dataset written in {time.perf_counter() - t:.0f}s: {root} ({len(kept)} episodes)")
  else:
    printer(f"[record] LeRobot dataset reused: {root} ({len(kept)} episodes)")
  summary.update(suite=suite, first_episode=first_episode, image_size=image_size, lerobot=root, scenes=scenes)
  if scenes == "fresh":
    summary.update(
      fresh_seed_base=libero.FRESH_SEED_BASE,
      seeds=f"episode k: numpy seeded with {libero.FRESH_SEED_BASE} + k before LIBERO's reset (no initial state)",
    )
  with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  lo, hi = summary["wilson95"]
  printer(
    f"[record] expert success {summary['successes']}/{summary['episodes']} = {summary['success_rate']:.2f} "
    f"(95% CI {lo:.2f}-{hi:.2f}); {summary['episodes'] - summary['successes']} failed, left out"
  )
  return summary


FLAGS = flags.FLAGS


def task_indices(values) -> list[int]:
  """--tasks's strings -> task indices; anything but integers is a UserError naming it."""
  try:
    return [int(v) for v in values]
  except ValueError:
    raise cli.UserError(f"--tasks={','.join(values)}: give task indices within the suite, e.g. --tasks=0,5") from None


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS.out:
    raise cli.UserError("give --out=DIR")
  try:
    libero.check_expert_tasks(libero.suite_tasks(FLAGS.suite))
  except ValueError as e:
    raise cli.UserError(str(e)) from None
  run(
    FLAGS.suite,
    FLAGS.episodes_per_task,
    FLAGS.out,
    first_episode=FLAGS.first_episode,
    image_size=FLAGS.image_size,
    num_envs=FLAGS.num_envs,
    python=FLAGS.lerobot_python,
    scenes=FLAGS.scenes,
    tasks=task_indices(FLAGS.tasks),
  )


if __name__ == "__main__":
  flags.DEFINE_string("suite", "object", "LIBERO suite with a scripted expert: object | spatial")
  flags.DEFINE_enum("scenes", "fixed", ["fixed", "fresh"], "episode k from fixed initial state k, or a fresh scene")
  flags.DEFINE_list("tasks", [], "task indices within the suite, e.g. 0,5 (default: all)")
  flags.DEFINE_integer("episodes_per_task", 5, "episodes per task (initial states first_episode, first_episode+1, ..)")
  flags.DEFINE_integer("first_episode", 0, "the first episode's index (fixed: initial state; fresh: seed - 100000)")
  flags.DEFINE_string("out", "", "output directory (episodes/, lerobot/, summary.json)")
  flags.DEFINE_integer("image_size", IMAGE_SIZE, "rendered camera size (openpi's dataset: 256)")
  flags.DEFINE_integer("num_envs", 1, "simulators stepping in parallel (worker processes)")
  flags.DEFINE_string("lerobot_python", "", "the lerobot virtualenv's python (default: CACHE/venv-lerobot-0.4.4)")
  cli.run(main)
