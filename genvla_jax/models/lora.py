"""LoRA (low-rank adaptation) as a transform of the parameter tree: no model code knows of it.

For every adapted kernel W (a projection of the decoder, and optionally of the image tower or of π0's action
expert) two small matrices per layer: A [in, r] (random, uniform in +-1/sqrt(in), as peft's kaiming init) and
B [r, out] (zeros). The model computes with the merged kernel

  W' = W + (alpha / r) A B

(`merge`), formed from the parameter tree before `model.apply`: in the train step (training/step.py) and,
once, when a policy restores a run (inference/policy.py), so decoding, export and serving see plain
parameters. W itself is frozen (training/freezing.py: no gradient, no optimizer state); A and B train. With B
zero the merged kernel is W bit for bit, so step 0 computes exactly the base model.

Where the adapters live: the train state's params hold them as one more top-level part, `lora/<kernel path>/
{a, b}` (`KEY`), so checkpoints, shardings (the FSDP default) and the optimizer treat them like any part;
`split` / `merged` take them out again. A LoRA run's checkpoints hold the adapters (and the parts left
trainable) without the frozen base, which a restore rebuilds (training/frozen_base.py); an export
(tools/export_hf.py) writes the merged kernels. Their storage is float32 whatever model.param_dtype (they are small).

Kernels are multi-axis einsum weights (gemma.py: q_einsum [L,N,D,Hd], ...); KERNELS gives each adaptable
kernel's axis roles: `b` an axis of separate matrices (the scanned layer axis; the k|v pair of kv_einsum, the
gate|up pair of gating_einsum: each gets its own adapter), `i` input, `o` output. A = [b..., i..., r],
B = [b..., r, o...]: one adapter of rank r per layer and per projection, the input (output) axes of a
multi-axis kernel adapted together (q's [N, Hd] output = all heads, as a [D, N*Hd] matrix).

Why a tree transform and not a library: qwix 0.1.8 (Google's JAX quantization library, whose LoraProvider
intercepts jnp.einsum / lax.dot_general inside flax modules and computes x W + s (x A) B) installs here without
changing any pinned version (it adds only itself), but does not work with this code's linen modules: on the
decoder's einsum kernels it stores the LoRA einsum string with setattr on the module, which raises
SetAttributeFrozenModuleError in an @nn.compact module; and it intercepts only the methods of the model object
it wraps, while this code calls methods as class functions (surgery.init_params: method=Pi0.flow_forward,
inference/decode.py: PrefixLM.prefill / decode_step), where it silently adds no adapter. Editing every layer for
an x A B branch is what a tree transform avoids.

What the merged forward costs (for the memory plan): the merged kernel W' is materialised in W's storage dtype
(one copy of the adapted kernels) and the backward pass forms its full-size gradient dW' (the adapters'
gradients are dA = s dW' B^T, dB = s A^T dW'), but W has no gradient and no optimizer state (AdamW's 8 bytes +
the update per parameter). With bf16 storage the merge rounds W + delta to bf16, so a delta below W's bf16
resolution does not show in the forward until it grows (the gradients still reach A and B). An x A B path inside
the layers would avoid both; it is not needed at float32.
"""

import dataclasses
import math
import re
import string

import jax
import jax.numpy as jnp

KEY = "lora"  # the adapters' top-level part in a train state's params

# Axis roles of the kernels LoRA can adapt, by path (re.fullmatch): b = separate matrices, i = input, o = output.
# Shapes: gemma.py (the decoder and π0's expert, expert/llm/...), vit.py (the image towers' scanned blocks).
KERNELS = (
  (r"(.+/)?layers/attn/q_einsum", "boio"),  # [L,N,D,Hd]
  (r"(.+/)?layers/attn/kv_einsum", "bboio"),  # [L,2,K,D,Hd]
  (r"(.+/)?layers/attn/attn_vec_einsum", "biio"),  # [L,N,Hd,D]
  (r"(.+/)?layers/mlp/gating_einsum", "bbio"),  # [L,2,D,F]
  (r"(.+/)?layers/mlp/linear", "bio"),  # [L,F,D]
  (r"(.+/)?blocks/MultiHeadDotProductAttention_0/(query|key|value)/kernel", "bioo"),  # [L,D,N,Dh]
  (r"(.+/)?blocks/MultiHeadDotProductAttention_0/out/kernel", "biio"),  # [L,N,Dh,D]
  (r"(.+/)?blocks/MlpBlock_0/Dense_\d+/kernel", "bio"),  # [L,D,F] / [L,F,D]
)
# the dual encoder's frozen towers (surgery.FROZEN_PARTS) sit behind stop_gradient: an adapter there never trains
_NO_GRADIENT = ("img_frozen", "img_fused_frozen")


@dataclasses.dataclass(frozen=True)
class Spec:
  """config.lora: rank r (0: off), alpha (delta W = alpha / r A B), targets (kernel path regexes, full match)."""

  rank: int = 0
  alpha: float = 16.0
  targets: tuple[str, ...] = ()

  @classmethod
  def from_config(cls, lora_config) -> "Spec":
    return cls(int(lora_config.rank), float(lora_config.alpha), tuple(lora_config.targets))

  @property
  def enabled(self) -> bool:
    return self.rank > 0


def path_str(path) -> str:
  return "/".join(str(getattr(k, "key", k)) for k in path)


def roles(path: str) -> str | None:
  """The axis roles of the kernel at `path` (KERNELS), None if LoRA cannot adapt it."""
  for pattern, kernel_roles in KERNELS:
    if re.fullmatch(pattern, path):
      return kernel_roles
  return None


def targets(params, patterns) -> dict[str, str]:
  """{path: axis roles} of the kernels the regexes `patterns` (full match on '/'-joined paths) select. A pattern
  that selects nothing, or a selected parameter that is no adaptable kernel (a norm, an embedding, a bias, the
  frozen tower), is a ValueError naming it."""
  leaves = {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
  out, problems = {}, []
  for pattern in patterns:
    matched = [p for p in leaves if re.fullmatch(pattern, p)]
    if not matched:
      parts = sorted({p.split("/")[0] for p in leaves})
      problems.append(f"lora.targets pattern {pattern!r} matches no parameter (full match; parts: {', '.join(parts)})")
    for path in matched:
      kernel_roles = roles(path)
      if path.split("/")[0] in _NO_GRADIENT:
        problems.append(
          f"lora.targets pattern {pattern!r} selects {path}: the dual encoder's frozen tower gets no gradient"
        )
      elif kernel_roles is None:
        problems.append(
          f"lora.targets pattern {pattern!r} selects {path}, which is no projection kernel LoRA adapts "
          "(models/lora.py KERNELS: attention and MLP kernels of the decoder, the expert and the image towers)"
        )
      elif len(kernel_roles) != len(leaves[path].shape):
        problems.append(f"lora: {path} has shape {tuple(leaves[path].shape)}, expected axes {kernel_roles}")
      else:
        out[path] = kernel_roles
  if problems:
    raise ValueError("; ".join(problems))
  return out


def adapter_shapes(shape, kernel_roles: str, rank: int):
  """A kernel's shape and axis roles -> (A's shape [b..., i..., r], B's shape [b..., r, o...], fan-in)."""
  b = [d for d, r in zip(shape, kernel_roles) if r == "b"]
  i = [d for d, r in zip(shape, kernel_roles) if r == "i"]
  o = [d for d, r in zip(shape, kernel_roles) if r == "o"]
  return (*b, *i, rank), (*b, rank, *o), math.prod(i)


def init(params, spec: Spec, rng) -> dict:
  """Fresh adapters for `spec.targets` of `params` (shapes only are read): a nested dict mirroring the kernel
  paths, each {a: [b..., i..., r] uniform in +-1/sqrt(fan_in), b: [b..., r, o...] zeros}, float32."""
  if spec.rank < 1:
    raise ValueError(f"lora.rank={spec.rank}: adapters need rank >= 1")
  leaves = {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
  adapters: dict = {}
  for n, (path, kernel_roles) in enumerate(sorted(targets(params, spec.targets).items())):
    a_shape, b_shape, fan_in = adapter_shapes(leaves[path].shape, kernel_roles, spec.rank)
    bound = fan_in**-0.5
    a = jax.random.uniform(jax.random.fold_in(rng, n), a_shape, jnp.float32, -bound, bound)
    node = adapters
    for key in path.split("/"):
      node = node.setdefault(key, {})
    node.update(a=a, b=jnp.zeros(b_shape, jnp.float32))
  return adapters


def with_adapters(params, spec: Spec | None, rng):
  """params plus fresh adapters under KEY when `spec` is on; else params as they are."""
  if spec is None or not spec.enabled:
    return params
  return dict(params, **{KEY: init(params, spec, jax.random.fold_in(rng, 0x10A))})


def delta(a, b, kernel_roles: str, scale: float):
  """scale * A B laid out as the kernel (axis roles `kernel_roles`), float32."""
  letters = string.ascii_lowercase[: len(kernel_roles)]
  pick = lambda role: "".join(c for c, r in zip(letters, kernel_roles) if r == role)  # noqa: E731
  spec = f"{pick('b')}{pick('i')}z,{pick('b')}z{pick('o')}->{letters}"
  return scale * jnp.einsum(spec, a.astype(jnp.float32), b.astype(jnp.float32))


def adapter_paths(adapters) -> dict[str, dict]:
  """{kernel path: {a, b}} of an adapter tree."""
  out = {}
  for p, x in jax.tree_util.tree_flatten_with_path(adapters)[0]:
    *kernel, which = path_str(p).split("/")
    out.setdefault("/".join(kernel), {})[which] = x
  return out


def merge(params, adapters, alpha: float):
  """Plain parameters: every adapted kernel W -> W + (alpha / r) A B in W's dtype (`params` without KEY; the
  others unchanged). What the model computes with in training, and what a policy or an export gets."""
  found = adapter_paths(adapters)
  leaves = {path_str(p): x for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
  missing = sorted(set(found) - set(leaves))
  if missing:
    raise ValueError(f"lora adapters for {missing}: no such parameter")

  def one(path, w):
    name = path_str(path)
    if name not in found:
      return w
    ab = found[name]
    rank = ab["a"].shape[-1]
    return (w.astype(jnp.float32) + delta(ab["a"], ab["b"], roles(name), alpha / rank)).astype(w.dtype)

  return jax.tree_util.tree_map_with_path(one, params)


def split(params):
  """A train state's params -> (the model's params, adapters or None)."""
  if KEY not in params:
    return params, None
  rest = {k: v for k, v in params.items() if k != KEY}
  return rest, params[KEY]


def merged(params, alpha: float):
  """A train state's params (adapters under KEY, or none) -> the model's plain params."""
  base, adapters = split(params)
  return base if adapters is None else merge(base, adapters, alpha)


def adapted(params) -> set[str]:
  """Paths of the kernels the adapters under KEY adapt (empty without adapters)."""
  _, adapters = split(params)
  return set() if adapters is None else set(adapter_paths(adapters))
