"""Writes recorded LIBERO expert episodes (data/libero_record.py) as a LeRobot dataset with the `lerobot` library
itself, in the layout of openpi's LIBERO dataset (examples/libero/convert_libero_data_to_lerobot.py): image and
wrist_image (dtype image, [S,S,3]), state float32 [8], actions float32 [7], one task string per episode, robot_type
panda. Runs inside the lerobot virtualenv (tests/fixtures/make_lerobot_fixtures.sh); imports nothing of genvla_jax.

  python libero_lerobot_writer.py EPISODES_JSON OUT_DIR REPO_ID FPS

EPISODES_JSON: a list of .npz paths (image, wrist_image, state, actions, meta = JSON with "instruction").
"""

import json
import sys

import numpy as np

from lerobot.datasets import lerobot_dataset


def features(size: int) -> dict:
  image = {"dtype": "image", "shape": (size, size, 3), "names": ["height", "width", "channel"]}
  return {
    "image": image,
    "wrist_image": dict(image),
    "state": {"dtype": "float32", "shape": (8,), "names": ["state"]},
    "actions": {"dtype": "float32", "shape": (7,), "names": ["actions"]},
  }


def main():
  listing, out, repo_id, fps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
  paths = json.load(open(listing))
  dataset = None
  for n, path in enumerate(paths):
    with np.load(path) as data:
      episode = {k: data[k] for k in ("image", "wrist_image", "state", "actions")}
      instruction = json.loads(str(data["meta"]))["instruction"]
    if dataset is None:
      dataset = lerobot_dataset.LeRobotDataset.create(
        repo_id=repo_id,
        fps=fps,
        features=features(episode["image"].shape[1]),
        root=out,
        robot_type="panda",
        use_videos=False,
      )
    for t in range(len(episode["actions"])):
      dataset.add_frame(
        {
          "image": episode["image"][t],
          "wrist_image": episode["wrist_image"][t],
          "state": episode["state"][t].astype(np.float32),
          "actions": episode["actions"][t].astype(np.float32),
          "task": instruction,
        }
      )
    dataset.save_episode()
    print(f"episode {n + 1}/{len(paths)}: {len(episode['actions'])} frames", file=sys.stderr, flush=True)
  if hasattr(dataset, "finalize"):
    dataset.finalize()


if __name__ == "__main__":
  main()
