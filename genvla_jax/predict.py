r"""Predicts actions with a trained policy (restores the run's latest checkpoint).

python -m genvla_jax.predict --workdir=DIR --image=frame.png --instruction="move to the red square"
python -m genvla_jax.predict --workdir=DIR --image=front.png,wrist.png --instruction="..."   # two cameras
python -m genvla_jax.predict --workdir=DIR --eval_split=val --num_examples=200   # action error report
"""

import json

from absl import flags, logging
import numpy as np

from genvla_jax import cli
from genvla_jax.data import prepare, preprocess, transforms
from genvla_jax.eval import offline
from genvla_jax.inference import policy as policy_lib
from genvla_jax.models import build

FLAGS = flags.FLAGS


def evaluate_split(policy, split: str, num_examples: int) -> dict:
  """Action error on every robot dataset of the run's config, for `split`."""
  results = {}
  for entry in policy.config.data.robot:
    robot_set = prepare.prepare_robot(policy.config.data, entry, split)
    cameras = transforms.cameras_of(policy.config.data)  # the cameras training fed the model, in order
    results[entry["name"]] = offline.action_error(policy, robot_set.converted_dir, num_examples, camera=cameras)
  return results


def read_image(path: str) -> np.ndarray:
  """--image -> uint8 [H,W,3]; errors name the file."""
  try:
    with open(path, "rb") as f:
      return preprocess.decode_image(f.read())
  except (OSError, ValueError) as e:
    raise cli.UserError(f"--image {path}: {e}") from e


def read_images(paths: str):
  """--image "front.png[,wrist.png,...]" -> one frame uint8 [H,W,3], or a list of one per camera."""
  frames = [read_image(p.strip()) for p in paths.split(",")]
  return frames[0] if len(frames) == 1 else frames


def check_cameras(policy, image):
  """The --image count is the policy's camera count (config.model.num_cameras, config.data.cameras' order)."""
  given, expected = (len(image) if isinstance(image, list) else 1), build.num_cameras(policy.config.model)
  if given != expected:
    names = [c or "primary" for c in transforms.cameras_of(policy.config.data)]
    raise cli.UserError(
      f"this policy sees {expected} camera(s) ({', '.join(names)}): give --image with {expected} comma-separated "
      f"frame(s) in that order; got {given}"
    )


def parse_state(text: str) -> np.ndarray:
  """--state "v1,v2,..." -> float32 [S]; errors name the value."""
  try:
    values = np.array([float(v) for v in text.split(",")], np.float32)
  except ValueError as e:
    raise cli.UserError(f"--state {text!r}: {e} (give comma-separated numbers)") from e
  if not np.all(np.isfinite(values)):
    raise cli.UserError(f"--state {text!r} has non-finite values")
  return values


def main(argv):
  if len(argv) > 1:
    raise cli.UserError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  if not FLAGS.eval_split and not (FLAGS.image and FLAGS.instruction):
    raise cli.UserError("give --image and --instruction, or --eval_split")
  if not FLAGS.eval_split and not FLAGS.instruction.strip():
    raise cli.UserError("--instruction is blank")
  image = None if FLAGS.eval_split else read_images(FLAGS.image)  # before the model is loaded
  state = parse_state(FLAGS.state) if FLAGS.state else None
  policy = policy_lib.Policy.from_workdir(FLAGS.workdir, step=FLAGS.step)
  if FLAGS.eval_split:
    print(json.dumps(evaluate_split(policy, FLAGS.eval_split, FLAGS.num_examples), indent=1))
    return
  check_cameras(policy, image)
  if policy.uses_state and state is None:
    raise cli.UserError("this policy takes the robot state: give --state=v1,v2,...")
  try:
    actions, valid = policy.act(image, FLAGS.instruction, states=state)
  except ValueError as e:  # the policy's input checks (prompt length, state shape)
    raise cli.UserError(str(e)) from e
  print(json.dumps({"actions": np.round(actions, 6).tolist(), "valid": valid.tolist()}))


if __name__ == "__main__":
  cli.define_run_dir_flag("run directory written by genvla_jax.train")
  flags.DEFINE_integer("step", None, "checkpoint step (default: the newest readable one)")
  flags.DEFINE_string(
    "image", "", "camera frame (PNG/JPEG); several cameras: comma-separated, in the run's config.data.cameras order"
  )
  flags.DEFINE_string("instruction", "", "language instruction")
  flags.DEFINE_string(
    "state", "", "robot state, comma-separated (policies that take it: π0's state token, prompts with {state})"
  )
  flags.DEFINE_string("eval_split", "", "evaluate action error on this split of the run's robot data")
  flags.DEFINE_integer("num_examples", 200, "frames to evaluate with --eval_split")
  cli.run(main)
