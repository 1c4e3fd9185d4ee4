r"""Predicts actions with a trained policy (restores the run's latest checkpoint).

  python -m genvla_jax.predict --workdir=DIR --image=frame.png --instruction="move to the red square"
  python -m genvla_jax.predict --workdir=DIR --eval_split=val --num_examples=200   # action error report
"""

import json

from absl import app, flags, logging
import numpy as np

from genvla_jax.data import prepare, preprocess
from genvla_jax.eval import offline
from genvla_jax.inference import policy as policy_lib

FLAGS = flags.FLAGS


def evaluate_split(policy, split: str, num_examples: int) -> dict:
  """Action error on every robot dataset of the run's config, for `split`."""
  results = {}
  for entry in policy.config.data.robot:
    robot_set = prepare.prepare_robot(policy.config.data, entry, split)
    results[entry["name"]] = offline.action_error(policy, robot_set.converted_dir, num_examples)
  return results


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  policy = policy_lib.Policy.from_workdir(FLAGS.workdir)
  if FLAGS.eval_split:
    print(json.dumps(evaluate_split(policy, FLAGS.eval_split, FLAGS.num_examples), indent=1))
    return
  if not (FLAGS.image and FLAGS.instruction):
    raise app.UsageError("give --image and --instruction, or --eval_split")
  with open(FLAGS.image, "rb") as f:
    image = preprocess.decode_image(f.read())
  states = None
  if policy.uses_state:
    if not FLAGS.state:
      raise app.UsageError("this policy takes the robot state: give --state=v1,v2,...")
    states = np.array([float(v) for v in FLAGS.state.split(",")], np.float32)
  actions, valid = policy.act(image, FLAGS.instruction, states=states)
  print(json.dumps({"actions": np.round(actions, 6).tolist(), "valid": valid.tolist()}))


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "run directory written by genvla_jax.train", required=True)
  flags.DEFINE_string("image", "", "camera frame (PNG/JPEG)")
  flags.DEFINE_string("instruction", "", "language instruction")
  flags.DEFINE_string("state", "", "robot state, comma-separated (policies that take it: π0's state "
                      "token, prompts with {state})")
  flags.DEFINE_string("eval_split", "", "evaluate action error on this split of the run's robot data")
  flags.DEFINE_integer("num_examples", 200, "frames to evaluate with --eval_split")
  app.run(main)
