"""The token head: actions are answer tokens (string S, 256 bins, FAST) written by the run's action
tokenizer (tokenizers/actions.py), trained by next-token cross-entropy and predicted by (grammar-
constrained, by default speculative) decoding (inference/decode.py), parsed back by the tokenizer."""

from absl import logging
import jax
import numpy as np

from genvla_jax.heads import common
from genvla_jax.inference import decode
from genvla_jax.models import build


class TokenHead:
  """heads.Head for token actions. Prediction state: the previous call's tokens (the speculative
  draft, until reset()) and `draft_stats`."""

  name = "tokens"
  state_token_dim = 0  # no state token (a prompt may still write the state as text)

  def __init__(self, constrained: bool = True, speculative: bool = True, proposal_len: int = 8, draft_previous=False):
    self.constrained, self.speculative, self.proposal_len = constrained, speculative, proposal_len
    self.default_draft_previous = draft_previous
    self.previous_tokens = None
    self.draft_stats = {"drafted": 0, "accepted": 0}
    self._draft_previous = False
    self.decoder = None

  @classmethod
  def from_config(cls, config) -> "TokenHead":
    inference = config.inference
    return cls(
      bool(config.tokenizer.constrained),
      bool(inference.speculative),
      int(inference.proposal_len),
      bool(inference.draft_previous_action),
    )

  @staticmethod
  def fit_to_data(config, prepared) -> None:
    del config, prepared  # the action tokenizer is built from the data's sizes at run time

  # -- training --------------------------------------------------------------------------------------

  def loss_sums(self, params, batch, model, rng=None) -> dict:
    del rng  # deterministic
    logits = model.apply({"params": params}, *common.model_inputs(batch), image_mask=common.image_mask(batch))
    return common.text_sums(logits, batch)

  def loss_totals(self, batch) -> dict:
    return {"ce": common.total_tokens(batch)}

  def metrics(self, sums, ratio) -> dict:
    del sums, ratio
    return {}

  def extra_flops(self, model_config, batch: int, seq: int, action_horizon: int) -> float:
    del model_config, batch, seq, action_horizon
    return 0.0  # the action tokens are text tokens: already counted

  # -- prediction ------------------------------------------------------------------------------------

  def setup_predict(
    self, model, action_tokenizer, text_tokenizer, action_dim: int, horizon: int, seed: int = 0, draft_previous=None
  ):
    """Builds the decoder (once per policy). `draft_previous` (None: the config's default): draft
    speculative decoding from the previous call's action (only with constrained speculative decoding)."""
    del action_dim, horizon, seed
    if draft_previous is not None:
      self.default_draft_previous = draft_previous
    self.action_tokenizer, self.text = action_tokenizer, text_tokenizer
    grammar = action_tokenizer.grammar() if self.constrained else None
    decoding_model = build.for_decoding(model)
    length = action_tokenizer.max_decode_len()
    if grammar is not None and self.speculative:
      self._draft_previous = self.default_draft_previous
      spec = decode.make_speculative_decoder(
        decoding_model, length, text_tokenizer.eos_id, text_tokenizer.pad_id, grammar, self.proposal_len
      )
      self.decoder = lambda params, images, tokens, mask, image_mask=None: spec(
        params, images, tokens, mask, self._draft(len(images)), image_mask
      )
    else:
      greedy = decode.make_greedy_decoder(decoding_model, length, text_tokenizer.eos_id, text_tokenizer.pad_id, grammar)
      self.decoder = lambda params, *inputs, image_mask=None: {"tokens": greedy(params, *inputs, image_mask)}
    self.grammar = grammar

  def _draft(self, batch: int):
    """The previous call's action tokens as the speculative draft (same batch size), else none."""
    if not self._draft_previous or self.previous_tokens is None or len(self.previous_tokens) != batch:
      return None
    return self.previous_tokens

  def reset(self):
    self.previous_tokens = None

  def predict(self, params, pixels, tokens, mask, state_token=None, image_mask=None):
    """-> (normalized actions [B,H,D], valid [B,H,D]) parsed from the decoded tokens (never raises)."""
    del state_token
    result = jax.device_get(self.decoder(params, pixels, tokens, mask, image_mask=image_mask))
    out = np.asarray(result["tokens"])
    self.previous_tokens = out
    if "drafted" in result:
      self.draft_stats["drafted"] += int(result["drafted"].sum())
      self.draft_stats["accepted"] += int(result["accepted"].sum())
    normalized, valid = zip(*[self.action_tokenizer.decode(row) for row in out])
    normalized, valid = np.stack(normalized), np.stack(valid)
    if not valid.all():
      logging.warning(
        "%d action fields did not parse; fell back to the normalized centre. Raw outputs: %s",
        int((~valid).sum()),
        [self.text.decode(r) for r in out[~valid.all(axis=(1, 2))]][:4],
      )
    return normalized, valid
