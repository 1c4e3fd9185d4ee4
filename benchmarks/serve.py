r"""Policy server load test: p50 / p99 latency and throughput at 1, 4 and 16 concurrent clients.

  python benchmarks/serve.py [--checkpoint=RUN] [--clients=1,4,16] [--requests=40]

Without --checkpoint a tiny demo model is trained for 2 steps first (latency does not depend on the
weights: constrained decoding emits the same number of tokens). The server runs in this process (its
own thread and event loop); each client is a thread with its own websocket connection sending
`--requests` requests one after another (a robot control loop). Reference, measured in the same run:
`Policy.act` on one frame called directly (no server, no batching) — the ratio column is each row's
p50 latency over that.
"""

import asyncio
import os
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags
import numpy as np

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", "", "run directory (default: a tiny demo model trained for 2 steps)")
flags.DEFINE_string("clients", "1,4,16", "concurrent client counts")
flags.DEFINE_integer("requests", 40, "requests per client")


def tiny_run(root: str) -> str:
  from configs import pi0_plus
  from genvla_jax import train

  config = pi0_plus.get_config("demo")
  config.unlock()
  config.data.demo_dir = os.path.join(root, "demo")
  config.data.cache_dir = os.path.join(root, "cache")
  config.train.update(steps=2, checkpoint_every=2)
  train.train(config, os.path.join(root, "run"), printer=lambda *a, **k: None)
  return os.path.join(root, "run")


def main(argv):
  del argv
  from genvla_jax import serve
  from genvla_jax.data import demo
  from genvla_jax.inference import policy as policy_lib
  from genvla_jax.serving import client as client_lib, server as server_lib

  workdir = FLAGS.checkpoint or tiny_run(tempfile.mkdtemp(prefix="genvla_serve_bench_"))
  image = demo.render(demo.random_scene(np.random.default_rng(0)))
  prompt = "move to the red square"

  direct = policy_lib.Policy.from_workdir(workdir, draft_previous=False)  # as served: no drafts
  for _ in range(3):
    direct.act(image, prompt)
  times = []
  for _ in range(FLAGS.requests):
    t = time.perf_counter()
    direct.act(image, prompt)
    times.append(time.perf_counter() - t)
  reference = float(np.median(times))

  policy = policy_lib.Policy.from_workdir(workdir)
  srv = server_lib.PolicyServer(policy, serve.metadata(policy), max_batch=16)
  ready, loop_box = threading.Event(), {}

  async def run_server():
    loop_box["loop"], loop_box["stop"], started = asyncio.get_running_loop(), asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(srv.serve("127.0.0.1", 0, ready=started, stop=loop_box["stop"]))
    await started.wait()
    ready.set()
    await task

  thread = threading.Thread(target=lambda: asyncio.run(run_server()), daemon=True)
  thread.start()
  ready.wait(60)
  obs = {"image": image, "prompt": prompt}
  with client_lib.PolicyClient("127.0.0.1", srv.port) as c:  # compile every batch size once
    for size in (1, 2, 4, 8, 16):
      policy.act([image] * size, [prompt] * size, full_width=True)
    c.infer(obs)

  print(f"reference: Policy.act on one frame, direct: p50 {reference * 1000:.1f} ms")
  print(
    f"{'clients':>7} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'mean batch':>10} {'p50 vs direct':>13}"
  )
  for n in [int(x) for x in FLAGS.clients.split(",")]:
    latencies, lock = [], threading.Lock()
    batches_before = dict(srv.stats)

    def worker():
      with client_lib.PolicyClient("127.0.0.1", srv.port) as c:
        for _ in range(FLAGS.requests):
          t = time.perf_counter()
          c.infer(obs)
          with lock:
            latencies.append(time.perf_counter() - t)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    start = time.perf_counter()
    for t in threads:
      t.start()
    for t in threads:
      t.join()
    wall = time.perf_counter() - start
    batches = srv.stats["batches"] - batches_before["batches"]
    p50, p99 = np.percentile(latencies, 50), np.percentile(latencies, 99)
    print(
      f"{n:7d} {len(latencies):8d} {p50 * 1000:8.1f} {p99 * 1000:8.1f} {len(latencies) / wall:8.1f} "
      f"{len(latencies) / max(batches, 1):10.1f} {p50 / reference:13.2f}",
      flush=True,
    )
  loop_box["loop"].call_soon_threadsafe(loop_box["stop"].set)
  thread.join(30)


if __name__ == "__main__":
  app.run(main)
