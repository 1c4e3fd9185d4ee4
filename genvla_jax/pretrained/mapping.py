"""The one table that relates our parameter tree to PaliGemma's published layouts.

Each Rule says how one of our (single-tower) parameters is made from checkpoint tensors and back:
  ours        our path, e.g. "llm/layers/attn/q_einsum"
  hf          Hugging Face tensor name(s) in canonical form ("{i}" = layer index), see hf.py
  bv          big_vision npz name(s) (without "params/"), see big_vision.py
  to_ours     per-layer HF tensors -> our per-layer array (shape of `ours` without the layer axis)
  to_hf       our per-layer array -> HF tensors
Layer-stacked rules (`stacked=True`) are applied per layer index and stacked on axis 0; big_vision
already stores them stacked, so its side is a plain rename (plus the qkv_einsum split, see there).
Torch Linear weights are [out, in]; ours follow the einsum / flax kernel layout [in, out].
"""

import dataclasses
from typing import Callable

import numpy as np

from genvla_jax.models import vit


@dataclasses.dataclass(frozen=True)
class Rule:
  ours: str
  hf: tuple[str, ...]
  bv: str | None
  to_ours: Callable[..., np.ndarray]
  to_hf: Callable[..., tuple[np.ndarray, ...]]
  stacked: bool = False


def _same(x, **_):
  return x


def _same_hf(x, **_):
  return (x,)


def _t(x, **_):
  return x.T


def _t_hf(x, **_):
  return (x.T,)


# ---- vision tower (SigLIP) ----
def _patch_to_ours(w, **_):  # [D,3,P,P] -> [P,P,3,D]
  return w.transpose(2, 3, 1, 0)


def _patch_to_hf(k, **_):
  return (k.transpose(3, 2, 0, 1),)


def _qkv_to_ours(w, *, heads, **_):  # [D_out, D_in] -> [D_in, heads, head_dim]
  return w.T.reshape(w.shape[1], heads, -1)


def _qkv_to_hf(k, **_):
  return (k.reshape(k.shape[0], -1).T,)


def _qkv_bias_to_ours(b, *, heads, **_):
  return b.reshape(heads, -1)


def _qkv_bias_to_hf(b, **_):
  return (b.reshape(-1),)


def _out_to_ours(w, *, heads, **_):  # [D, heads*head_dim] -> [heads, head_dim, D]
  return w.T.reshape(heads, -1, w.shape[0])


def _out_to_hf(k, **_):
  return (k.reshape(-1, k.shape[-1]).T,)


def _vit_block_rules(prefix: str, block: str, norms: tuple[str, str], bv_block: str | None = None) -> list[Rule]:
  """The per-block LayerNorms (`norms`: their two names under `block`) and MLP (mlp.fc1, mlp.fc2) of a
  ViT, shared by every vision layout; `bv_block`: big_vision's encoderblock path (None: no npz side)."""
  rules = []
  for ours, theirs in zip(("LayerNorm_0", "LayerNorm_1"), norms):
    for p, t in (("scale", "weight"), ("bias", "bias")):
      rules.append(
        Rule(
          f"{prefix}/blocks/{ours}/{p}",
          (f"{block}{theirs}.{t}",),
          bv_block and f"{bv_block}{ours}/{p}",
          _same,
          _same_hf,
          stacked=True,
        )
      )
  for dense, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
    for p, t, to_ours, to_hf in (("kernel", "weight", _t, _t_hf), ("bias", "bias", _same, _same_hf)):
      rules.append(
        Rule(
          f"{prefix}/blocks/MlpBlock_0/{dense}/{p}",
          (f"{block}mlp.{fc}.{t}",),
          bv_block and f"{bv_block}MlpBlock_0/{dense}/{p}",
          to_ours,
          to_hf,
          stacked=True,
        )
      )
  return rules


def _attention_rules(prefix: str, attn: str, out: str, bv_block: str | None = None) -> list[Rule]:
  """Separate q/k/v projections `{attn}{q,k,v}_proj` and the output `{attn}{out}` (weights + biases)."""
  mha = f"{prefix}/blocks/MultiHeadDotProductAttention_0/"
  bv = lambda name: bv_block and f"{bv_block}MultiHeadDotProductAttention_0/{name}"
  rules = []
  for ours, theirs in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
    rules.append(
      Rule(
        f"{mha}{ours}/kernel", (f"{attn}{theirs}.weight",), bv(f"{ours}/kernel"), _qkv_to_ours, _qkv_to_hf, stacked=True
      )
    )
    rules.append(
      Rule(
        f"{mha}{ours}/bias",
        (f"{attn}{theirs}.bias",),
        bv(f"{ours}/bias"),
        _qkv_bias_to_ours,
        _qkv_bias_to_hf,
        stacked=True,
      )
    )
  return rules + [
    Rule(f"{mha}out/kernel", (f"{attn}{out}.weight",), bv("out/kernel"), _out_to_ours, _out_to_hf, stacked=True),
    Rule(f"{mha}out/bias", (f"{attn}{out}.bias",), bv("out/bias"), _same, _same_hf, stacked=True),
  ]


def vision_rules(prefix: str = "img") -> list[Rule]:
  enc = "vision.encoder.layers.{i}."
  bvb = "img/Transformer/encoderblock/"
  rules = [
    Rule(
      f"{prefix}/embedding/kernel",
      ("vision.embeddings.patch_embedding.weight",),
      "img/embedding/kernel",
      _patch_to_ours,
      _patch_to_hf,
    ),
    Rule(
      f"{prefix}/embedding/bias", ("vision.embeddings.patch_embedding.bias",), "img/embedding/bias", _same, _same_hf
    ),
    Rule(
      f"{prefix}/pos_embedding",
      ("vision.embeddings.position_embedding.weight",),
      "img/pos_embedding",
      lambda w, **_: w[None],
      lambda p, **_: (p[0],),
    ),
    Rule(
      f"{prefix}/encoder_norm/scale",
      ("vision.post_layernorm.weight",),
      "img/Transformer/encoder_norm/scale",
      _same,
      _same_hf,
    ),
    Rule(
      f"{prefix}/encoder_norm/bias",
      ("vision.post_layernorm.bias",),
      "img/Transformer/encoder_norm/bias",
      _same,
      _same_hf,
    ),
  ]
  rules += _vit_block_rules(prefix, enc, ("layer_norm1", "layer_norm2"), bvb)
  return rules + _attention_rules(prefix, f"{enc}self_attn.", "out_proj", bvb)


def dinov2_rules(
  prefix: str = "img", hf_prefix: str = "", registers: bool = False, final_norm: bool = True
) -> list[Rule]:
  """transformers Dinov2Model / Dinov2WithRegistersModel (names under `hf_prefix`; transformers 5's
  attention names — hf.canonical maps the published `attention.attention.query` form) onto the ViT with
  DINOv2 options. The CLS token's position embedding is folded into our cls_token (import only: a
  checkpoint's patch grid must match the model's image size)."""
  emb, enc = f"{hf_prefix}embeddings.", f"{hf_prefix}encoder.layer.{{i}}."
  no_bv = None
  rules = [
    Rule(
      f"{prefix}/embedding/kernel", (f"{emb}patch_embeddings.projection.weight",), no_bv, _patch_to_ours, _patch_to_hf
    ),
    Rule(f"{prefix}/embedding/bias", (f"{emb}patch_embeddings.projection.bias",), no_bv, _same, _same_hf),
    Rule(
      f"{prefix}/pos_embedding", (f"{emb}position_embeddings",), no_bv, lambda p, **_: p[:, 1:], lambda p, **_: (p,)
    ),
    Rule(
      f"{prefix}/cls_token",
      (f"{emb}cls_token", f"{emb}position_embeddings"),
      no_bv,
      lambda cls, pos, **_: cls + pos[:, :1],
      lambda c, **_: (c,),
    ),
  ]
  if registers:
    rules.append(Rule(f"{prefix}/reg_tokens", (f"{emb}register_tokens",), no_bv, _same, _same_hf))
  if final_norm:
    rules += [
      Rule(f"{prefix}/encoder_norm/scale", (f"{hf_prefix}layernorm.weight",), no_bv, _same, _same_hf),
      Rule(f"{prefix}/encoder_norm/bias", (f"{hf_prefix}layernorm.bias",), no_bv, _same, _same_hf),
    ]
  rules += _vit_block_rules(prefix, enc, ("norm1", "norm2")) + _attention_rules(prefix, f"{enc}attention.", "o_proj")
  return rules + [
    Rule(f"{prefix}/blocks/ls{j}", (f"{enc}layer_scale{j}.lambda1",), no_bv, _same, _same_hf, stacked=True)
    for j in (1, 2)
  ]


PROJECTOR_RULES = [
  Rule("projector/kernel", ("projector.linear.weight",), "img/head/kernel", _t, _t_hf),
  Rule("projector/bias", ("projector.linear.bias",), "img/head/bias", _same, _same_hf),
]


# ---- timm ViTs as OpenVLA's HF checkpoint stores them (vision_backbone.featurizer / fused_featurizer) ----
def _fused_qkv_part(k: int, kind: str):
  """The k-th third (q, k, v) of timm's fused attn.qkv.{weight [3D,D], bias [3D]}, in our layout."""

  def to_ours(w, *, heads, **_):
    part = np.split(w, 3, axis=0)[k]
    return _qkv_to_ours(part, heads=heads) if kind == "kernel" else _qkv_bias_to_ours(part, heads=heads)

  def to_hf(x, **_):
    raise NotImplementedError("export of timm's fused qkv is not supported")

  return to_ours, to_hf


def timm_vit_rules(
  prefix: str,
  hf_prefix: str,
  cls_token: bool = False,
  registers: bool = False,
  layer_scale: bool = False,
  final_norm: bool = False,
) -> list[Rule]:
  """A timm VisionTransformer (OpenVLA: DINOv2 ViT-L/14 reg4 and SigLIP So400m/14 at 224) onto the ViT.
  timm keeps the CLS token out of the position embedding for register models (no fold needed);
  LayerScale is `ls{1,2}.scale_factor` in OpenVLA's files (timm's own name `gamma` is mapped to it by
  hf.canonical). Blocks past the model's depth are not read (Prismatic's penultimate-block cut)."""
  blk = f"{hf_prefix}blocks.{{i}}."
  mha = f"{prefix}/blocks/MultiHeadDotProductAttention_0/"
  rules = [
    Rule(f"{prefix}/embedding/kernel", (f"{hf_prefix}patch_embed.proj.weight",), None, _patch_to_ours, _patch_to_hf),
    Rule(f"{prefix}/embedding/bias", (f"{hf_prefix}patch_embed.proj.bias",), None, _same, _same_hf),
    Rule(f"{prefix}/pos_embedding", (f"{hf_prefix}pos_embed",), None, _same, _same_hf),
  ]
  if cls_token:
    rules.append(Rule(f"{prefix}/cls_token", (f"{hf_prefix}cls_token",), None, _same, _same_hf))
  if registers:
    rules.append(Rule(f"{prefix}/reg_tokens", (f"{hf_prefix}reg_token",), None, _same, _same_hf))
  if final_norm:
    rules += [
      Rule(f"{prefix}/encoder_norm/scale", (f"{hf_prefix}norm.weight",), None, _same, _same_hf),
      Rule(f"{prefix}/encoder_norm/bias", (f"{hf_prefix}norm.bias",), None, _same, _same_hf),
    ]
  rules += _vit_block_rules(prefix, blk, ("norm1", "norm2"))
  for k, name in enumerate(("query", "key", "value")):
    rules.append(
      Rule(f"{mha}{name}/kernel", (f"{blk}attn.qkv.weight",), None, *_fused_qkv_part(k, "kernel"), stacked=True)
    )
    rules.append(Rule(f"{mha}{name}/bias", (f"{blk}attn.qkv.bias",), None, *_fused_qkv_part(k, "bias"), stacked=True))
  rules += [
    Rule(f"{mha}out/kernel", (f"{blk}attn.proj.weight",), None, _out_to_ours, _out_to_hf, stacked=True),
    Rule(f"{mha}out/bias", (f"{blk}attn.proj.bias",), None, _same, _same_hf, stacked=True),
  ]
  if layer_scale:
    rules += [
      Rule(f"{prefix}/blocks/ls{j}", (f"{blk}ls{j}.scale_factor",), None, _same, _same_hf, stacked=True) for j in (1, 2)
    ]
  return rules


def openvla_rules(img: dict, fused_img: dict, fused_prefix: str = "img_fused") -> list[Rule]:
  """Every rule for OpenVLA's released HF checkpoint (PrismaticForConditionalGeneration): featurizer
  (DINOv2) -> img, fused_featurizer (SigLIP) -> `fused_prefix`, projector fc1-3, Llama 2."""

  def tower(prefix, hf_prefix, cfg):
    cfg = vit.options(cfg)  # options the tower config leaves out: the ViT's defaults
    return timm_vit_rules(
      prefix, hf_prefix, cfg["cls_token"], bool(cfg["num_registers"]), cfg["layer_scale"], cfg["final_norm"]
    )

  return (
    tower("img", "vision_backbone.featurizer.", img)
    + tower(fused_prefix, "vision_backbone.fused_featurizer.", fused_img)
    + MLP3_PROJECTOR_RULES
    + llama_rules()
  )


# Prismatic's fused-gelu-mlp (OpenVLA's HF checkpoint: projector.fc1 / fc2 / fc3)
MLP3_PROJECTOR_RULES = [
  r
  for k in (1, 2, 3)
  for r in (
    Rule(f"projector/fc{k}/kernel", (f"projector.fc{k}.weight",), None, _t, _t_hf),
    Rule(f"projector/fc{k}/bias", (f"projector.fc{k}.bias",), None, _same, _same_hf),
  )
]


# ---- language model (Gemma / Gemma 2) ----
def _q_to_ours(w, *, heads, **_):  # [N*H, D] -> [N, D, H]
  return w.reshape(heads, -1, w.shape[1]).transpose(0, 2, 1)


def _q_to_hf(w, **_):  # [N, D, H] -> [N*H, D]
  return (w.transpose(0, 2, 1).reshape(-1, w.shape[1]),)


def _kv_to_ours(k, v, *, kv_heads, **_):  # 2 x [K*H, D] -> [2, K, D, H]
  return np.stack([_q_to_ours(k, heads=kv_heads), _q_to_ours(v, heads=kv_heads)])


def _kv_to_hf(w, **_):
  return _q_to_hf(w[0])[0], _q_to_hf(w[1])[0]


def _o_to_ours(w, *, heads, **_):  # [D, N*H] -> [N, H, D]
  return w.T.reshape(heads, -1, w.shape[0])


def _o_to_hf(w, **_):
  return (w.reshape(-1, w.shape[-1]).T,)


def _gating_to_ours(gate, up, **_):  # 2 x [F, D] -> [2, D, F]
  return np.stack([gate.T, up.T])


def _gating_to_hf(w, **_):
  return w[0].T, w[1].T


def llm_rules(post_norms: bool) -> list[Rule]:
  lay = "llm.layers.{i}."
  rules = [
    Rule("llm/embedder/input_embedding", ("llm.embed_tokens.weight",), "llm/embedder/input_embedding", _same, _same_hf),
    Rule("llm/final_norm/scale", ("llm.norm.weight",), "llm/final_norm/scale", _same, _same_hf),
    Rule(
      "llm/layers/pre_attention_norm/scale",
      (f"{lay}input_layernorm.weight",),
      "llm/layers/pre_attention_norm/scale",
      _same,
      _same_hf,
      stacked=True,
    ),
    Rule(
      "llm/layers/attn/q_einsum",
      (f"{lay}self_attn.q_proj.weight",),
      "llm/layers/attn/q_einsum/w",
      _q_to_ours,
      _q_to_hf,
      stacked=True,
    ),
    Rule(
      "llm/layers/attn/kv_einsum",
      (f"{lay}self_attn.k_proj.weight", f"{lay}self_attn.v_proj.weight"),
      "llm/layers/attn/kv_einsum/w",
      _kv_to_ours,
      _kv_to_hf,
      stacked=True,
    ),
    Rule(
      "llm/layers/attn/attn_vec_einsum",
      (f"{lay}self_attn.o_proj.weight",),
      "llm/layers/attn/attn_vec_einsum/w",
      _o_to_ours,
      _o_to_hf,
      stacked=True,
    ),
    Rule(
      "llm/layers/mlp/gating_einsum",
      (f"{lay}mlp.gate_proj.weight", f"{lay}mlp.up_proj.weight"),
      "llm/layers/mlp/gating_einsum",
      _gating_to_ours,
      _gating_to_hf,
      stacked=True,
    ),
    Rule("llm/layers/mlp/linear", (f"{lay}mlp.down_proj.weight",), "llm/layers/mlp/linear", _t, _t_hf, stacked=True),
  ]
  if post_norms:  # Gemma 2: HF's post_attention_layernorm is the norm after attention
    norms = (
      ("pre_ffw_norm", "pre_feedforward_layernorm"),
      ("post_attention_norm", "post_attention_layernorm"),
      ("post_ffw_norm", "post_feedforward_layernorm"),
    )
  else:  # Gemma 1: HF's post_attention_layernorm is the norm before the MLP
    norms = (("pre_ffw_norm", "post_attention_layernorm"),)
  for ours, theirs in norms:
    rules.append(
      Rule(
        f"llm/layers/{ours}/scale",
        (f"{lay}{theirs}.weight",),
        f"llm/layers/{ours}/scale",
        _same,
        _same_hf,
        stacked=True,
      )
    )
  return rules


def llama_rules() -> list[Rule]:
  """A transformers LlamaForCausalLM (canonical names: "model." -> "llm.", see hf.canonical) onto the
  decoder with Llama options: the Gemma 1 layer layout (input_layernorm before attention,
  post_attention_layernorm before the MLP), norm weights as stored (norm_offset 0), and the untied
  lm_head as embedder/output_embedding."""
  return llm_rules(post_norms=False) + [
    Rule("llm/embedder/output_embedding", ("lm_head.weight",), None, _same, _same_hf)
  ]


def paligemma_rules(post_norms: bool) -> list[Rule]:
  """Every rule for a single-tower PaliGemma parameter tree."""
  return vision_rules("img") + PROJECTOR_RULES + llm_rules(post_norms)
