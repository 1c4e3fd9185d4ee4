"""One observation -> model-input transform (data/transforms.py): for the same recorded frame, the training
example (augmentation off) and what the policy's act() feeds the model are identical, token for token and
pixel for pixel — with a prompt that writes the robot state, and with π0's state token too."""

import numpy as np
import pytest

from conftest import tiny_config
from genvla_jax.data import pipeline, preprocess
from genvla_jax.inference import policy as policy_lib

STATE_PROMPT = "What action should the robot take to {instruction}? State: {state}"


def _model_inputs_of_act(policy, image, instruction, state):
  """What act() hands the model (pixels, tokens, mask, π0 state token), captured where it would decode."""
  seen = {}

  def capture(params, pixels, tokens, mask, state_token=None):
    del params
    seen.update(pixels=pixels, tokens=tokens, mask=mask, state=state_token)
    shape = (len(pixels), policy.horizon, policy.action_dim)
    return np.zeros(shape, np.float32), np.ones(shape, bool)

  policy.head.predict = capture  # the action head (token or flow) is where act() hands over the inputs
  policy.act([image], [instruction], states=[state] if policy.uses_state else None, full_width=True)
  return seen


@pytest.mark.parametrize(
  "config_file,prompt",
  [("pi0_plus", None), ("pi0_plus", STATE_PROMPT), ("pi0_baseline", None)],
  ids=["string", "string+state_prompt", "flow+state_token"],
)
def test_training_example_and_policy_input_are_identical(demo_dir, cache_dir, prepared, config_file, prompt):
  config = tiny_config(demo_dir, cache_dir, config_file=config_file)
  robot = prepared.robot[0]
  state_dim = len(robot.stats["state"]["mean"])
  if prompt is not None:
    config.data.prompt, config.tokenizer.max_text_len = prompt, 80  # as the tabletop configs
  config.model.image_size = 24  # smaller than the demo frames: the resize runs
  config.data.augment.enabled = False
  if config.tokenizer.action == "flow":  # as the trainer writes them (the state token zero-padded)
    config.model.action_expert.update(action_dim=prepared.action_dim, state_dim=state_dim + 2)
  (transform, *_), _ = pipeline.example_transforms(config, prepared)  # what make_dataset uses
  policy = policy_lib.Policy(config, None, {robot.name: robot.stats}, prepared.action_dim, config.tokenizer.path)
  source = pipeline.StepChunkSource(robot.converted_dir, config.tokenizer.action_horizon)
  for index in (0, 7, len(source) - 1):
    record = source[index]
    example = pipeline.RobotExample(transform).random_map(record, np.random.default_rng(index))
    frame = preprocess.decode_image(record["image"])
    assert frame.shape[0] > 24 and record["state"].shape == (state_dim,)
    seen = _model_inputs_of_act(policy, frame, record["instruction"], record["state"])
    # pixels: the training batch ships uint8 and the model maps it to [-1,1]; the policy passes that mapping
    assert example["image"].shape == (24, 24, 3) and example["image"].dtype == np.uint8
    np.testing.assert_array_equal(seen["pixels"][0], preprocess.to_unit_range(example["image"]))
    # tokens: the policy's prompt is the training prompt up to the answer, then padding
    prefix = int((example["input_mask"] & ~example["ar_mask"]).sum())
    assert seen["tokens"].shape == (1, config.tokenizer.max_text_len) and int(seen["mask"][0].sum()) == prefix
    np.testing.assert_array_equal(seen["tokens"][0, :prefix], example["tokens"][:prefix])
    assert (seen["tokens"][0, prefix:] == policy.text.pad_id).all()
    if config.tokenizer.action == "flow":
      assert prefix == int(example["input_mask"].sum())  # no answer tokens: the prompt is all
      assert seen["state"].shape == (1, state_dim + 2)
      np.testing.assert_array_equal(seen["state"][0], example["state"])
    else:
      assert example["ar_mask"].sum() > 1  # the training prompt went on with its answer
    written = policy.text.decode([int(t) for t in example["tokens"][1:prefix]])
    state_text = preprocess.state_text(transform.normalize_state(record["state"]))
    assert (state_text in written) == (prompt is not None), written  # the state, as text, iff the template asks
