"""big_vision PaliGemma checkpoints (the official release): one `.npz` with "/"-joined keys, optionally
under "params/", layers stacked on axis 0, bfloat16 arrays stored as 2-byte void. Arrays are read one at
a time from the zip (np.load is lazy), so host memory holds one parameter at a time.

Architecture is read off the tensor shapes (`model_config`), so no config file is needed.
When a Gemma layer has as many key/value heads as query heads, big_vision stores one
`attn/qkv_einsum/w` [L,3,N,D,H] instead of `q_einsum` + `kv_einsum`; both forms are read.
"""

import zipfile

import ml_dtypes
import numpy as np

from genvla_jax.pretrained import loading, mapping


class BigVisionCheckpoint:
  def __init__(self, path: str):
    self.path = path
    try:
      self._npz = np.load(path, allow_pickle=False)
      keys = list(self._npz.keys())
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
      raise loading.CheckpointError(f"cannot read big_vision checkpoint {path}: {e}") from e
    self._keys = {k[len("params/") :] if k.startswith("params/") else k: k for k in keys}

  def names(self) -> set[str]:
    return set(self._keys)

  def get(self, name: str) -> np.ndarray:
    if name not in self._keys:
      raise loading.CheckpointError(f"tensor {name!r} missing from checkpoint {self.path}")
    try:
      array = self._npz[self._keys[name]]
    except Exception as e:  # truncated zip member, CRC error, ...
      raise loading.CheckpointError(f"cannot read tensor {name!r} from {self.path}: {e}") from e
    if array.dtype.kind == "V" and array.dtype.itemsize == 2:
      array = array.view(ml_dtypes.bfloat16)
    return array

  def attention(self, name: str) -> np.ndarray:
    """q_einsum / kv_einsum, from the fused qkv_einsum when that is what the checkpoint has."""
    if name in self._keys or "llm/layers/attn/qkv_einsum/w" not in self._keys:
      return self.get(name)
    qkv = self.get("llm/layers/attn/qkv_einsum/w")  # [L,3,N,D,H]
    return qkv[:, 0] if name.endswith("q_einsum/w") else qkv[:, 1:]


def model_config(path: str) -> dict:
  """Architecture from tensor shapes -> {image_size, img, llm} (Gemma 2 recognised by its post norms;
  its soft-caps and window are Gemma 2's published values)."""
  ckpt = BigVisionCheckpoint(path)

  def shape(name):
    return ckpt.get(name).shape

  patch, _, _, width = shape("img/embedding/kernel")
  num_patches = shape("img/pos_embedding")[1]
  depth, _, heads, _ = shape("img/Transformer/encoderblock/MultiHeadDotProductAttention_0/query/kernel")
  img = dict(
    patch_size=patch,
    width=width,
    depth=depth,
    num_heads=heads,
    posemb_std=None,
    mlp_dim=shape("img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel")[-1],
  )
  vocab, d = shape("llm/embedder/input_embedding")
  q = ckpt.attention("llm/layers/attn/q_einsum/w").shape  # [L,N,D,H]
  kv = ckpt.attention("llm/layers/attn/kv_einsum/w").shape  # [L,2,K,D,H]
  gemma2 = "llm/layers/post_attention_norm/scale" in ckpt.names()
  llm = dict(
    vocab_size=vocab,
    width=d,
    depth=q[0],
    mlp_dim=shape("llm/layers/mlp/linear")[1],
    num_heads=q[1],
    num_kv_heads=kv[2],
    head_dim=q[3],
    query_pre_attn_scalar=q[3] if gemma2 else None,
    post_norms=gemma2,
    attn_logits_softcap=50.0 if gemma2 else None,
    final_logits_softcap=30.0 if gemma2 else None,
    sliding_window=4096 if gemma2 else None,
  )
  return dict(image_size=int(round(num_patches**0.5)) * patch, img=img, llm=llm)


def load(path: str, abstract_params) -> dict:
  """Single-tower abstract params (with shardings) -> params read from the big_vision npz."""
  ckpt = BigVisionCheckpoint(path)
  post_norms = "llm/layers/post_attention_norm/scale" in loading.leaves(abstract_params)
  cache = {}

  def fetch(rule, layer, dims):
    del dims
    if rule.bv not in cache:  # big_vision stacks layers: read once, hand out per layer
      cache.clear()
      cache[rule.bv] = ckpt.attention(rule.bv) if "attn/" in rule.bv else ckpt.get(rule.bv)
    array = cache[rule.bv]
    return array if layer is None else array[layer]

  def source(rule, layer):
    return rule.bv if layer is None else f"{rule.bv}[{layer}]"

  return loading.assemble(abstract_params, mapping.paligemma_rules(post_norms), fetch, source)
