"""The policy: camera frame + instruction -> continuous action chunk, from a run directory alone.

Uses the checkpoint's own config and statistics and the same preprocessing functions as training
(data/preprocess.py, tokenizers/prompt.py, data/stats.py), so training and acting cannot disagree.
Decoding is grammar-constrained by default (`tokenizer.constrained`), so every output parses; with it
off, model output that does not parse (string actions) falls back, per invalid field, to the centre of the
normalized range (0.0 before de-normalization); such fields are counted in `num_invalid_fields` and
reported in the `valid` mask, never silently passed off as model output.
"""

import os

from absl import logging
import jax
import ml_collections
import numpy as np

from genvla_jax.data import pipeline, preprocess, stats as stats_lib
from genvla_jax.inference import decode
from genvla_jax.models import vlm
from genvla_jax.tokenizers import actions as actions_lib, prompt as prompt_lib
from genvla_jax.training import checkpoint, state as state_lib


class Policy:

  def __init__(self, config, params, stats: dict, action_dim: int, tokenizer_path: str,
               unnorm_dataset: str = "", fast_bpe_path: str | None = None):
    self.config = config
    self.params = params
    self.model = vlm.from_config(config.model)
    self.text, self.action_tokenizer = pipeline.make_tokenizers(config, action_dim, tokenizer_path,
                                                                fast_bpe_path)
    name = unnorm_dataset or config.data.unnorm_dataset or next(iter(stats))
    if name not in stats:
      raise KeyError(f"no action statistics for {name!r}; checkpoint has {sorted(stats)}")
    self.action_stats = stats[name]["action"]
    self.horizon, self.action_dim = config.tokenizer.action_horizon, action_dim
    constrained = config.tokenizer.get("constrained", True)
    self.grammar = actions_lib.make_grammar(self.action_tokenizer) if constrained else None
    inference = config.get("inference", {})
    decoding_model = vlm.for_decoding(self.model)
    length = self.action_tokenizer.max_decode_len()
    if self.grammar is not None and inference.get("speculative", True):
      self.draft_previous = inference.get("draft_previous_action", True)
      spec = decode.make_speculative_decoder(decoding_model, length, self.text.eos_id, self.text.pad_id,
                                             self.grammar, inference.get("proposal_len", 8))
      self.decoder = lambda params, *inputs: spec(params, *inputs, self._draft(len(inputs[0])))
    else:
      self.draft_previous = False
      greedy = decode.make_greedy_decoder(decoding_model, length, self.text.eos_id, self.text.pad_id,
                                          self.grammar)
      self.decoder = lambda params, *inputs: {"tokens": greedy(params, *inputs)}
    self.previous_tokens = None
    self.draft_stats = {"drafted": 0, "accepted": 0}
    self.num_invalid_fields = 0

  def _draft(self, batch: int):
    """The previous call's action tokens as the speculative draft (same batch size), else none."""
    if not self.draft_previous or self.previous_tokens is None or len(self.previous_tokens) != batch:
      return None
    return self.previous_tokens

  def reset(self):
    """Call at an episode start: the previous action no longer predicts the next one."""
    self.previous_tokens = None

  @classmethod
  def from_workdir(cls, workdir: str, step: int | None = None, unnorm_dataset: str = "") -> "Policy":
    """Restores params (only) of the latest (or given) checkpoint of a run directory."""
    workdir = os.path.abspath(os.path.expanduser(workdir))
    ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
    step = ckpt.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints")
    meta = ckpt.restore_meta(step)
    config = ml_collections.ConfigDict(meta["config"])
    model = vlm.from_config(config.model)
    params = ckpt.restore_params(step, state_lib.abstract_params(model, config.model.image_size,
                                                               jax.devices()[0]))
    ckpt.close()
    logging.info("policy from %s step %d", workdir, step)
    fast_bpe = os.path.join(workdir, meta["fast_bpe"]) if "fast_bpe" in meta else None
    return cls(config, params, meta["stats"], meta["action_dim"],
               os.path.join(workdir, meta["tokenizer"]), unnorm_dataset, fast_bpe)

  def prepare_inputs(self, images, instructions, full_width: bool = False):
    """uint8 images [B,H,W,3] + B instructions -> model inputs (the training preprocessing). The
    prompt is cut to the longest row unless `full_width` (max_text_len: one shape for every call)."""
    size = self.config.model.image_size
    pixels = np.stack([preprocess.prepare_image(im, size) for im in images])
    prompts = [prompt_lib.build_prompt(self.text, preprocess.robot_prompt(self.config.data.prompt, ins),
                                       None, self.config.tokenizer.max_text_len) for ins in instructions]
    tokens = np.stack([p["tokens"] for p in prompts])
    mask = np.stack([p["input_mask"] for p in prompts])
    width = tokens.shape[1] if full_width else int(mask.sum(1).max())  # trim padding shared by all rows
    return pixels, tokens[:, :width], mask[:, :width]

  def act(self, images, instructions, full_width: bool = False):
    """images uint8 [B,H,W,3] (or one [H,W,3]), instructions list[str] (or one str) ->
    (actions [B,H_chunk,D] float32 de-normalized, valid [B,H_chunk,D] bool). `full_width`: see
    prepare_inputs (the server uses it so that batches of a size compile once)."""
    single = isinstance(instructions, str)
    if single:
      images, instructions = [images], [instructions]
    if len(images) != len(instructions):
      raise ValueError(f"{len(images)} images but {len(instructions)} instructions")
    pixels, tokens, mask = self.prepare_inputs(images, instructions, full_width)
    result = jax.device_get(self.decoder(self.params, pixels, tokens, mask))
    out = np.asarray(result["tokens"])
    self.previous_tokens = out
    if "drafted" in result:
      self.draft_stats["drafted"] += int(result["drafted"].sum())
      self.draft_stats["accepted"] += int(result["accepted"].sum())
    normalized, valid = zip(*[self.action_tokenizer.decode(row) for row in out])
    normalized, valid = np.stack(normalized), np.stack(valid)
    invalid = int((~valid).sum())
    if invalid:
      self.num_invalid_fields += invalid
      logging.warning("%d action fields did not parse; fell back to the normalized centre "
                      "(%d so far). Raw outputs: %s", invalid, self.num_invalid_fields,
                      [self.text.decode(r) for r in out[~valid.all(axis=(1, 2))]][:4])
    actions = stats_lib.denormalize(normalized, self.action_stats)
    return (actions[0], valid[0]) if single else (actions, valid)
