r"""Why does a tabletop policy fail to pick? Two measurements of a trained run (issue 20, demo item 5):

  python benchmarks/tabletop_grounding.py --workdir=RUN [--step=N] [--scenes=40] [--episodes=20]

1. Does it read the instruction? On `--scenes` fresh pick_object scenes (seeds 1000+), the first frame and
   state under three instructions: the true one ("pick up the red cube"), the same with another cube's colour,
   and "open the drawer". For each, the cosine between the predicted (dx, dy) and the direction from the hand
   to the true target / to that other cube. A policy that grounds the colour word turns toward whichever cube
   it is told; one that ignores the instruction predicts the same move for all three.
2. Where does it close the gripper? `--episodes` closed-loop pick_object episodes (visual matching, seeds 0+):
   at the first close, the hand's distance to the target and to the nearest other cube, and what it grasped
   (the target, another cube, nothing). Grasping precision (a cube within reach at the close) and choosing
   the right cube are separate failures; this separates them.

3. (with `--demos=DIR`, a recording's RLDS dataset dir, e.g. ~/.cache/genvla_jax/tabletop_v3/rlds/tabletop/1.0.0)
   Offline approach error: the first 4 steps of its val pick_object / move_near episodes (the approach), the
   predicted (dx, dy) against the expert's, in cm, beside the error of always predicting the mean move.

The policy sees the cameras it was trained with (its metadata.cameras: the front camera, or front + wrist).
"""

import argparse
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]

from genvla_jax.eval.envs import tabletop  # noqa: E402
from genvla_jax.inference import policy as policy_lib  # noqa: E402


def _direction(env, colour) -> np.ndarray:
  d = (env.cube(colour) - env.hand)[:2]
  return d / np.linalg.norm(d)


def _unit(v) -> np.ndarray:
  return np.asarray(v, np.float64) / (np.linalg.norm(v) + 1e-9)


def instruction_swap(policy, env, scenes: int) -> dict:
  """-> {instruction kind: (mean cos to the true target, mean cos to the other cube)}."""
  cosines = {"true": [], "other colour": [], "open the drawer": []}
  for seed in range(1000, 1000 + scenes):
    obs = env.reset("pick_object", seed)
    ep = env.episode
    other = next(c for c in sorted(tabletop.COLORS) if c != ep.target and abs(env.cube(c)[0]) < 1)
    instructions = [ep.instruction, ep.instruction.replace(ep.target, other), "open the drawer"]
    actions, _ = policy.act(
      np.stack([obs["image"]] * 3), instructions, states=np.stack([obs["state"]] * 3), full_width=True
    )
    for kind, action in zip(cosines, np.asarray(actions)[:, 0, :2]):
      u = _unit(action)
      cosines[kind].append((u @ _direction(env, ep.target), u @ _direction(env, other)))
  out = {k: tuple(np.mean(v, axis=0)) for k, v in cosines.items()}
  # does naming the other cube turn the move toward it? per scene, paired: (other colour - true) on "cos to the
  # other cube", with its standard error
  turn = np.array(cosines["other colour"])[:, 1] - np.array(cosines["true"])[:, 1]
  out["turn"] = (float(turn.mean()), float(turn.std(ddof=1) / np.sqrt(len(turn))))
  return out


def first_closes(policy, envs, episodes: int) -> list[dict]:
  """Closed-loop pick_object episodes -> per episode: success, and at the first close the hand's distance to
  the target / nearest other cube and what was grasped (None: the episode never closed)."""
  rows = []
  for start in range(0, episodes, len(envs)):
    group = envs[: min(len(envs), episodes - start)]
    policy.reset()
    obs = [e.reset("pick_object", start + i) for i, e in enumerate(group)]
    first, done = [None] * len(group), [False] * len(group)
    while not all(done):
      actions, _ = policy.act(
        np.stack([o["image"] for o in obs]),
        [o["instruction"] for o in obs],
        states=np.stack([o["state"] for o in obs]),
        full_width=True,
      )
      for i, env in enumerate(group):
        if done[i]:
          continue
        was_closed = env.closed
        obs[i], _, done[i] = env.step(np.asarray(actions)[i, 0])
        if env.closed and not was_closed and first[i] is None:
          target = env.episode.target
          on_table = [c for c in tabletop.COLORS if abs(env.cube(c)[0]) < 1]
          distance = {c: float(np.linalg.norm(env.cube(c) - env.hand)) for c in on_table}
          first[i] = {
            "to_target": distance[target],
            "to_other": min(v for c, v in distance.items() if c != target),
            "grasped": "target" if env.grasped == target else ("other cube" if env.grasped else "nothing"),
          }
    rows += [{"success": bool(e.episode.success), "first_close": f} for e, f in zip(group, first)]
  return rows


def approach_error(policy, demos: str, cameras) -> tuple[float, float, int]:
  """-> (mean xy error of the predicted first-4-step moves, of the mean move, frames) on the val episodes."""
  import io

  from PIL import Image

  from genvla_jax.data import rlds

  rows = []
  for episode in rlds.RLDSDataset(demos, "val"):
    task = episode["episode_metadata/task"]
    if (task.decode() if isinstance(task, bytes) else str(task)) not in ("pick_object", "move_near"):
      continue
    for step in episode["steps"][:4]:
      frames = [np.asarray(Image.open(io.BytesIO(step[f"observation/{c}"]))) for c in cameras]
      instruction = step["language_instruction"]
      instruction = instruction.decode() if isinstance(instruction, bytes) else str(instruction)
      image = frames[0] if len(frames) == 1 else np.stack(frames)
      rows.append((image, instruction, np.asarray(step["observation/state"]), np.asarray(step["action"])[:2]))
  predicted = []
  for i in range(0, len(rows), 16):
    chunk = rows[i : i + 16]
    actions, _ = policy.act(
      np.stack([r[0] for r in chunk]), [r[1] for r in chunk], states=np.stack([r[2] for r in chunk]), full_width=True
    )
    predicted += list(np.asarray(actions)[:, 0, :2])
  labels = np.stack([r[3] for r in rows])
  error = np.linalg.norm(np.stack(predicted) - labels, axis=1).mean()
  blind = np.linalg.norm(labels.mean(0) - labels, axis=1).mean()
  return float(error), float(blind), len(rows)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
  parser.add_argument("--scenes", type=int, default=40)
  parser.add_argument("--episodes", type=int, default=20)
  parser.add_argument("--num_envs", type=int, default=5)
  parser.add_argument("--demos", default="", help="a recording's RLDS dataset dir: also the offline approach error")
  args = parser.parse_args()
  policy = policy_lib.Policy.from_workdir(args.workdir, step=args.step)
  cameras = tuple(policy.metadata.cameras) or ("image",)
  size = policy.config.model.image_size
  envs = [tabletop.TabletopEnv(image_size=size, cameras=cameras) for _ in range(args.num_envs)]
  try:
    swap = instruction_swap(policy, envs[0], args.scenes)
    rows = first_closes(policy, envs, args.episodes)
    approach = approach_error(policy, os.path.expanduser(args.demos), cameras) if args.demos else None
  finally:
    for env in envs:
      env.close()
  print(f"run {args.workdir} step {policy.step} (cameras {', '.join(cameras)})")
  print(f"\n1. first move on {args.scenes} pick scenes: cosine of the predicted (dx, dy) with the direction to")
  print("| instruction | the true target | the other cube |\n|---|---|---|")
  turn, turn_se = swap.pop("turn")
  for kind, (to_target, to_other) in swap.items():
    print(f"| {kind} | {to_target:+.2f} | {to_other:+.2f} |")
  print(f"naming the other cube turns the move toward it by {turn:+.2f} (cosine, paired; standard error {turn_se:.2f})")
  closed = [r["first_close"] for r in rows if r["first_close"]]
  grasped = {k: sum(c["grasped"] == k for c in closed) for k in ("target", "other cube", "nothing")}
  print(f"\n2. {len(rows)} closed-loop pick episodes: success {sum(r['success'] for r in rows)}/{len(rows)}; ")
  print(f"   closed the gripper in {len(closed)}; at the first close it held the target {grasped['target']}, ")
  print(f"   another cube {grasped['other cube']}, nothing {grasped['nothing']}")
  if closed:
    print(
      f"   hand to target at the first close: median {100 * np.median([c['to_target'] for c in closed]):.1f} cm; "
      f"to the nearest other cube: median {100 * np.median([c['to_other'] for c in closed]):.1f} cm"
    )

  if approach:
    error, blind, n = approach
    print(f"\n3. approach moves of {n} val frames: xy error {100 * error:.2f} cm (the mean move: {100 * blind:.2f} cm)")


if __name__ == "__main__":
  main()
