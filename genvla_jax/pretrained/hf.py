"""Hugging Face `PaliGemmaForConditionalGeneration` checkpoints: read (streamed), and write.

A checkpoint directory holds `config.json` and `model.safetensors` or shards listed in
`model.safetensors.index.json`. Tensor names differ between transformers versions (on disk:
`vision_tower.vision_model.*`, `multi_modal_projector.*`, `language_model.model.*`; in memory since 4.52:
`model.vision_tower.*`, `model.language_model.*`); all are mapped to one canonical form
(`vision.*`, `projector.*`, `llm.*`) before mapping.py's rules apply. We write the on-disk form that
`save_pretrained` writes, with tied embeddings (no `lm_head`).
"""

import json
import os

import jax
import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy, so safetensors can return bf16 arrays)
import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from genvla_jax.models import gemma
from genvla_jax.pretrained import loading, mapping

_PREFIXES = (  # (prefix in some transformers version, canonical prefix); longest first
  ("model.vision_tower.vision_model.", "vision."),
  ("vision_tower.vision_model.", "vision."),
  ("model.vision_tower.", "vision."),
  ("vision_tower.", "vision."),
  ("model.multi_modal_projector.", "projector."),
  ("multi_modal_projector.", "projector."),
  ("language_model.model.", "llm."),
  ("model.language_model.", "llm."),
  ("language_model.lm_head.", "lm_head."),
  ("lm_head.", "lm_head."),
  ("vision_model.", "vision."),  # a plain SiglipVisionModel
  ("model.", "llm."),  # a plain LlamaForCausalLM / GemmaForCausalLM (after the PaliGemma "model.*" forms)
)
_ON_DISK = {
  "vision.": "vision_tower.vision_model.",
  "projector.": "multi_modal_projector.",
  "llm.": "language_model.model.",
}


# DINOv2 attention: the published checkpoints (transformers < 5) vs transformers 5's in-memory names;
# timm's LayerScale `gamma` vs OpenVLA's `scale_factor`
_RENAMES = (
  (".ls1.gamma", ".ls1.scale_factor"),
  (".ls2.gamma", ".ls2.scale_factor"),  # timm vs OpenVLA's files
  ("attention.attention.query.", "attention.q_proj."),
  ("attention.attention.key.", "attention.k_proj."),
  ("attention.attention.value.", "attention.v_proj."),
  ("attention.output.dense.", "attention.o_proj."),
)


def canonical(name: str) -> str:
  for old, new in _RENAMES:
    name = name.replace(old, new)
  for prefix, canon in _PREFIXES:
    if name.startswith(prefix):
      return canon + name[len(prefix) :]
  return name


def _diagnose(file: str) -> str:
  """For a file safetensors refuses: which tensors lie beyond the end of a truncated file."""
  try:
    size = os.path.getsize(file)
    with open(file, "rb") as f:
      header_len = int.from_bytes(f.read(8), "little")
      header = json.loads(f.read(header_len))
  except Exception:  # the header itself is unreadable: the message above says so
    return ""
  start = 8 + header_len
  cut = sorted(
    name for name, info in header.items() if name != "__metadata__" and start + info["data_offsets"][1] > size
  )
  return f" (file has {size} bytes; truncated tensors: {cut})" if cut else ""


class HFCheckpoint:
  """Random access to the tensors of a safetensors checkpoint (one file or a sharded directory)."""

  def __init__(self, path: str):
    self.path = path
    if os.path.isdir(path):
      index = os.path.join(path, "model.safetensors.index.json")
      if os.path.exists(index):
        with open(index) as f:
          files = sorted(set(json.load(f)["weight_map"].values()))
      else:
        files = sorted(f for f in os.listdir(path) if f.endswith(".safetensors"))
      files = [os.path.join(path, f) for f in files]
    else:
      files = [path]
    if not files:
      raise loading.CheckpointError(f"no .safetensors files in {path}")
    self._where = {}
    for file in files:
      if not os.path.exists(file):
        raise loading.CheckpointError(f"checkpoint shard missing: {file}")
      with self._open(file) as handle:
        for name in handle.keys():
          self._where[canonical(name)] = (file, name)

  @staticmethod
  def _open(file: str):
    try:
      return safe_open(file, framework="np")
    except (SafetensorError, OSError) as e:
      raise loading.CheckpointError(f"cannot read safetensors file {file}: {e}{_diagnose(file)}") from e

  def names(self) -> set[str]:
    return set(self._where)

  def stored_name(self, name: str) -> str:
    """Canonical name -> the name as stored (with its file), for messages."""
    if name not in self._where:
      return name
    file, stored = self._where[name]
    return f"{stored} ({os.path.basename(file)})"

  def get(self, name: str) -> np.ndarray:
    if name not in self._where:
      raise loading.CheckpointError(f"tensor {name!r} missing from checkpoint {self.path}")
    file, stored = self._where[name]
    try:  # a handle per read: its memory map (resident pages count as RSS) is released right after
      with self._open(file) as handle:
        return handle.get_tensor(stored)
    except loading.CheckpointError:
      raise
    except Exception as e:  # truncated data and similar
      raise loading.CheckpointError(f"cannot read tensor {stored!r} from {file}: {e}") from e

  def config(self) -> dict:
    path = os.path.join(self.path if os.path.isdir(self.path) else os.path.dirname(self.path), "config.json")
    if not os.path.exists(path):
      raise loading.CheckpointError(f"no config.json next to {self.path}; give the architecture by flag")
    with open(path) as f:
      return json.load(f)


def _require(cfg: dict, key: str, where: str):
  if key not in cfg:
    raise loading.CheckpointError(f"config.json {where} lacks {key!r}")
  return cfg[key]


def model_config(hf_config: dict) -> dict:
  """HF PaliGemmaConfig dict -> our model config pieces {image_size, img, llm}."""
  v, t = hf_config.get("vision_config", {}), hf_config.get("text_config", {})
  patch = v.get("patch_size", 14)
  image_size = v.get("image_size") or int(round(hf_config["text_config"]["num_image_tokens"] ** 0.5)) * patch
  gemma2 = t.get("model_type") == "gemma2"
  img = dict(
    patch_size=patch,
    width=_require(v, "hidden_size", "vision_config"),
    depth=_require(v, "num_hidden_layers", "vision_config"),
    mlp_dim=_require(v, "intermediate_size", "vision_config"),
    num_heads=_require(v, "num_attention_heads", "vision_config"),
    posemb_std=None,
  )
  heads = _require(t, "num_attention_heads", "text_config")
  llm = dict(
    vocab_size=_require(t, "vocab_size", "text_config"),
    width=_require(t, "hidden_size", "text_config"),
    depth=_require(t, "num_hidden_layers", "text_config"),
    mlp_dim=_require(t, "intermediate_size", "text_config"),
    num_heads=heads,
    num_kv_heads=t.get("num_key_value_heads", heads),
    head_dim=t.get("head_dim", 256),
    query_pre_attn_scalar=t.get("query_pre_attn_scalar", 256) if gemma2 else None,
    post_norms=gemma2,
    # absent keys take transformers' Gemma2Config defaults; an explicit null disables
    attn_logits_softcap=t.get("attn_logit_softcapping", 50.0) if gemma2 else None,
    final_logits_softcap=t.get("final_logit_softcapping", 30.0) if gemma2 else None,
    sliding_window=t.get("sliding_window", 4096) if gemma2 else None,
  )
  return dict(image_size=image_size, img=img, llm=llm)


def openvla_model_config(path: str) -> dict:
  """OpenVLA's config.json (text_config: Llama; image_sizes) + tower shapes from the tensors ->
  {image_size, img, fused_img, llm} fields to compare with ours. Tower heads are not recorded in the
  files (timm fuses q, k, v); towers report `max_depth` (blocks stored; Prismatic reads one less)."""
  ckpt = HFCheckpoint(path)
  cfg = ckpt.config()
  t = _require(cfg, "text_config", "(OpenVLA)")
  heads = t.get("num_attention_heads", 32)
  llm = dict(
    vocab_size=_require(t, "vocab_size", "text_config"),
    width=t.get("hidden_size", 4096),
    depth=t.get("num_hidden_layers", 32),
    mlp_dim=t.get("intermediate_size", 11008),
    num_heads=heads,
    num_kv_heads=t.get("num_key_value_heads") or heads,
    head_dim=t.get("head_dim") or t.get("hidden_size", 4096) // heads,
    norm_eps=t.get("rms_norm_eps", 1e-6),
  )  # absent: transformers' LlamaConfig default
  out = {"image_size": int(_require(cfg, "image_sizes", "(OpenVLA)")[0]), "llm": llm}
  names = ckpt.names()
  for part, prefix in (("img", "vision_backbone.featurizer."), ("fused_img", "vision_backbone.fused_featurizer.")):
    if f"{prefix}pos_embed" not in names:
      continue
    depth = 0
    while f"{prefix}blocks.{depth}.norm1.weight" in names:
      depth += 1
    out[part] = dict(
      width=int(ckpt.get(f"{prefix}pos_embed").shape[-1]),
      mlp_dim=int(ckpt.get(f"{prefix}blocks.0.mlp.fc1.bias").shape[0]),
      max_depth=depth,
      num_registers=int(ckpt.get(f"{prefix}reg_token").shape[1]) if f"{prefix}reg_token" in names else 0,
    )
  return out


def load(path: str, abstract_params) -> dict:
  """Single-tower abstract params (with shardings) -> params read from the HF checkpoint at `path`."""
  post_norms = "llm/layers/post_attention_norm/scale" in loading.leaves(abstract_params)
  return load_with_rules(path, abstract_params, mapping.paligemma_rules(post_norms))


def load_with_rules(path: str, abstract_params, rules) -> dict:
  """Any safetensors checkpoint whose canonical tensor names the `rules` (mapping.py) cover, e.g.
  mapping.llama_rules() for a LlamaForCausalLM under {"llm": ...}. Streamed and placed as `load`."""
  ckpt = HFCheckpoint(path)

  def fetch(rule, layer, dims):
    names = [n.format(i=layer) for n in rule.hf]
    tensors = [ckpt.get(n) for n in names]
    try:
      return rule.to_ours(*tensors, **dims)
    except ValueError as e:
      shapes = {n: tuple(t.shape) for n, t in zip(names, tensors)}
      raise loading.CheckpointError(f"{rule.ours}: cannot map checkpoint tensors {shapes}: {e}") from e

  def source(rule, layer):
    return " + ".join(ckpt.stored_name(n.format(i=layer)) for n in rule.hf)

  return loading.assemble(abstract_params, rules, fetch, source)


def hf_config(model_config, image_token_index: int | None = None) -> dict:
  """Our model config -> a PaliGemmaConfig dict transformers can build the model from."""
  img, llm = model_config.img, model_config.llm
  gemma2 = bool(gemma.options(llm)["post_norms"])
  text = dict(
    model_type="gemma2" if gemma2 else "gemma",
    vocab_size=llm.vocab_size,
    hidden_size=llm.width,
    intermediate_size=llm.mlp_dim,
    num_hidden_layers=llm.depth,
    num_attention_heads=llm.num_heads,
    num_key_value_heads=llm.num_kv_heads,
    head_dim=llm.head_dim,
    hidden_activation="gelu_pytorch_tanh",
    rms_norm_eps=1e-6,
    pad_token_id=0,
    eos_token_id=1,
    bos_token_id=2,
  )
  if gemma2:
    text.update(
      query_pre_attn_scalar=llm.query_pre_attn_scalar or llm.head_dim,
      attn_logit_softcapping=llm.attn_logits_softcap,
      final_logit_softcapping=llm.final_logits_softcap,
      sliding_window=llm.sliding_window or 1 << 30,
    )
  vision = dict(
    model_type="siglip_vision_model",
    hidden_size=img.width,
    intermediate_size=img.mlp_dim,
    num_hidden_layers=img.depth,
    num_attention_heads=img.num_heads,
    image_size=model_config.image_size,
    patch_size=img.patch_size,
    vision_use_head=False,
    hidden_act="gelu_pytorch_tanh",
    layer_norm_eps=1e-6,
  )
  return dict(
    architectures=["PaliGemmaForConditionalGeneration"],
    model_type="paligemma",
    vision_config=vision,
    text_config=text,
    projection_dim=llm.width,
    hidden_size=llm.width,
    image_token_index=llm.vocab_size - 1 if image_token_index is None else image_token_index,
    tie_word_embeddings=True,
  )


def _hf_tensors(params, model_config):
  """Yields (on-disk HF name, host array) one layer-tensor at a time."""
  leaves = loading.leaves(params)
  for rule in mapping.paligemma_rules(bool(gemma.options(model_config.llm)["post_norms"])):
    value = np.asarray(jax.device_get(leaves[rule.ours]))
    for i in range(value.shape[0]) if rule.stacked else [None]:
      outs = rule.to_hf(value[i] if rule.stacked else value)
      for name, out in zip(rule.hf, outs):
        canon = name.format(i=i)
        prefix = next(p for p in _ON_DISK if canon.startswith(p))
        yield _ON_DISK[prefix] + canon[len(prefix) :], np.ascontiguousarray(out)


def export(
  params,
  model_config,
  out_dir: str,
  max_shard_bytes: int = 2 << 30,
  image_token_index: int | None = None,
  dtype: str | None = None,
):
  """Writes a single-tower parameter tree as an HF PaliGemma checkpoint (safetensors shards of at most
  `max_shard_bytes` + index + config.json), streaming: a shard is written as soon as it is full, so the
  host holds about one shard. `dtype` (e.g. "bfloat16") casts on the way out. Dual-encoder trees are
  refused: PaliGemma has one tower."""
  if "img_frozen" in params:
    raise ValueError("a dual-encoder model has no PaliGemma equivalent; export a single-tower model")
  os.makedirs(out_dir, exist_ok=True)
  weight_map, shard, size, count, total = {}, {}, 0, 0, 0

  def flush():
    nonlocal shard, size, count
    count += 1
    file = f"model-{count:05d}.safetensors"  # renamed to -of-N once N is known
    save_file(shard, os.path.join(out_dir, file), metadata={"format": "pt"})
    weight_map.update({name: file for name in shard})
    shard, size = {}, 0

  for name, value in _hf_tensors(params, model_config):
    if dtype is not None:
      value = value.astype(dtype)
    if shard and size + value.nbytes > max_shard_bytes:
      flush()
    shard[name] = value
    size += value.nbytes
    total += value.nbytes
  flush()
  final = {f"model-{n:05d}.safetensors": f"model-{n:05d}-of-{count:05d}.safetensors" for n in range(1, count + 1)}
  for old, new in final.items():
    os.replace(os.path.join(out_dir, old), os.path.join(out_dir, new))
  with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
    json.dump(
      {"metadata": {"total_size": total}, "weight_map": {k: final[v] for k, v in weight_map.items()}}, f, indent=1
    )
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump(hf_config(model_config, image_token_index), f, indent=1)
