"""Action heads: one object per way of producing actions, the only place that knows which one a run uses.

A head gives the trainer the config sizes it takes from the data (`fit_to_data`), the train step its
loss sums (`loss_sums`, `loss_totals`, `metrics`), FLOP counting its extra FLOPs (`extra_flops`), the
data pipeline / observation transform the batch fields it needs (`state_token_dim`), and the policy its
prediction (`setup_predict`, `predict`, `reset`). Nothing above asks which head it has.

  HEADS        name -> head class (each with `from_config(config)`)
  head_name    config -> the name: config.model.head (the one place that reads the config's choice)
  from_config  config -> a head
  for_model    a VLA (+ config.flow) -> its head, for callers that have no config (train-step tests)

Adding a head: one module here implementing `Head`, one `HEADS` entry; configs choose it with model.head
(WORKSPACE.md).
"""

from typing import Any, Callable, Protocol, runtime_checkable

from genvla_jax.heads.flow import FlowHead
from genvla_jax.heads.tokens import TokenHead
from genvla_jax.models import pi0


@runtime_checkable
class Head(Protocol):
  """What the train step, FLOP counting, the pipeline and the policy use of an action head."""

  name: str
  state_token_dim: int  # the batch's `state` field width (π0's state token); 0: the batch has none
  draft_stats: dict  # speculative decoding's {"drafted", "accepted"} token counts (zeros: nothing drafted)

  def fit_to_data(self, config, prepared) -> None:
    """Writes sizes that come from the data into the run's config (π0: the expert's action / state
    sizes); ValueError naming the field when they contradict it."""

  def loss_sums(self, params, batch: dict, model, rng=None) -> dict:
    """Sums over the batch (never means), so micro-batches add up exactly: at least the text sums of
    common.text_sums (ce, correct, tokens, ... for all / robot_ / vl_ rows)."""

  def loss_totals(self, batch: dict) -> dict:
    """sums key -> the whole batch's denominator; the objective is sum(sums[k] / totals[k])."""

  def metrics(self, sums: dict, ratio: Callable[[str, str], Any]) -> dict:
    """Extra metrics from the sums (each is also added to `loss`)."""

  def extra_flops(self, model_config, batch: int, seq: int, action_horizon: int) -> float:
    """Training FLOPs beyond the prefix-LM's (seq = image + text tokens)."""

  def setup_predict(
    self, model, action_tokenizer, text_tokenizer, action_dim: int, horizon: int, seed: int = 0, draft_previous=None
  ):
    """Builds what predict needs (jitted decoders / samplers), once per policy; `seed`: its noise;
    `draft_previous` (None: the config's choice): draft decoding from the previous action, if it drafts."""

  def predict(self, params, pixels, tokens, mask, state_token=None, image_mask=None):
    """Model inputs (+ state token [B,S] or None; pixels [B,S,S,3] or [B,C,S,S,3] with image_mask [B,C] or
    None: the cameras present) -> (normalized actions [B,H,D], valid [B,H,D]). The policy passes
    image_mask only when it has one, so a head without cameras may leave it out."""

  def reset(self):
    """Forget per-episode prediction state."""


HEADS: dict[str, Any] = {"tokens": TokenHead, "flow": FlowHead}


def head_name(config) -> str:
  """The config's head: config.model.head, one of HEADS (ValueError naming them otherwise); the only reader of
  that choice (the trainer checks model.action_expert.width agrees with it)."""
  name = config.model.head
  if name not in HEADS:
    raise ValueError(f"config.model.head={name!r} is no action head; one of: {', '.join(HEADS)}")
  return name


def from_config(config) -> Head:
  return HEADS[head_name(config)].from_config(config)


def for_model(model, flow=None) -> Head:
  """The head of a built model when no config is at hand (make_train_step(model, ..., flow=) callers)."""
  return FlowHead(flow) if isinstance(model, pi0.Pi0) else TokenHead()
