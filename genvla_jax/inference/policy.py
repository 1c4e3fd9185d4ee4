"""The policy: camera frame(s) + instruction -> continuous action chunk, from a run directory alone.

Uses the checkpoint's own config and statistics, the run's tokenizers (tokenizers/factory.py) and the
training pipeline's own observation -> model-input transform (data/transforms.py: image, state
normalization, prompt, tokens; parse + de-normalize on the way out), so training and acting cannot
disagree. Loads none of the conversion stack (tests/test_layering.py).
How actions come out is the run's action head (genvla_jax/heads, heads.from_config): token heads decode
text (inference/decode.py) and parse it; the π0 flow head integrates its flow from fresh noise each call
(inference/flow_sampler.py; non-finite outputs fall back to 0.0 and are counted the same way).
Decoding is grammar-constrained by default (`tokenizer.constrained`), so every output parses; with it
off, model output that does not parse (string actions) falls back, per invalid field, to the centre of the
normalized range (0.0 before de-normalization); such fields are counted in `num_invalid_fields` and
reported in the `valid` mask, never silently passed off as model output.
`Policy` implements inference/protocol.Policy (act, reset, metadata, prompt_spec).
Speculative decoding drafts each call's tokens from the previous call's action (`draft_previous`, a
constructor option; default config.inference.draft_previous_action); `reset()` drops that draft.
A run trained with LoRA (config.lora) keeps its adapters in the checkpoint's params; the policy restores them
and merges them into the kernels once (models/lora.merge), so it acts, exports and serves with plain params.
Such a run's checkpoints (and those of a run with optimizer.frozen) hold only the trainable parameters: the
restore rebuilds the frozen base from the checkpoint's reference (training/checkpoint.py, frozen_base.py: the
pretrained import or the seeded initialisation, its fingerprint checked) before the merge.
"""

import os

from absl import logging
import jax

from genvla_jax import cli, config_schema, heads
from genvla_jax.data import transforms
from genvla_jax.inference import protocol
from genvla_jax.models import build, lora as lora_lib
from genvla_jax.tokenizers import factory
from genvla_jax.training import checkpoint, state as state_lib


class Policy:
  """A trained run's policy (protocol.Policy). Besides the protocol: `config`, `params`, `model`, `text`
  (the text tokenizer), `action_tokenizer`, `action_stats` / `state_stats` (the dataset statistics it
  de-normalizes / normalizes with), `transform` (data/transforms.ObservationTransform of its config),
  `horizon`, `action_dim`, `uses_state`, `step`, `prepare_inputs` / `model_inputs`, and the counters
  `num_invalid_fields`, `draft_stats`."""

  def __init__(
    self,
    config,
    params,
    stats: dict,
    action_dim: int,
    tokenizer_path: str,
    unnorm_dataset: str = "",
    fast_bpe_path: str | None = None,
    draft_previous: bool | None = None,
  ):
    """`draft_previous`: draft speculative decoding from the previous call's action (None: as
    config.inference.draft_previous_action); only with constrained speculative decoding."""
    self.config = config
    self.params = params
    self.step = None  # the checkpoint step, when restored with from_workdir
    self.model = build.from_config(config.model)
    self.text, self.action_tokenizer = factory.make_tokenizers(config, action_dim, tokenizer_path, fast_bpe_path)
    self.action_stats = self.state_stats = None  # none: a VLM pretraining run (VL data only) answers, never acts
    if stats:
      name = unnorm_dataset or config.data.unnorm_dataset or next(iter(stats))
      if name not in stats:
        raise KeyError(f"no action statistics for {name!r}; checkpoint has {sorted(stats)}")
      self.action_stats = stats[name]["action"]
      self.state_stats = stats[name].get("state")
    self.horizon, self.action_dim = config.tokenizer.action_horizon, action_dim
    self._transform, self._transform_config = None, None
    self.state_token_dim = self.transform.state_token_dim  # π0's state token (padded), 0: none
    self.num_invalid_fields = 0
    self.head = heads.from_config(config)  # how actions come out: decoded tokens or the flow sampler
    if self.action_stats is not None:  # a pretraining run has no actions to predict
      self.head.setup_predict(
        self.model, self.action_tokenizer, self.text, action_dim, self.horizon, config.seed, draft_previous
      )

  @property
  def transform(self) -> transforms.ObservationTransform:
    """The observation -> model-input transform of this policy's config and statistics (built once per
    config object: a copy given another config gets its own)."""
    if self._transform_config is not self.config:
      self._transform = transforms.ObservationTransform.from_config(
        self.config,
        self.text,
        self.action_tokenizer,
        self.action_dim,
        None if self.action_stats is None else {"action": self.action_stats, "state": self.state_stats},
      )
      self._transform_config = self.config
    return self._transform

  def reset(self):
    """Call at an episode start: the previous action no longer predicts the next one."""
    self.head.reset()

  @property
  def draft_stats(self) -> dict:
    """Speculative decoding's drafted / accepted token counts (token heads; zeros otherwise)."""
    return self.head.draft_stats

  @property
  def metadata(self) -> protocol.PolicyMetadata:
    """Horizon, action size, the robot-state size act() takes (0: none), fixed shapes (full_width)."""
    return protocol.PolicyMetadata(
      horizon=int(self.horizon),
      action_dim=int(self.action_dim),
      state_dim=len(self.state_stats["mean"]) if self.uses_state else 0,
      fixed_shapes=True,
      image_size=self.transform.image_size,
      action_tokenizer=self.config.tokenizer.action,
      cameras=self.cameras,
    )

  @property
  def cameras(self) -> tuple[str, ...]:
    """The cameras act() takes, in order: config.data.cameras' names ("" where unnamed), model.num_cameras
    of them (preflight keeps the two equal for a trained run); () for one unnamed camera."""
    count = max(1, int(self.config.model.num_cameras))
    names = [c for c in transforms.cameras_of(self.config.data) if c][:count]
    if count == 1 and not names:
      return ()  # one unnamed camera: images [B,H,W,3] (protocol.PolicyMetadata's default)
    return tuple(names + [""] * (count - len(names)))

  def prompt_spec(self) -> protocol.PromptSpec:
    """The run's prompt template, separator, text tokenizer and token limit (what prepare_inputs uses)."""
    transform = self.transform
    return protocol.PromptSpec(
      template=transform.template,
      separator=transform.separator,
      max_text_len=transform.max_text_len,
      tokenizer=self.text,
      state_stats=self.state_stats if transform.prompt_uses_state else None,
    )

  @classmethod
  def from_workdir(
    cls, workdir: str, step: int | None = None, unnorm_dataset: str = "", draft_previous: bool | None = None
  ) -> "Policy":
    """Restores params (only) of the given checkpoint, or else of the newest one that reads (a corrupt
    newest checkpoint falls back to the previous one, with a warning). Read-only: nothing in the run
    directory is created, cleaned or deleted (safe while the run trains). `draft_previous`: see
    __init__."""
    workdir = os.path.abspath(os.path.expanduser(workdir))
    if not os.path.isdir(workdir):
      raise checkpoint.CheckpointError(
        f"run directory {workdir} does not exist (give a run directory that genvla_jax.train wrote)"
      )
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), read_only=True)

    def restore(candidate):
      meta = ckpt.restore_meta(candidate)
      config = config_schema.upgrade(meta["config"])  # fields newer than the run get their defaults
      model = build.from_config(config.model)
      lora = lora_lib.Spec.from_config(config.lora)
      params = ckpt.restore_params(  # (adapters-only: the frozen base rebuilt and checked first)
        candidate, state_lib.abstract_params(model, config.model.image_size, jax.devices()[0], lora)
      )
      params = lora_lib.merged(params, lora.alpha)  # (no adapters: as restored)
      return {"meta": meta, "config": config, "params": params}

    try:
      step, restored = ckpt.restore_newest_good(restore, step)
    finally:
      ckpt.close()
    logging.info("policy from %s step %d", workdir, step)
    meta = restored["meta"]
    fast_bpe = os.path.join(workdir, meta["fast_bpe"]) if "fast_bpe" in meta else None
    policy = cls(
      restored["config"],
      restored["params"],
      meta["stats"],
      meta["action_dim"],
      os.path.join(workdir, meta["tokenizer"]),
      unnorm_dataset,
      fast_bpe,
      draft_previous,
    )
    policy.step = step
    return policy

  def prepare_inputs(self, images, instructions, full_width: bool = False, states=None):
    """uint8 images [B,H,W,3] (one camera) or rows of C cameras ([B,C,H,W,3], or [B][C] frames of any sizes,
    None where one is missing; in config.data.cameras' order) + B instructions (+ normalized states [B,S] for
    prompts that write the state) -> model inputs (pixels [B,S,S,3] or [B,C,S,S,3], tokens, input_mask):
    `model_inputs` without the camera mask."""
    return self.model_inputs(images, instructions, full_width, states)[:3]

  def model_inputs(self, images, instructions, full_width: bool = False, states=None, image_mask=None):
    """-> (pixels, tokens, input_mask, image_mask [B,C] bool or None): `transform.policy_inputs` (the training
    example without its answer; a missing camera as training feeds one), checked against the cameras the model
    sees (config.model.num_cameras). The prompt is cut to the longest row unless `full_width` (max_text_len: one
    shape for every call)."""
    pixels, tokens, mask, image_mask = self.transform.policy_inputs(
      images, instructions, states, full_width, image_mask
    )
    expected, got = build.num_cameras(self.config.model), 1 if pixels.ndim == 4 else pixels.shape[1]
    if got != expected:
      raise ValueError(
        f"this policy sees {expected} camera(s) per observation (config.model.num_cameras); got rows with "
        f"{got} (images [B,H,W,3] for one camera, [B,C,H,W,3] for C)"
      )
    return pixels, tokens, mask, image_mask

  @property
  def uses_state(self) -> bool:
    """True when act() needs `states` (π0's state token, or a prompt that writes the state)."""
    return self.transform.uses_state

  def act(self, images, instructions, *, states=None, full_width: bool = False, image_mask=None):
    """images uint8 [B,H,W,3] (or one [H,W,3]); with several cameras (config.model.num_cameras, in
    config.data.cameras' order) [B,C,H,W,3] or [B][C] frames of any sizes (or one row: [C,H,W,3] / C frames),
    None for a missing frame, and optionally image_mask [B,C] (or [C]) bool, False where a camera is missing;
    instructions list[str] (or one str), states [B,S] in the robot's units (only for policies that take
    it: `uses_state`) -> (actions [B,H_chunk,D] float32 de-normalized, valid [B,H_chunk,D] bool).
    `full_width`: see prepare_inputs (the harness and the server use it so that batches of a size compile
    once)."""
    if self.action_stats is None:
      raise cli.UserError(
        "this run has no action statistics: it was trained on VL data only (data.robot_fraction=0, a VLM "
        "pretraining run); it answers questions (genvla_jax.eval.vqa) but has no actions to give"
      )
    single = isinstance(instructions, str)
    if single:
      images, instructions = [images], [instructions]
      states = None if states is None else [states]
      image_mask = None if image_mask is None else [image_mask]
    if len(images) != len(instructions):
      raise ValueError(f"{len(images)} images but {len(instructions)} instructions")
    states = self.transform.normalize_states(states, len(images))
    pixels, tokens, mask, image_mask = self.model_inputs(images, instructions, full_width, states, image_mask)
    cameras = {} if image_mask is None else {"image_mask": image_mask}  # heads without cameras work as before
    normalized, valid = self.head.predict(
      self.params, pixels, tokens, mask, self.transform.state_token(states), **cameras
    )
    invalid = int((~valid).sum())
    if invalid:
      self.num_invalid_fields += invalid
    actions = self.transform.denormalize_actions(normalized)
    return (actions[0], valid[0]) if single else (actions, valid)
