"""The flow head (π0): an action expert (models/action_expert.py) attends to the prefix-LM's KV cache
and regresses the flow-matching velocity (models/flow_matching.py); the VL rows keep their text loss.
Prediction: Euler integration from fresh Gaussian noise (inference/flow_sampler.py)."""

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from genvla_jax.heads import common
from genvla_jax.inference import flow_sampler
from genvla_jax.models import flow_matching


class FlowHead:
  """heads.Head for π0's flow-matching action expert. `flow`: config.flow (time_beta, time_min,
  num_steps); `state_token_dim`: the expert's state input (0: none)."""

  name = "flow"

  def __init__(self, flow, state_token_dim: int = 0, seed: int = 0):
    self.flow, self.state_token_dim, self.seed = flow, int(state_token_dim), seed
    self.sampler = None
    self.draft_stats = {"drafted": 0, "accepted": 0}  # nothing is drafted

  @classmethod
  def from_config(cls, config) -> "FlowHead":
    expert = config.model.action_expert
    return cls(config.flow, int(expert.state_dim) if expert.use_state else 0, config.seed)

  @staticmethod
  def fit_to_data(config, prepared) -> None:
    """Writes the data's action (and state) sizes into config.model.action_expert."""
    expert = config.model.action_expert
    if expert.action_dim not in (0, prepared.action_dim):
      raise ValueError(
        f"model.action_expert.action_dim={expert.action_dim} but the data has {prepared.action_dim}-D actions"
      )
    expert.action_dim = prepared.action_dim
    if expert.use_state:  # datasets with smaller states are zero-padded (preprocess.pad_state)
      missing = [r.name for r in prepared.robot if "state" not in r.stats]
      if missing:
        raise ValueError(f"model.action_expert.use_state but robot datasets {missing} have no state")
      expert.state_dim = max(len(r.stats["state"]["mean"]) for r in prepared.robot)

  # -- training --------------------------------------------------------------------------------------

  def loss_sums(self, params, batch, model, rng=None) -> dict:
    """Text sums (VL rows' answers) + the flow-matching squared error summed over the robot rows' real
    action entries (`flow_se`, `flow_elems`); `rng` draws the flow times and noise."""
    if self.flow is None:
      raise ValueError("a model with an action expert trains with config.flow: pass flow=config.flow")
    rng = jax.random.PRNGKey(0) if rng is None else rng
    actions = batch["actions"]  # [B,H,D]
    t_rng, noise_rng = jax.random.split(rng)
    t = flow_matching.sample_time(t_rng, actions.shape[0], *self.flow["time_beta"], self.flow["time_min"])
    x_t, target = flow_matching.noisy_actions(actions, jax.random.normal(noise_rng, actions.shape), t)
    logits, velocity = model.apply(
      {"params": params},
      *common.model_inputs(batch),
      x_t,
      t,
      batch.get("state"),
      common.image_mask(batch),
      method=model.flow_forward,
    )
    real = (batch["is_robot"][:, None] & ~batch["action_pad"]).astype(jnp.float32)  # [B,H]
    sums = {
      "flow_se": jnp.sum(jnp.square(velocity - target) * real[..., None]),
      "flow_elems": jnp.sum(real) * actions.shape[-1],
    }
    sums.update(common.text_sums(logits, batch))
    return sums

  def loss_totals(self, batch) -> dict:
    real = batch["is_robot"][:, None] & ~batch["action_pad"]
    total_flow = jnp.maximum(jnp.sum(real.astype(jnp.float32)) * batch["actions"].shape[-1], 1.0)
    return {"ce": common.total_tokens(batch), "flow_se": total_flow}

  def metrics(self, sums, ratio) -> dict:
    del sums
    return {"flow_mse": ratio("flow_se", "flow_elems")}

  def extra_flops(self, model_config, batch: int, seq: int, action_horizon: int) -> float:
    """The expert's state + H action tokens attending to the prefix (forward + backward)."""
    llm, expert = model_config.llm, model_config.action_expert
    suffix = action_horizon + 1
    we = expert.width
    expert_params = (
      llm.depth
      * (we * llm.num_heads * llm.head_dim * 2 + 2 * we * llm.num_kv_heads * llm.head_dim + 3 * we * expert.mlp_dim)
      + 3 * we * we
    )
    return (
      6 * expert_params * batch * suffix
      + 12 * llm.depth * batch * suffix * (seq + suffix) * llm.num_heads * llm.head_dim
    )

  # -- prediction ------------------------------------------------------------------------------------

  def setup_predict(
    self, model, action_tokenizer, text_tokenizer, action_dim: int, horizon: int, seed: int = 0, draft_previous=None
  ):
    del action_tokenizer, text_tokenizer, draft_previous
    self.horizon, self.action_dim = horizon, action_dim
    self.sampler = flow_sampler.make_flow_sampler(model, horizon, self.flow.num_steps)
    self.rng = np.random.default_rng(seed)

  def reset(self):
    pass  # fresh noise every call; nothing carries over

  def predict(self, params, pixels, tokens, mask, state_token=None, image_mask=None):
    """-> (normalized actions [B,H,D], valid [B,H,D]); non-finite entries -> 0.0, invalid."""
    noise = self.rng.standard_normal((len(pixels), self.horizon, self.action_dim)).astype(np.float32)
    out = np.asarray(jax.device_get(self.sampler(params, pixels, tokens, mask, noise, state_token, image_mask)))
    valid = np.isfinite(out)
    if not valid.all():
      logging.warning(
        "%d non-finite action values from the flow sampler; fell back to the normalized centre", int((~valid).sum())
      )
    return np.where(valid, out, 0.0).astype(np.float32), valid
