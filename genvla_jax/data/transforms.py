"""THE observation -> model-input transform, built once from a run's config (+ its statistics and
tokenizers) and called by the training pipeline (robot and VL examples), the policy and the VQA answerer.

  decode (bytes -> uint8) -> resize / augment (training only, keyed by the caller's rng) -> state
  normalization -> prompt text (robot prompt: instruction, and the state for templates with "{state}")
  -> tokenize (prompt.build_prompt: with the answer tokens in training, none at inference)

and the inverse for outputs: de-normalize (what the action head predicts: a token head parses its tokens
with the action tokenizer, heads/tokens.py). This is the only place that
reads config.data.prompt, tokenizer.max_text_len, prompt_separator and vl_overflow to build inputs, so
training and acting cannot disagree on them. Imports nothing of the conversion stack (the policy and the
server import it): instruction augmentation is handed in as a callable.

A prompt longer than tokenizer.max_text_len raises PromptTooLongError for robot rows (their length is
fixed by the config; preflight.tokenizer_fit_problems checks it before training) and at inference. A VL
training row that does not fit (real corpora have long questions and answers) is, with
tokenizer.vl_overflow="truncate" (default), cut by prompt.build_truncated_prompt (answer cut, no EOS; a
question that fills max_len alone: no loss) and flagged `vl_truncated` in the batch, logged as the
training metric `vl_truncated_fraction` (training/step.py); with "fail" it raises naming the row.

Cameras: `cameras_of(config.data)` is the one reader of the camera list (the pipeline, prepare's checks,
offline eval, predict and the policy take it from here). With one camera (config.data.cameras [] or one
name) examples carry `image` uint8 [S,S,3] and no `image_mask`, as before cameras existed. With C > 1 a
robot example carries `image` uint8 [C,S,S,3] in that order and `image_mask` bool [C] (a camera its record
lacks: zeros and False); a VL example has its one image in camera 0 and the others masked, so robot and
VL rows stack into one batch. Augmentation draws each camera's crop and colour jitter independently (in
camera order, from the example's rng): the views differ, so one crop box would not mean one thing. At
inference `cameras` / `policy_inputs` take rows of C frames ([C,H,W,3], or a list of C frames of any
sizes; None: a missing camera) and give float32 [B,C,S,S,3] + image_mask.
"""

import dataclasses
from typing import Any, Callable

import numpy as np

from genvla_jax import heads
from genvla_jax.data import augment as augment_lib, preprocess, stats as stats_lib
from genvla_jax.tokenizers import prompt as prompt_lib


def cameras_of(data_config) -> list[str]:
  """The cameras every robot example carries, in order: config.data.cameras, or [""] (each dataset's
  primary camera) when it lists none. Its length is what model.num_cameras must be (preflight checks)."""
  return [str(c) for c in data_config.cameras] or [""]


def _is_cameras(row) -> bool:
  """True when an observation row holds several camera frames ([C,H,W,3], or a list of frames / None)."""
  if isinstance(row, (list, tuple)):
    return any(f is None or np.ndim(f) == 3 for f in row)
  return np.ndim(row) == 4


@dataclasses.dataclass(frozen=True, eq=False)
class ObservationTransform:
  """Observation -> model input for one run (and one robot dataset's statistics). Pure: the same inputs
  (and rng) give the same outputs."""

  image_size: int  # config.model.image_size
  template: str  # config.data.prompt (robot prompt: "{instruction}", optionally "{state}")
  separator: str  # config.tokenizer.prompt_separator
  max_text_len: int  # config.tokenizer.max_text_len
  horizon: int  # config.tokenizer.action_horizon
  action_dim: int
  text: Any  # the text tokenizer
  action_tokenizer: Any = None  # None: the flow head (no answer tokens)
  action_stats: dict | None = None
  state_stats: dict | None = None
  state_token_dim: int = 0  # π0's state token (zero-padded), 0: none
  augment: Any = None  # config.data.augment (training only)
  instructions: Callable | None = None  # (instruction, rng) -> (instruction, paraphrased) (training only)
  vl_overflow: str = "truncate"  # config.tokenizer.vl_overflow: VL training rows over max_text_len
  num_cameras: int = 1  # cameras per training example: len(cameras_of(config.data)); > 1: [C,S,S,3] + image_mask

  def __post_init__(self):
    if self.vl_overflow not in prompt_lib.VL_OVERFLOW:
      raise ValueError(
        f"tokenizer.vl_overflow={self.vl_overflow!r}: choose one of {', '.join(map(repr, prompt_lib.VL_OVERFLOW))}"
      )

  @classmethod
  def from_config(
    cls, config, text_tokenizer, action_tokenizer, action_dim: int, stats: dict | None = None, instructions=None
  ) -> "ObservationTransform":
    """`stats`: one robot dataset's {"action": ..., "state": ...} (None: VL only); `instructions`: an
    instruction augmenter (data/instruction_aug.py) for training."""
    stats = stats or {}
    return cls(
      image_size=int(config.model.image_size),
      template=config.data.prompt,
      separator=config.tokenizer.prompt_separator,
      max_text_len=int(config.tokenizer.max_text_len),
      horizon=int(config.tokenizer.action_horizon),
      action_dim=int(action_dim),
      text=text_tokenizer,
      action_tokenizer=action_tokenizer,
      action_stats=stats.get("action"),
      state_stats=stats.get("state"),
      state_token_dim=heads.from_config(config).state_token_dim,  # the batch field the head needs
      augment=config.data.augment,
      instructions=instructions,
      vl_overflow=config.tokenizer.vl_overflow,
      num_cameras=len(cameras_of(config.data)),
    )

  # -- the steps -------------------------------------------------------------------------------------------

  @property
  def prompt_uses_state(self) -> bool:
    """True when the robot prompt writes the normalized state as text."""
    return preprocess.prompt_uses_state(self.template)

  @property
  def uses_state(self) -> bool:
    """True when acting needs the robot state (π0's state token, or a prompt that writes it)."""
    return bool(self.state_token_dim) or self.prompt_uses_state

  def image(self, image, rng=None, train: bool = False) -> np.ndarray:
    """Encoded bytes or uint8 [H,W,3] -> uint8 [S,S,3] (the training batch's pixels); `train`: the
    random crop + colour jitter of config.data.augment, drawn from `rng`."""
    if isinstance(image, bytes):
      image = preprocess.decode_image(image)
    return augment_lib.augment_and_resize(image, self.image_size, rng, self.augment if train else None)

  def camera_images(self, frames, rng=None, train: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """C frames (encoded bytes or uint8 [H,W,3]; None: the camera is missing) -> (uint8 [C,S,S,3], image_mask
    bool [C]): `image` per camera (its own augmentation draws, in camera order), zeros where one is missing."""
    out = np.zeros((len(frames), self.image_size, self.image_size, 3), np.uint8)
    present = np.array([f is not None for f in frames])
    for c, frame in enumerate(frames):
      if frame is not None:
        out[c] = self.image(frame, rng, train)
    return out, present

  def pixels(self, images) -> np.ndarray:
    """uint8 images, a row per observation: [H,W,3] (one camera; any H, W) -> float32 [B,S,S,3] in [-1,1], the
    model's input at inference (what the model computes from `image` itself in training); rows of C cameras
    ([C,H,W,3], or C frames of any sizes; None: missing, zeros) -> [B,C,S,S,3] (`cameras` gives the mask)."""
    return self.cameras(images)[0]

  def cameras(self, images, image_mask=None) -> tuple[np.ndarray, np.ndarray | None]:
    """Observation rows (see `pixels`) + optional image_mask [B,C] bool (False: missing) -> (pixels,
    image_mask [B,C] bool or None): None when every camera is present (or a row is one camera), else the
    given mask with the None frames also False (their pixels: what zeros become, as in training)."""
    rows = list(images)
    if not rows or not _is_cameras(rows[0]):
      if image_mask is not None:
        raise ValueError("image_mask [B,C] is for rows of several cameras ([B,C,H,W,3]); got one camera per row")
      return np.stack([preprocess.prepare_image(im, self.image_size) for im in rows]), None
    if not all(_is_cameras(r) for r in rows) or len({len(r) for r in rows}) != 1:
      raise ValueError(f"every observation needs the same cameras; got rows of {sorted({len(r) for r in rows})}")
    blank = np.zeros((self.image_size, self.image_size, 3), np.uint8)
    pixels = np.stack([[preprocess.prepare_image(blank if f is None else f, self.image_size) for f in r] for r in rows])
    missing = np.array([[f is None for f in r] for r in rows])
    if image_mask is not None:
      image_mask = np.asarray(image_mask, bool)
      if image_mask.shape != missing.shape:
        raise ValueError(f"image_mask of shape {image_mask.shape}; expected [B,C] = {list(missing.shape)}")
      return pixels, image_mask & ~missing
    return pixels, (~missing if missing.any() else None)

  def normalize_state(self, state) -> np.ndarray:
    """Robot-unit state [..., S] -> normalized by the dataset's statistics."""
    return stats_lib.normalize(np.asarray(state, np.float32), self.state_stats)

  def robot_prompt(self, instruction: str, normalized_state=None) -> str:
    """The robot prompt (prefix); the state is written only when the template has "{state}"."""
    return preprocess.robot_prompt(self.template, instruction, normalized_state if self.prompt_uses_state else None)

  def tokens(self, prefix: str, answer_ids=None) -> dict[str, np.ndarray]:
    """prompt.build_prompt with the run's tokenizer, token limit and separator (answer_ids None: inference)."""
    return prompt_lib.build_prompt(self.text, prefix, answer_ids, self.max_text_len, self.separator)

  # -- training ----------------------------------------------------------------------------------------------

  def robot_example(self, record, rng, train: bool = True) -> dict:
    """Step record (pipeline.StepChunkSource: image bytes, instruction, state, actions [H,D], action_pad)
    -> one robot row of the training batch (data/pipeline.py's docstring). `train`: instruction and image
    augmentation as configured (instruction first, then the image, from `rng`)."""
    actions = stats_lib.normalize(record["actions"], self.action_stats)
    ids, num_clipped = (None, 0) if self.action_tokenizer is None else self.action_tokenizer.encode(actions)
    instruction, paraphrased = record["instruction"], False
    if train and self.instructions is not None:
      instruction, paraphrased = self.instructions(instruction, rng)
    state = None
    if self.prompt_uses_state or self.state_token_dim:
      state = self.normalize_state(record["state"])
    example = dict(**self._robot_images(record, rng, train), **self.tokens(self.robot_prompt(instruction, state), ids))
    example.update(
      is_robot=np.bool_(True),
      actions=actions,
      action_pad=record["action_pad"],
      num_clipped=np.int32(num_clipped),
      paraphrased=np.bool_(paraphrased),
      vl_truncated=np.bool_(False),
    )
    if self.state_token_dim:
      example["state"] = preprocess.pad_state(state, self.state_token_dim)
    return example

  def _robot_images(self, record, rng, train: bool) -> dict:
    """A record's `image` (one camera) -> {image}; its `frames` (pipeline.StepChunkSource with several
    cameras: C frames, None where missing) -> {image [C,S,S,3], image_mask [C]}."""
    if self.num_cameras == 1:
      return dict(image=self.image(record["image"], rng, train))
    frames = record.get("frames")
    if frames is None or len(frames) != self.num_cameras:
      got = "one camera" if frames is None else f"{len(frames)} cameras"
      raise ValueError(
        f"this transform feeds {self.num_cameras} cameras (config.data.cameras) but the record has {got} "
        "(pipeline.StepChunkSource with the same camera list)"
      )
    image, present = self.camera_images(frames, rng, train)
    return dict(image=image, image_mask=present)

  def vl_example(self, record, rng, train: bool = True) -> dict:
    """{"image": bytes, "question", "answer"} (convert_vl.py records) -> one VL row of the training batch
    (question -> answer text; no actions). A row over max_text_len: cut and flagged `vl_truncated`
    (vl_overflow "truncate", module docstring), or PromptTooLongError naming the record's source ("fail")."""
    prefix, answer_ids = self.question_prompt(record["question"]), self.text.encode(record["answer"])
    if self.vl_overflow == "truncate":
      tokens, truncated = prompt_lib.build_truncated_prompt(
        self.text, prefix, answer_ids, self.max_text_len, self.separator
      )
    else:
      try:
        tokens, truncated = self.tokens(prefix, answer_ids), False
      except prompt_lib.PromptTooLongError as e:
        raise prompt_lib.PromptTooLongError(
          f"VL example {record.get('source', '(no source)')}: {e} Or set tokenizer.vl_overflow='truncate' "
          "(over-long VL rows cut and counted)."
        ) from None
    image = self.image(record["image"], rng, train)
    cameras = {"image": image}
    if self.num_cameras > 1:  # the VL image is camera 0; the others are missing (zeros, masked)
      stacked = np.zeros((self.num_cameras, *image.shape), np.uint8)
      stacked[0] = image
      cameras = dict(image=stacked, image_mask=np.arange(self.num_cameras) == 0)
    out = dict(
      **cameras,
      **tokens,
      is_robot=np.bool_(False),
      actions=np.zeros((self.horizon, self.action_dim), np.float32),
      action_pad=np.ones(self.horizon, bool),
      num_clipped=np.int32(0),
      paraphrased=np.bool_(False),
      vl_truncated=np.bool_(truncated),
    )
    if self.state_token_dim:
      out["state"] = np.zeros(self.state_token_dim, np.float32)
    return out

  @staticmethod
  def question_prompt(question: str, template: str = "{question}") -> str:
    """The VL prefix: the question (training), or a benchmark's template around it (VQA)."""
    return template.format(question=question)

  # -- inference ---------------------------------------------------------------------------------------------

  def normalize_states(self, states, batch: int):
    """act()'s robot-unit states [B,S] -> normalized [B,S] (None when the run takes no state); checked:
    present, shape [batch, S], finite."""
    if not self.uses_state:
      return None
    own_dim = len(self.state_stats["mean"])
    if states is None:
      raise ValueError(f"this policy takes the robot state ({own_dim} values) as input: pass act(..., states=[B,S])")
    states = np.asarray(states, np.float32)
    if states.shape != (batch, own_dim):
      raise ValueError(f"states of shape {states.shape}; expected {(batch, own_dim)}")
    if not np.all(np.isfinite(states)):
      raise ValueError(f"non-finite robot state: {states}")
    return self.normalize_state(states)

  def state_token(self, normalized_states):
    """Normalized states [B,S] -> π0's state token input [B,state_token_dim] (None without one)."""
    return preprocess.pad_state(normalized_states, self.state_token_dim) if self.state_token_dim else None

  def _prompts(self, prefixes, full_width: bool):
    prompts = [self.tokens(p) for p in prefixes]
    tokens = np.stack([p["tokens"] for p in prompts])
    mask = np.stack([p["input_mask"] for p in prompts])
    width = tokens.shape[1] if full_width else int(mask.sum(1).max())  # trim padding shared by all rows
    return tokens[:, :width], mask[:, :width]

  def _batch(self, images, prefixes, full_width: bool):
    return self.pixels(images), *self._prompts(prefixes, full_width)

  def policy_inputs(self, images, instructions, normalized_states=None, full_width: bool = False, image_mask=None):
    """B observations (uint8 [B,H,W,3]: one camera; rows of C cameras: [B,C,H,W,3] or [B][C] frames of any
    sizes, None where one is missing) + B instructions (+ normalized states [B,S], written into prompts that
    have "{state}"; + image_mask [B,C] bool) -> (pixels [B,S,S,3] or [B,C,S,S,3] float32, tokens [B,W],
    input_mask [B,W], image_mask [B,C] bool or None: `cameras`): the training example's image(s) and prompt
    without its answer. W: the longest row, or max_text_len with `full_width` (one shape for every call)."""
    states = [None] * len(instructions) if normalized_states is None else normalized_states
    pixels, image_mask = self.cameras(images, image_mask)
    tokens, mask = self._prompts([self.robot_prompt(i, s) for i, s in zip(instructions, states)], full_width)
    return pixels, tokens, mask, image_mask

  def vqa_inputs(self, images, questions, template: str = "{question}", full_width: bool = True):
    """uint8 images + questions -> (pixels, tokens, input_mask): the VL example's image and prompt
    (`template` around the question) without its answer."""
    return self._batch(images, [self.question_prompt(q, template) for q in questions], full_width)

  # -- outputs -----------------------------------------------------------------------------------------------

  def denormalize_actions(self, normalized) -> np.ndarray:
    """Normalized actions -> the robot's units (the dataset's statistics)."""
    return stats_lib.denormalize(normalized, self.action_stats)
