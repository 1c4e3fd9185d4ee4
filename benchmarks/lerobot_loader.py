r"""LeRobot data: the genvla training pipeline on a converted LeRobot dataset against LeRobot's own loader
(issue 22 item 4), on the same dataset in the same run; conversion time; statistics from the parquet columns
against passes that decode every frame.

  python benchmarks/lerobot_loader.py [--episodes=20] [--length=100] [--size=224] [--workers=0,2]
      [--batches=200] [--warmup=10] [--batch_size=32] [--root=~/.cache/genvla_jax/bench_lerobot]

1. Dataset: written by the `lerobot` library itself (0.4.4: format v3.0, AV1 through libsvtav1, lerobot's
   defaults) in the fixture virtualenv that tests/fixtures/make_lerobot_fixtures.sh builds: `--episodes`
   episodes of `--length` steps, two cameras (front, wrist) of `--size` x `--size` video, state [8], action
   [7] (6 deltas + gripper), four tasks. Reused when ROOT already holds one of that shape.
2. Conversion (genvla_jax.data.convert_lerobot, JPEG at the source size, `--convert_workers` processes):
   time, steps/s, peak RSS of the process tree.
3. Loaders, each in a fresh process, per worker count W: time to the first batch, examples/s over
   `--batches` batches after `--warmup` more, peak RSS of the process tree (main + workers, sampled every
   20 ms) and its growth over the timed batches (flat memory: ~0), and the CPU seconds the process tree
   spent on the timed batches (every thread of main + workers, from /proc): cores busy and examples per
   CPU-second, the loaders' cost on a machine where cores, not the loader, are the limit.
   - genvla: the π0+ training pipeline (configs/pi0_plus.py "full,ablation=DS": robot only, string actions,
     augmentation on, 224 px, tokenization) feeding both cameras (data.cameras = front, wrist), grain with
     W worker processes (0: in the main process, grain's 2 read threads).
   - LeRobot: LeRobotDataset (video_backend="torchcodec", lerobot's default where torchcodec loads) + a
     torch DataLoader as lerobot_train.py builds it (shuffle, batch, W workers, prefetch 2, a new iterator
     per epoch; drop_last here so every batch is full), in the lerobot virtualenv; frames decoded from the
     MP4s at each step's timestamp (both cameras, float [3,H,W]), actions over the same horizon as the
     genvla config (delta_timestamps when it is > 1). No augmentation, no tokenization: it does less per
     example. Its main process runs torch with `--torch_threads` (1, as the DataLoader sets in its workers;
     torch's default of a thread per core made it 20-40x slower at 0 workers on this shared machine).
4. Statistics: `lerobot.statistics` (parquet columns only, metadata read included; the first call in a
   fresh process, and the median of 5 more) against
   (a) a PyAV pass decoding every frame of every video (the least any decoding statistics pass pays) plus
   the same columns, and (b) LeRobot's loader iterating the whole dataset in order (what openpi's
   compute_norm_stats does: issues #504, #688), both in one process.

The lerobot side needs torchcodec, which is not in the fixture virtualenv: installed once with that
virtualenv's pip (`--no-deps --target` CACHE/torchcodec-<version>, put on its PYTHONPATH here; 0.13 loads
beside the fixture's CPU torch 2.13, 0.14 does not) and FFmpeg's shared libraries (Debian:
`apt-get install ffmpeg`). PyPI's torchvision (the "pyav" backend's torchvision.io) is a CUDA build that
does not load beside the CPU torch there.

Runs in two interpreters (this project's and the lerobot virtualenv's, for --write / --lerobot_*), so it
takes argparse flags and imports nothing of genvla_jax at the top.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [HERE, ROOT]

from measure import PeakRSS, tree_cpu_seconds, tree_rss_bytes  # noqa: E402

CACHE = os.path.expanduser(os.environ.get("GENVLA_CACHE", "~/.cache/genvla_jax"))
LEROBOT_VERSION = "0.4.4"  # writes format v3.0
TORCHCODEC_VERSION = "0.13.0"  # built against torch 2.13 (the fixture virtualenv's CPU torch)
FPS = 10
CAMERAS = ("observation.images.front", "observation.images.wrist")
STATE_DIM, ACTION_DIM = 8, 7
TASKS = ("pick up the red cube", "open the top drawer", "put the spoon in the pot", "push the button")
SAMPLE_S = 0.02  # RSS sampling interval


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
  p.add_argument("--episodes", type=int, default=20)
  p.add_argument("--length", type=int, default=100, help="steps per episode")
  p.add_argument("--size", type=int, default=224, help="camera frames are size x size")
  p.add_argument("--workers", default="0,2", help="loader worker process counts (both loaders)")
  p.add_argument("--batches", type=int, default=200, help="batches timed (after the first and the warm-up)")
  p.add_argument("--warmup", type=int, default=10, help="batches skipped after the first")
  p.add_argument("--batch_size", type=int, default=32)
  p.add_argument("--convert_workers", type=int, default=2, help="conversion processes")
  p.add_argument("--root", default=os.path.join(CACHE, "bench_lerobot"), help="where the data is kept")
  p.add_argument("--lerobot_python", default="", help="default: CACHE/venv-lerobot-0.4.4 (built when missing)")
  p.add_argument("--torch_threads", type=int, default=1, help="LeRobot: torch intra-op threads in the main process")
  p.add_argument("--skip_lerobot_stats", action="store_true", help="skip statistics pass (b) (the slowest part)")
  # internal: one measurement in a child process, printing one JSON line
  p.add_argument("--write", default="", help=argparse.SUPPRESS)  # lerobot venv: write the dataset here
  p.add_argument("--lerobot_workers", type=int, default=-1, help=argparse.SUPPRESS)  # lerobot venv: the loader
  p.add_argument("--lerobot_stats", action="store_true", help=argparse.SUPPRESS)  # lerobot venv: stats pass
  p.add_argument("--horizon", type=int, default=1, help=argparse.SUPPRESS)
  p.add_argument("--genvla_workers", type=int, default=-1, help=argparse.SUPPRESS)
  p.add_argument("--convert", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--stats", action="store_true", help=argparse.SUPPRESS)
  return p.parse_args(argv)


def dataset_dir(args) -> str:
  return os.path.join(args.root, f"lerobot_v30_{args.episodes}x{args.length}_{args.size}px")


# -- the dataset, written by lerobot (runs in the lerobot virtualenv) ---------------------------------------


def scene(episode: int, size: int):
  """-> frame(camera, t): a textured table (per episode) with a moving object and gripper, light noise."""
  from PIL import Image

  rng = np.random.default_rng(episode)
  textures = [
    np.asarray(Image.fromarray(rng.integers(40, 220, (12, 12, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC))
    for _ in CAMERAS
  ]
  y, x = np.mgrid[0:size, 0:size].astype(np.float32)
  colour = rng.integers(0, 255, 3).astype(np.float32)

  def frame(camera: int, t: int) -> np.ndarray:
    cy = size * (0.3 + 0.4 * np.sin(0.05 * t + episode + camera))
    cx = size * (0.5 + 0.3 * np.cos(0.04 * t + 2 * camera))
    blob = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (0.004 * size * size))[..., None]
    gy, gx = int(size * (0.2 + 0.005 * t) % size), int(size * (0.6 - 0.003 * t) % size)
    out = textures[camera] * (1 - blob) + colour * blob
    out[gy : gy + size // 10, gx : gx + size // 16] = 60  # the gripper
    out += rng.normal(0, 2, out.shape)  # sensor noise
    return np.clip(out, 0, 255).astype(np.uint8)

  return frame


def write_dataset(args, root: str):
  from lerobot.datasets import lerobot_dataset

  size = args.size
  features = {
    k: {"dtype": "video", "shape": (size, size, 3), "names": ["height", "width", "channels"]} for k in CAMERAS
  }
  features["observation.state"] = {
    "dtype": "float32",
    "shape": (STATE_DIM,),
    "names": [f"s{i}" for i in range(STATE_DIM)],
  }
  names = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
  features["action"] = {"dtype": "float32", "shape": (ACTION_DIM,), "names": names}
  ds = lerobot_dataset.LeRobotDataset.create(
    repo_id="genvla_jax/bench", fps=FPS, features=features, root=root, robot_type="genvla_bench", use_videos=True
  )
  for e in range(args.episodes):
    rng = np.random.default_rng(1000 + e)
    frame = scene(e, size)
    state = np.cumsum(rng.normal(0, 0.02, (args.length, STATE_DIM)), 0).astype(np.float32)
    action = rng.normal(0, 0.05, (args.length, ACTION_DIM)).astype(np.float32)
    action[:, 6] = (np.arange(args.length) > args.length // 2).astype(np.float32)
    for t in range(args.length):
      values = {key: frame(c, t) for c, key in enumerate(CAMERAS)}
      values.update({"observation.state": state[t], "action": action[t], "task": TASKS[e % len(TASKS)]})
      ds.add_frame(values)
    ds.save_episode()
  ds.finalize()
  shutil.rmtree(os.path.join(root, "images"), ignore_errors=True)  # lerobot's temporary frame files


# -- measurements -------------------------------------------------------------------------------------------


def time_batches(it, start: float, batches: int, warmup: int, batch_size: int) -> dict:
  """Time to the first batch (since `start`), then examples/s over `batches` after `warmup` more, the CPU seconds
  the process tree (main + workers, every thread) spent on them, and the tree's RSS after the warm-up and at the
  end (growth over the timed batches)."""
  next(it)
  first = time.perf_counter() - start
  for _ in range(warmup):
    next(it)
  rss0, cpu0 = tree_rss_bytes(os.getpid()), tree_cpu_seconds(os.getpid())
  t = time.perf_counter()
  for _ in range(batches):
    next(it)
  seconds = time.perf_counter() - t
  cpu = tree_cpu_seconds(os.getpid()) - cpu0
  growth = tree_rss_bytes(os.getpid()) - rss0
  examples = batches * batch_size
  return dict(
    first_s=first,
    examples_per_s=examples / seconds,
    examples_per_cpu_s=examples / max(cpu, 1e-9),
    cores=cpu / seconds,
    growth_mib=growth / 2**20,
  )


def open_lerobot(args, root: str):
  import torch
  from lerobot.datasets.lerobot_dataset import LeRobotDataset

  # One intra-op thread in the main process, as the DataLoader sets in its workers: with torch's default
  # (a thread per core) collate and the frames' float conversion ran 20-40x slower at 0 workers (17-36
  # against ~350-650 examples/s) on 2 cores shared with other jobs.
  torch.set_num_threads(args.torch_threads)
  delta = {"action": [i / FPS for i in range(args.horizon)]} if args.horizon > 1 else None
  return LeRobotDataset("genvla_jax/bench", root=root, video_backend="torchcodec", delta_timestamps=delta)


def run_lerobot(args, root: str) -> dict:
  """LeRobotDataset + torch DataLoader (shuffled, decoding video), `args.lerobot_workers` workers."""
  import torch

  sampler = PeakRSS(tree_rss_bytes, interval=SAMPLE_S)
  start = time.perf_counter()
  ds = open_lerobot(args, root)
  loader = torch.utils.data.DataLoader(
    ds, batch_size=args.batch_size, shuffle=True, num_workers=args.lerobot_workers, drop_last=True
  )

  def batches():
    while True:  # epochs
      yield from loader

  result = time_batches(batches(), start, args.batches, args.warmup, args.batch_size)
  return dict(result, peak_gib=sampler.stop() / 2**30)


def _describe(x) -> dict:
  x = np.asarray(x, np.float64)
  return dict(mean=x.mean(0), std=x.std(0), min=x.min(0), max=x.max(0), q01=np.quantile(x, 0.01, 0))


def run_lerobot_stats(args, root: str) -> dict:
  """Statistics the way openpi's compute_norm_stats gets them: the loader over the whole dataset, in order
  (every frame decoded), state and action collected."""
  import torch

  start = time.perf_counter()
  loader = torch.utils.data.DataLoader(open_lerobot(args, root), batch_size=args.batch_size, num_workers=0)
  states, actions = [], []
  for batch in loader:
    states.append(batch["observation.state"].numpy())
    actions.append(batch["action"].numpy().reshape(-1, ACTION_DIM))
  _ = _describe(np.concatenate(states)), _describe(np.concatenate(actions))  # what the pass is for
  return dict(seconds=time.perf_counter() - start, steps=sum(len(s) for s in states))


def genvla_config(args, converted: str):
  from configs import pi0_plus

  config = pi0_plus.get_config("full,ablation=DS")  # robot only, string actions; augmentation on; 224 px
  config.unlock()
  config.data.robot = [dict(name="lerobot", path=converted, split="train", weight=1.0)]
  config.data.cameras = ["front", "wrist"]
  config.model.num_cameras = 2
  config.data.cache_dir = os.path.join(args.root, "cache")
  config.data.batch_size = args.batch_size
  config.tokenizer.path = os.path.join(args.root, "tokenizer.model")
  config.model.llm.vocab_size = 1024
  return config


def run_genvla(args, converted: str) -> dict:
  from absl import flags

  from genvla_jax.data import pipeline, prepare

  flags.FLAGS([sys.argv[0]])  # grain's worker processes read absl flags (this script parses its own)
  config = genvla_config(args, converted)
  config.data.num_workers = args.genvla_workers
  sampler = PeakRSS(tree_rss_bytes, interval=SAMPLE_S)
  start = time.perf_counter()
  prepared = prepare.prepare(config.data)
  it = iter(pipeline.make_dataset(config, prepared, seed=0))
  result = time_batches(it, start, args.batches, args.warmup, args.batch_size)
  if hasattr(it, "close"):
    it.close()
  return dict(result, peak_gib=sampler.stop() / 2**30)


def run_convert(args, root: str, converted: str) -> dict:
  from genvla_jax.data import convert_lerobot

  shutil.rmtree(converted, ignore_errors=True)
  sampler = PeakRSS(tree_rss_bytes, interval=SAMPLE_S)
  start = time.perf_counter()
  meta = convert_lerobot.convert_lerobot(
    root, converted, image_format="jpeg", episodes_per_part=5, num_workers=args.convert_workers
  )
  seconds = time.perf_counter() - start
  return dict(
    seconds=seconds, steps=meta["num_steps"], skipped=meta["skipped_episodes"], peak_gib=sampler.stop() / 2**30
  )


def run_stats(root: str) -> dict:
  """`lerobot.statistics` (parquet columns; metadata read included; first call, then the median of 5) against
  a PyAV pass decoding every frame of every video plus the same columns."""
  import av
  import pyarrow.parquet as pq

  from genvla_jax.data import lerobot, registry, stats as stats_lib

  def parquet_stats():
    ds = lerobot.LeRobotDir(root)
    return lerobot.statistics(ds, lerobot.resolve_mapping(ds, registry.lerobot("lerobot")))

  start = time.perf_counter()
  ours = parquet_stats()
  first = time.perf_counter() - start
  times = []
  for _ in range(5):
    t = time.perf_counter()
    parquet_stats()
    times.append(time.perf_counter() - t)
  t = time.perf_counter()
  frames = 0
  for path in sorted(glob.glob(os.path.join(root, "videos", "**", "*.mp4"), recursive=True)):
    with av.open(path) as container:
      for frame in container.decode(video=0):
        frame.to_ndarray(format="rgb24")
        frames += 1
  ds = lerobot.LeRobotDir(root)
  mapping = lerobot.resolve_mapping(ds, registry.lerobot("lerobot"))
  files = sorted({ds.path(e.data_file) for e in ds.split_episodes("train")})
  tables = [pq.read_table(p, columns=[mapping.action_key, mapping.state_key]) for p in files]
  actions = np.concatenate([lerobot.column_array(x, mapping.action_key, mapping.action_dim) for x in tables])
  states = np.concatenate([lerobot.column_array(x, mapping.state_key, mapping.state_dim) for x in tables])
  _ = stats_lib.describe(mapping.map_actions(actions), mapping.normalize_mask), stats_lib.describe(states)
  decode = time.perf_counter() - t
  return dict(
    first_s=first, median_s=float(np.median(times)), decode_s=decode, frames=frames, steps=ours["state"]["count"]
  )


# -- the run ------------------------------------------------------------------------------------------------


def lerobot_python(args) -> str:
  """The lerobot virtualenv's python (built by the fixture script when missing)."""
  python = args.lerobot_python or os.path.join(CACHE, f"venv-lerobot-{LEROBOT_VERSION}", "bin", "python")
  if not os.path.exists(python):
    with tempfile.TemporaryDirectory() as tmp:  # the script builds its virtualenvs, then writes its fixtures
      subprocess.run(["bash", os.path.join(ROOT, "tests", "fixtures", "make_lerobot_fixtures.sh"), tmp], check=True)
  return python


def lerobot_env(python: str) -> dict:
  """The environment of the lerobot children: torchcodec (installed once beside the virtualenv), offline."""
  target = os.path.join(CACHE, f"torchcodec-{TORCHCODEC_VERSION}")
  if not os.path.isdir(os.path.join(target, "torchcodec")):
    pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps"]
    subprocess.run(pip + ["--target", target, f"torchcodec=={TORCHCODEC_VERSION}"], check=True)
  env = dict(os.environ, PYTHONPATH=target, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
  check = subprocess.run([python, "-c", "import torchcodec.decoders"], env=env, capture_output=True, text=True)
  if check.returncode:
    sys.exit(
      f"torchcodec {TORCHCODEC_VERSION} does not load in {python}: it needs FFmpeg's shared libraries "
      f"(versions 4-7; Debian: apt-get install ffmpeg).\n{check.stderr[-1500:]}"
    )
  return env


def child(python: str, args, *flags: str, env=None) -> dict:
  common = [f"--root={args.root}", f"--episodes={args.episodes}", f"--length={args.length}", f"--size={args.size}"]
  common += [f"--batches={args.batches}", f"--warmup={args.warmup}", f"--batch_size={args.batch_size}"]
  common += [f"--convert_workers={args.convert_workers}", f"--torch_threads={args.torch_threads}"]
  out = subprocess.run(
    [python, os.path.abspath(__file__), *common, *flags], capture_output=True, text=True, env=env, cwd=ROOT
  )
  if out.returncode:
    sys.exit(f"{' '.join(flags)} failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def load() -> tuple:
  return tuple(round(x, 2) for x in os.getloadavg())


def main(args):
  root, converted = dataset_dir(args), os.path.join(args.root, "converted")
  if args.write:
    write_dataset(args, args.write)
    return
  if args.lerobot_workers >= 0:
    print(json.dumps(run_lerobot(args, root)))
    return
  if args.lerobot_stats:
    print(json.dumps(run_lerobot_stats(args, root)))
    return
  if args.genvla_workers >= 0:
    print(json.dumps(run_genvla(args, converted)))
    return
  if args.convert:
    print(json.dumps(run_convert(args, root, converted)))
    return
  if args.stats:
    print(json.dumps(run_stats(root)))
    return

  total = time.perf_counter()
  print(f"# load average at the start {load()} ({os.cpu_count()} cores)", flush=True)
  python = lerobot_python(args)
  env = lerobot_env(python)
  os.makedirs(args.root, exist_ok=True)
  if not os.path.isfile(os.path.join(root, "meta", "info.json")):
    t = time.perf_counter()
    tmp = root + f".tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    out = subprocess.run(
      [python, os.path.abspath(__file__), f"--write={tmp}", f"--episodes={args.episodes}", f"--length={args.length}"]
      + [f"--size={args.size}"],
      capture_output=True,
      text=True,
      env=env,
    )
    if out.returncode:
      sys.exit(f"writing the dataset with lerobot failed:\n{out.stderr[-3000:]}")
    os.replace(tmp, root)
    print(f"# dataset written by lerobot {LEROBOT_VERSION} in {time.perf_counter() - t:.0f} s: {root}", flush=True)
  else:
    print(f"# dataset reused: {root}", flush=True)
  mib = sum(os.path.getsize(p) for p in glob.glob(os.path.join(root, "**"), recursive=True) if os.path.isfile(p))
  print(
    f"# {args.episodes} episodes x {args.length} steps, 2 cameras {args.size}x{args.size} AV1 "
    f"({mib / 2**20:.1f} MiB), state {STATE_DIM}, action {ACTION_DIM}",
    flush=True,
  )

  from genvla_jax.tokenizers import text

  tokenizer = os.path.join(args.root, "tokenizer.model")
  if not os.path.exists(tokenizer):
    text.train_sentencepiece(
      list(TASKS) * 25 + ["+0.0312 -0.5000 | +1.0000"] * 50 + [str(i) for i in range(100)], tokenizer, vocab_size=384
    )
  horizon = genvla_config(args, converted).tokenizer.action_horizon

  c = child(sys.executable, args, "--convert")
  print(
    f"# conversion ({args.convert_workers} processes, JPEG at {args.size} px): {c['seconds']:.1f} s, "
    f"{c['steps'] / c['seconds']:.0f} steps/s ({c['steps']} steps, {c['skipped']} episodes skipped), "
    f"peak RSS {c['peak_gib']:.2f} GiB",
    flush=True,
  )

  rows = []
  for workers in [int(w) for w in args.workers.split(",")]:
    reference = child(python, args, f"--lerobot_workers={workers}", f"--horizon={horizon}", env=env)
    ours = child(sys.executable, args, f"--genvla_workers={workers}")
    rows.append((workers, ours, reference))
  print(
    f"\n{'loader':<10} {'workers':>7} {'first batch s':>13} {'ex/s':>7} {'cores busy':>10} {'ex/CPU-s':>8} "
    f"{'peak RSS GiB':>12} {'RSS growth MiB':>14} {'vs LeRobot':>10} {'per CPU-s vs LeRobot':>20}"
  )
  for workers, ours, reference in rows:
    for name, r in (("genvla", ours), ("LeRobot", reference)):
      ratio = r["examples_per_s"] / reference["examples_per_s"]
      cpu_ratio = r["examples_per_cpu_s"] / reference["examples_per_cpu_s"]
      print(
        f"{name:<10} {workers:7d} {r['first_s']:13.2f} {r['examples_per_s']:7.1f} {r['cores']:10.2f} "
        f"{r['examples_per_cpu_s']:8.1f} {r['peak_gib']:12.2f} {r['growth_mib']:14.1f} {ratio:9.2f}x {cpu_ratio:19.2f}x"
      )

  s = child(sys.executable, args, "--stats")
  lines = [
    ("genvla lerobot.statistics (parquet), first call", s["first_s"]),
    ("genvla lerobot.statistics (parquet), median of 5", s["median_s"]),
    (f"PyAV pass decoding every frame ({s['frames']} frames) + columns", s["decode_s"]),
  ]
  if not args.skip_lerobot_stats:
    ls = child(python, args, "--lerobot_stats", f"--horizon={horizon}", env=env)
    lines.append((f"LeRobot loader over every step, in order ({ls['steps']} steps)", ls["seconds"]))
  print(f"\n{'statistics (' + str(s['steps']) + ' steps)':<64} {'seconds':>9} {'/ parquet first call':>20}")
  for name, seconds in lines:
    print(f"{name:<64} {seconds:9.3f} {seconds / s['first_s']:19.1f}x")
  print(f"\n# whole benchmark {time.perf_counter() - total:.0f} s; load average {load()}")


if __name__ == "__main__":
  main(parse_args())
