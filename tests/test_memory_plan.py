"""The memory plan (training/plan.py: `train --dry_run [--plan_compile --device_gb=...]`): its per-device
parameter / gradient / optimizer-state bytes are those of the real arrays of an initialised train state (full
fine-tuning, and LoRA with a frozen bf16 base: optimizer state only for the trainable leaves), and so are a
checkpoint's bytes (LoRA: adapters-only checkpoints, without the frozen base); XLA's analysis
of the compiled train step adds up (its arguments are the state and the batch, the donated state aliases its
outputs); the fit verdicts follow the stated headroom rule."""

import jax
import numpy as np
import pytest

from configs import pi0_plus
from genvla_jax import cli, train
from genvla_jax.models import build, lora as lora_lib
from genvla_jax.training import freezing, optimizer, plan, sharding, state as state_lib

GIB = 1 << 30


def _tiny(lora: bool = False, fsdp: bool = True):
  """The demo model (configs/pi0_plus.py:demo, tiny sizes) at batch 8 over the 8 test devices, parameters
  sharded (`fsdp`) or replicated; `lora`: rank-4 adapters on the decoder's attention + MLP, the rest of the
  decoder frozen, bf16 storage."""
  config = pi0_plus.get_config("demo")
  config.data.batch_size = 8
  if fsdp:
    config.mesh.data, config.mesh.fsdp = 1, -1
  if lora:
    config.lora.rank = 4
    config.optimizer.frozen = ["llm/.*"]
    config.model.param_dtype = config.model.frozen_dtype = "bfloat16"
  return config


def _on_device0(tree) -> int:
  """Bytes of a tree of real arrays held by the first device (its shard of every leaf)."""
  device = jax.devices()[0]
  return sum(s.data.nbytes for leaf in jax.tree.leaves(tree) for s in leaf.addressable_shards if s.device == device)


def _abstract_bytes(tree) -> int:
  """Bytes of one device's shard of every leaf of an abstract tree."""
  return sum(
    int(np.prod(leaf.sharding.shard_shape(leaf.shape))) * np.dtype(leaf.dtype).itemsize
    for leaf in jax.tree.leaves(tree)
  )


@pytest.mark.parametrize("lora", [False, True], ids=["full_fine_tuning", "lora"])
def test_planned_bytes_equal_the_real_arrays_of_an_initialised_state(lora):
  config = _tiny(lora)
  memory, abstract_params, abstract, lines = plan.memory_plan(config, printer=lambda *a, **k: None)
  model = build.from_config(config.model)
  mesh = sharding.make_mesh(config.mesh)
  assert mesh.shape["fsdp"] == 8
  spec = lora_lib.Spec.from_config(config.lora)
  tx = optimizer.make(config.optimizer, config.train.steps)
  state, _, _ = state_lib.create(model, tx, config.model.image_size, mesh, jax.random.PRNGKey(0), lora=spec)
  params = state["params"]
  assert memory["params"] == _on_device0(params)
  assert memory["optimizer"] == _on_device0(state["opt_state"])
  # gradients: one per trainable parameter, in its storage dtype; AdamW's mu and nu (float32) for those only
  trainable = freezing.partition(params, freezing.trainable_mask(params, config.optimizer.frozen))[0]
  assert memory["gradients"] == _on_device0(trainable)
  elements = sum(s.data.size for leaf in jax.tree.leaves(trainable) for s in leaf.addressable_shards[:1])
  assert 0 <= memory["optimizer"] - 2 * 4 * elements < 1024  # + AdamW's step counters
  assert memory["params"] < _on_device0(params) * 8  # sharded: one device holds a part
  # one checkpoint: every parameter + the optimizer state; LoRA (adapters-only checkpoints): the trainable ones
  saved = trainable if lora else params
  planned = plan.checkpoint_bytes(config, abstract_params, abstract["opt_state"])
  assert planned == sum(x.nbytes for x in jax.tree.leaves((saved, state["opt_state"])))
  if lora:
    whole = sum(x.nbytes for x in jax.tree.leaves((params, state["opt_state"])))
    not_saved = sum(x.nbytes for x in jax.tree.leaves((params["llm"], params["img_frozen"])))
    assert whole - planned == not_saved  # the frozen decoder and the dual encoder's frozen tower
    parts = {k for k, v in trainable.items() if jax.tree.leaves(v)}
    assert parts == {lora_lib.KEY, "img", "projector"}  # adapters + the trained tower and projector
    assert {x.dtype for x in jax.tree.leaves(params["llm"])} == {np.dtype("bfloat16")}
  assert memory["sources"]["total"] == "analytic" and memory["compiled"] is None
  assert "analytic estimate" in "\n".join(lines)


@pytest.fixture(scope="module")
def compiled_plan():
  config = _tiny(fsdp=False)  # (data parallel: the quicker compile)
  printed = []
  memory, _, abstract, _ = plan.memory_plan(
    config, plan.Options(compile=True, device_gb=(24, 80)), printer=lambda *a, **k: printed.append(str(a[0]))
  )
  return config, memory, abstract, printed


def test_compiled_analysis_adds_up(compiled_plan):
  config, memory, abstract, printed = compiled_plan
  xla = memory["compiled"]
  assert any("compiling the train step" in line for line in printed)
  assert any("compiled in" in line for line in printed)
  assert xla["temp_bytes"] > 0 and xla["seconds"] > 0
  # the step's inputs are the state and the batch, one device's shard of each, less the batch fields the token
  # head never reads (jit drops unused inputs)
  batch = plan.abstract_batch(config, sharding.make_mesh(config.mesh))
  assert batch["image"].shape == (8, 32, 32, 3) and batch["tokens"].shape == (8, config.tokenizer.max_text_len)
  unread = _abstract_bytes({k: batch[k] for k in ("actions", "action_pad")})
  assert xla["argument_bytes"] == _abstract_bytes(abstract) + _abstract_bytes(batch) - unread
  # the donated state's outputs reuse its buffers: what is left is the metrics (scalars)
  assert xla["alias_bytes"] == _abstract_bytes(abstract)
  assert 0 < xla["output_bytes"] - xla["alias_bytes"] < 4096
  assert memory["total"] == xla["peak"] >= memory["params"] + memory["optimizer"]
  assert memory["activations"] == xla["temp_bytes"] - memory["gradients"]
  assert memory["sources"]["total"] == "XLA peak" and memory["sources"]["params"] == "abstract state"
  assert memory["fits"] == {24: "yes", 80: "yes"}  # a few MiB


@pytest.mark.parametrize(
  "total_gib, verdict", [(0.75 * 24, "yes"), (0.75 * 24 + 0.01, "at 0.95"), (0.95 * 24, "at 0.95"), (23.0, "no")]
)
def test_fits_follows_the_headroom_rule(total_gib, verdict):
  assert plan.fits(total_gib * GIB, 24) == verdict


def test_device_sizes_from_the_command_line():
  assert train.options_from_flags(True, ["24", "40.5"]) == plan.Options(compile=True, device_gb=(24.0, 40.5))
  with pytest.raises(cli.UserError, match="'big' is not a positive number"):
    train.options_from_flags(False, ["24", "big"])
  with pytest.raises(cli.UserError, match="'-8'"):
    train.options_from_flags(False, ["-8"])
