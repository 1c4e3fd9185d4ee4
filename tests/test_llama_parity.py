"""Llama 2 as options of the one decoder (models/gemma.py): logits equal transformers'
LlamaForCausalLM on random tiny models (MHA and GQA), imported through the safetensors path with
mapping.llama_rules(); missing / mis-shaped tensors are named."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from genvla_jax import config_lib
from genvla_jax.models import gemma
from genvla_jax.pretrained import hf, loading, mapping
import tolerances


def _hf_llama(tmp_path, kv_heads: int, seed: int = 0):
  torch.manual_seed(seed)
  cfg = transformers.LlamaConfig(
    vocab_size=96,
    hidden_size=64,
    intermediate_size=112,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=kv_heads,
    rms_norm_eps=1e-5,
    max_position_embeddings=64,
    tie_word_embeddings=False,
    rope_theta=10000.0,
  )
  model = transformers.LlamaForCausalLM(cfg).eval()
  with torch.no_grad():  # norms away from 1 so that a wrong norm convention shows
    for name, p in model.named_parameters():
      if "norm" in name:
        p.uniform_(0.5, 1.5)
  model.save_pretrained(tmp_path / "llama", safe_serialization=True)
  return model


LLM = dict(config_lib.LLAMA2_TINY, vocab_size=96, width=64, depth=3, mlp_dim=112, num_heads=4, head_dim=16)
SEQ = 11
# ours vs transformers: the same float32 math summed in other orders: eps * sqrt(n) relative to max|logit|, n the
# terms along the chain of reductions (3 layers over 11 positions, then the logits)
LOGITS_RTOL = tolerances.float_tol(np.float32, tolerances.transformer_terms(LLM, SEQ) + LLM["width"])[0]


def _ours(kv_heads: int) -> gemma.Gemma:
  return gemma.Gemma(**dict(LLM, num_kv_heads=kv_heads))


def _logits(model, params, tokens):
  def forward(m, tokens):
    b, t = tokens.shape
    mask = jnp.broadcast_to(jnp.tril(jnp.ones((t, t), bool)), (b, t, t))
    hidden, _ = m(m.embed(tokens), jnp.broadcast_to(jnp.arange(t), (b, t)), mask)
    return m.logits(hidden)

  return jax.jit(nn.apply(forward, model))({"params": params}, tokens)


def _abstract_params(model):
  def forward(m):
    hidden, _ = m(m.embed(jnp.zeros((1, 4), jnp.int32)), jnp.zeros((1, 4), jnp.int32), jnp.ones((1, 4, 4), bool))
    return m.logits(hidden)

  return jax.eval_shape(lambda: nn.init(forward, model)(jax.random.PRNGKey(0)))["params"]


@pytest.mark.parametrize("kv_heads", [4, 2])  # Llama 2 7B: MHA; GQA as in Llama 2 70B
def test_llama_logits_match_transformers(tmp_path, kv_heads):
  reference = _hf_llama(tmp_path, kv_heads)
  model = _ours(kv_heads)
  init = _abstract_params(model)
  assert "output_embedding" in init["embedder"]  # untied head
  params = hf.load_with_rules(str(tmp_path / "llama"), {"llm": init}, mapping.llama_rules())["llm"]
  tokens = np.random.default_rng(0).integers(0, 96, (2, SEQ)).astype(np.int32)
  ours = np.asarray(_logits(model, params, tokens))
  with torch.no_grad():
    theirs = reference(torch.from_numpy(tokens).long()).logits.numpy()
  assert ours.shape == theirs.shape == (2, 11, 96)
  rel = np.abs(ours - theirs).max() / np.abs(theirs).max()
  assert rel < LOGITS_RTOL, (rel, LOGITS_RTOL)
  # and a Gemma-convention norm (1 + w) on the same weights would not match: the test can fail
  wrong = dataclasses.replace(model, norm_offset=1.0)
  assert np.abs(np.asarray(_logits(wrong, params, tokens)) - theirs).max() / np.abs(theirs).max() > 1e-2


def test_llama_import_names_missing_and_misshaped_tensors(tmp_path):
  from safetensors.numpy import load_file, save_file

  _hf_llama(tmp_path, 4)
  init = _abstract_params(_ours(4))
  file = tmp_path / "llama" / "model.safetensors"
  tensors = load_file(str(file))
  del tensors["lm_head.weight"]
  save_file(tensors, str(file))
  with pytest.raises(loading.CheckpointError, match="lm_head.weight"):
    hf.load_with_rules(str(tmp_path / "llama"), {"llm": init}, mapping.llama_rules())
  tensors["lm_head.weight"] = np.zeros((95, 64), np.float32)
  save_file(tensors, str(file))
  with pytest.raises(loading.CheckpointError, match="output_embedding"):
    hf.load_with_rules(str(tmp_path / "llama"), {"llm": init}, mapping.llama_rules())
