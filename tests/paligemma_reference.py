"""Reference PaliGemma models for parity tests: tiny random `transformers` PaliGemmaForConditionalGeneration
models (PyTorch CPU), their logits / greedy continuations, and a big_vision-layout npz written from their
weights by code independent of genvla_jax.pretrained.mapping."""

import dataclasses

import ml_dtypes
import numpy as np
import torch
from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

VOCAB = 128
IMAGE_SIZE, PATCH = 32, 8
NUM_IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2
BOS, EOS = 2, 1


@dataclasses.dataclass(frozen=True)
class Variant:
  name: str
  gemma2: bool
  layers: int
  heads: int
  kv_heads: int
  sliding_window: int | None = None  # Gemma 2 only
  vision_layers: int = 2


VARIANTS = {
  "gemma1_mqa": Variant("gemma1_mqa", gemma2=False, layers=2, heads=4, kv_heads=1),
  "gemma1_mha": Variant("gemma1_mha", gemma2=False, layers=2, heads=2, kv_heads=2),
  "gemma2_gqa": Variant("gemma2_gqa", gemma2=True, layers=3, heads=4, kv_heads=2, sliding_window=6),
}


def build(variant: Variant, seed: int = 0) -> PaliGemmaForConditionalGeneration:
  text = dict(
    model_type="gemma2" if variant.gemma2 else "gemma",
    vocab_size=VOCAB,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=variant.layers,
    num_attention_heads=variant.heads,
    num_key_value_heads=variant.kv_heads,
    head_dim=16,
    hidden_activation="gelu_pytorch_tanh",
    rms_norm_eps=1e-6,
    bos_token_id=BOS,
    eos_token_id=EOS,
    pad_token_id=0,
  )
  if variant.gemma2:
    text.update(
      query_pre_attn_scalar=16,
      attn_logit_softcapping=50.0,
      final_logit_softcapping=30.0,
      sliding_window=variant.sliding_window,
    )
  vision = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=variant.vision_layers,
    num_attention_heads=2,
    image_size=IMAGE_SIZE,
    patch_size=PATCH,
    vision_use_head=False,
    hidden_act="gelu_pytorch_tanh",
    layer_norm_eps=1e-6,
  )
  config = PaliGemmaConfig(
    vision_config=vision, text_config=text, projection_dim=64, hidden_size=64, image_token_index=VOCAB - 1
  )
  torch.manual_seed(seed)
  model = PaliGemmaForConditionalGeneration(config).eval()
  with torch.no_grad():  # random norm scales and biases, so that every tensor's mapping matters
    for name, p in model.named_parameters():
      if "norm" in name or name.endswith(".bias"):
        p.add_(torch.randn_like(p) * 0.1)
  return model


def inputs(batch: int = 2, text_len: int = 10, seed: int = 0):
  """-> images [B,32,32,3] in [-1,1], tokens [B,T] (BOS first, no image ids), prefix_len [B]."""
  rng = np.random.default_rng(seed)
  images = rng.uniform(-1, 1, (batch, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
  tokens = rng.integers(3, VOCAB - 1, (batch, text_len)).astype(np.int32)
  tokens[:, 0] = BOS
  prefix_len = np.linspace(3, text_len - 2, batch).astype(np.int32)
  return images, tokens, prefix_len


def num_image_tokens(model) -> int:
  """Image tokens a PaliGemmaForConditionalGeneration puts before the text: (image size / patch size)^2."""
  vision = model.config.vision_config
  return (vision.image_size // vision.patch_size) ** 2


def _hf_inputs(model, images, tokens):
  n = num_image_tokens(model)
  ids = np.concatenate([np.full((tokens.shape[0], n), model.config.image_token_index), tokens], 1)
  return torch.tensor(ids), torch.tensor(images.transpose(0, 3, 1, 2))


def logits(model, images, tokens, prefix_len) -> np.ndarray:
  """Reference logits [B,T,V] at the text positions of any PaliGemmaForConditionalGeneration (this module's
  tiny ones, or an export loaded by transformers); images [B,H,W,3] in [-1,1]; token_type_ids 0 = prefix,
  1 = suffix (prefix_len = T: all prefix, as a prompt is)."""
  ids, pixels = _hf_inputs(model, images, tokens)
  n = num_image_tokens(model)
  suffix = np.arange(tokens.shape[1])[None] >= prefix_len[:, None]
  token_type = np.concatenate([np.zeros((tokens.shape[0], n), int), suffix], 1)
  with torch.no_grad():
    out = model(
      input_ids=ids,
      pixel_values=pixels,
      token_type_ids=torch.tensor(token_type),
      attention_mask=torch.ones(ids.shape, dtype=torch.long),
    )
  return out.logits.numpy()[:, n:]


def greedy(model, image, prompt, max_new_tokens: int) -> list[int]:
  """One row: greedy continuation of `prompt` (the whole prompt is prefix), up to and with EOS."""
  ids, pixels = _hf_inputs(model, image[None], np.asarray(prompt)[None])
  with torch.no_grad():
    out = model.generate(
      input_ids=ids,
      pixel_values=pixels,
      attention_mask=torch.ones(ids.shape, dtype=torch.long),
      token_type_ids=torch.zeros(ids.shape, dtype=torch.long),
      do_sample=False,
      max_new_tokens=max_new_tokens,
      eos_token_id=EOS,
      pad_token_id=0,
    )
  return out[0, ids.shape[1] :].tolist()


def big_vision_npz(model, variant: Variant, path: str, dtype=np.float32, prefix: str = "params/"):
  """Writes the model's weights in the official big_vision PaliGemma layout (stacked layers; bfloat16
  stored as 2-byte void as np.savez does with ml_dtypes arrays)."""
  sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
  vis, llm = "model.vision_tower.", "model.language_model."
  vl = [f"{vis}encoder.layers.{i}." for i in range(variant.vision_layers)]
  ll = [f"{llm}layers.{i}." for i in range(variant.layers)]
  heads_v, hd, width = 2, 16, 64

  def stack(layers, fn):
    return np.stack([fn(p) for p in layers])

  out = {
    "img/embedding/kernel": sd[f"{vis}embeddings.patch_embedding.weight"].transpose(2, 3, 1, 0),
    "img/embedding/bias": sd[f"{vis}embeddings.patch_embedding.bias"],
    "img/pos_embedding": sd[f"{vis}embeddings.position_embedding.weight"][None],
    "img/Transformer/encoder_norm/scale": sd[f"{vis}post_layernorm.weight"],
    "img/Transformer/encoder_norm/bias": sd[f"{vis}post_layernorm.bias"],
    "img/head/kernel": sd["model.multi_modal_projector.linear.weight"].T,
    "img/head/bias": sd["model.multi_modal_projector.linear.bias"],
    "llm/embedder/input_embedding": sd[f"{llm}embed_tokens.weight"],
    "llm/final_norm/scale": sd[f"{llm}norm.weight"],
  }
  blk = "img/Transformer/encoderblock/"
  for ours, theirs in (("LayerNorm_0", "layer_norm1"), ("LayerNorm_1", "layer_norm2")):
    out[f"{blk}{ours}/scale"] = stack(vl, lambda p: sd[f"{p}{theirs}.weight"])
    out[f"{blk}{ours}/bias"] = stack(vl, lambda p: sd[f"{p}{theirs}.bias"])
  for ours, theirs in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
    out[f"{blk}MultiHeadDotProductAttention_0/{ours}/kernel"] = stack(
      vl, lambda p: sd[f"{p}self_attn.{theirs}.weight"].T.reshape(32, heads_v, -1)
    )
    out[f"{blk}MultiHeadDotProductAttention_0/{ours}/bias"] = stack(
      vl, lambda p: sd[f"{p}self_attn.{theirs}.bias"].reshape(heads_v, -1)
    )
  out[f"{blk}MultiHeadDotProductAttention_0/out/kernel"] = stack(
    vl, lambda p: sd[f"{p}self_attn.out_proj.weight"].T.reshape(heads_v, -1, 32)
  )
  out[f"{blk}MultiHeadDotProductAttention_0/out/bias"] = stack(vl, lambda p: sd[f"{p}self_attn.out_proj.bias"])
  for dense, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
    out[f"{blk}MlpBlock_0/{dense}/kernel"] = stack(vl, lambda p: sd[f"{p}mlp.{fc}.weight"].T)
    out[f"{blk}MlpBlock_0/{dense}/bias"] = stack(vl, lambda p: sd[f"{p}mlp.{fc}.bias"])

  def heads(w, n):  # torch [n*hd, D] -> [n, D, hd]
    return w.reshape(n, hd, width).transpose(0, 2, 1)

  q = stack(ll, lambda p: heads(sd[f"{p}self_attn.q_proj.weight"], variant.heads))
  kv = stack(
    ll,
    lambda p: np.stack(
      [
        heads(sd[f"{p}self_attn.k_proj.weight"], variant.kv_heads),
        heads(sd[f"{p}self_attn.v_proj.weight"], variant.kv_heads),
      ]
    ),
  )
  if variant.kv_heads == variant.heads:  # big_vision fuses q, k, v for multi-head attention
    out["llm/layers/attn/qkv_einsum/w"] = np.concatenate([q[:, None], kv], axis=1)
  else:
    out["llm/layers/attn/q_einsum/w"] = q
    out["llm/layers/attn/kv_einsum/w"] = kv
  out["llm/layers/attn/attn_vec_einsum/w"] = stack(
    ll, lambda p: sd[f"{p}self_attn.o_proj.weight"].T.reshape(variant.heads, hd, width)
  )
  out["llm/layers/mlp/gating_einsum"] = stack(
    ll, lambda p: np.stack([sd[f"{p}mlp.gate_proj.weight"].T, sd[f"{p}mlp.up_proj.weight"].T])
  )
  out["llm/layers/mlp/linear"] = stack(ll, lambda p: sd[f"{p}mlp.down_proj.weight"].T)
  out["llm/layers/pre_attention_norm/scale"] = stack(ll, lambda p: sd[f"{p}input_layernorm.weight"])
  if variant.gemma2:
    out["llm/layers/pre_ffw_norm/scale"] = stack(ll, lambda p: sd[f"{p}pre_feedforward_layernorm.weight"])
    out["llm/layers/post_attention_norm/scale"] = stack(ll, lambda p: sd[f"{p}post_attention_layernorm.weight"])
    out["llm/layers/post_ffw_norm/scale"] = stack(ll, lambda p: sd[f"{p}post_feedforward_layernorm.weight"])
  else:
    out["llm/layers/pre_ffw_norm/scale"] = stack(ll, lambda p: sd[f"{p}post_attention_layernorm.weight"])
  np.savez(path, **{prefix + k: v.astype(dtype) for k, v in out.items()})
  return out


def bf16_round(x: np.ndarray) -> np.ndarray:
  return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)
