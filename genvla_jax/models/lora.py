"""LoRA (low-rank adaptation): adapters stored beside the parameters; the decoder computes them factored, the
image towers merged.

For every adapted kernel W (a projection of the decoder, and optionally of the image tower or of π0's action
expert) two small matrices per layer: A [in, r] (random, uniform in +-1/sqrt(in), as peft's kaiming init) and
B [r, out] (zeros); s = alpha / r. With B zero the model computes the base model bit for bit, so step 0 is the
base model. W itself is frozen (training/freezing.py: no gradient, no optimizer state); A and B train.

Where the adapters live: the train state's params hold them as one more top-level part, `lora/<kernel path>/
{a, b}` (`KEY`), so checkpoints, shardings (the FSDP default) and the optimizer treat them like any part;
`split` / `merged` take them out again. A LoRA run's checkpoints hold the adapters (and the parts left
trainable) without the frozen base, which a restore rebuilds (training/frozen_base.py); an export
(tools/export_hf.py) writes the merged kernels. Their storage is float32 whatever model.param_dtype (they are small).

How the model computes with them, two ways:
- factored (training, decoder kernels: gemma.py, i.e. the LLM and π0's expert decoder; DECODER_KERNELS): the
  train step (training/step.py, through `for_training`) passes the adapters as the variable collection COLLECTION, a
  tree mirroring the kernel paths ({"llm": {"layers": {"attn": {"q_einsum": {"a": A, "b": s B}}}}}: s folded
  into B outside the model, so autodiff gives the right dA, dB and the model needs no LoRA config), scanned
  along the layer axis like the params; each projection computes einsum(x, W) + einsum(einsum(x, A), s B)
  (`project`, its einsum strings derived from the kernel's axis roles). Neither W' nor the full-size gradient
  dW' exists; a layer without adapters in the collection computes exactly what it did.
- merged (the image towers, whose layers are linen's DenseGeneral / MultiHeadDotProductAttention and have no
  such branch: TOWER_KERNELS; and everything at decoding, in the policy and in an export): W' = W + s A B in
  W's dtype (`merge`), formed from the parameter tree before model.apply: in the train step for the towers'
  adapters, and once when a policy restores a run (inference/policy.py), so decoding, export and serving see
  plain parameters. The merge costs (for the memory plan) W' materialised in W's storage dtype and its
  full-size gradient dW' in the backward pass (dA = s dW' B^T, dB = s A^T dW'); with bf16 storage it rounds
  W + delta to bf16, so a delta below W's bf16 resolution does not show in the forward until it grows.

Kernels are multi-axis einsum weights (gemma.py: q_einsum [L,N,D,Hd], ...); KERNELS gives each adaptable
kernel's axis roles: `b` an axis of separate matrices (the scanned layer axis; the k|v pair of kv_einsum, the
gate|up pair of gating_einsum: each gets its own adapter), `i` input, `o` output. A = [b..., i..., r],
B = [b..., r, o...]: one adapter of rank r per layer and per projection, the input (output) axes of a
multi-axis kernel adapted together (q's [N, Hd] output = all heads, as a [D, N*Hd] matrix).

Why not a library: qwix 0.1.8 (Google's JAX quantization library, whose LoraProvider intercepts jnp.einsum /
lax.dot_general inside flax modules and computes x W + s (x A) B) installs here without changing any pinned
version (it adds only itself), but does not work with this code's linen modules: on the decoder's einsum
kernels it stores the LoRA einsum string with setattr on the module, which raises
SetAttributeFrozenModuleError in an @nn.compact module; and it intercepts only the methods of the model object
it wraps, while this code calls methods as class functions (surgery.init_params: method=Pi0.flow_forward,
inference/decode.py: PrefixLM.prefill / decode_step), where it silently adds no adapter.
"""

import dataclasses
import math
import re
import string

import jax
import jax.numpy as jnp

KEY = "lora"  # the adapters' top-level part in a train state's params

COLLECTION = "lora"  # the model's variable collection of factored adapters (read by gemma.py's layers)

# Axis roles of the kernels LoRA can adapt, by path (re.fullmatch): b = separate matrices, i = input, o = output.
# The decoder's (gemma.py: the LLM and π0's expert, expert/llm/...) train factored inside the layers:
DECODER_KERNELS = (
  (r"(.+/)?layers/attn/q_einsum", "boio"),  # [L,N,D,Hd]
  (r"(.+/)?layers/attn/kv_einsum", "bboio"),  # [L,2,K,D,Hd]
  (r"(.+/)?layers/attn/attn_vec_einsum", "biio"),  # [L,N,Hd,D]
  (r"(.+/)?layers/mlp/gating_einsum", "bbio"),  # [L,2,D,F]
  (r"(.+/)?layers/mlp/linear", "bio"),  # [L,F,D]
)
# the image towers' (vit.py's scanned blocks: linen layers) train merged
TOWER_KERNELS = (
  (r"(.+/)?blocks/MultiHeadDotProductAttention_0/(query|key|value)/kernel", "bioo"),  # [L,D,N,Dh]
  (r"(.+/)?blocks/MultiHeadDotProductAttention_0/out/kernel", "biio"),  # [L,N,Dh,D]
  (r"(.+/)?blocks/MlpBlock_0/Dense_\d+/kernel", "bio"),  # [L,D,F] / [L,F,D]
)
KERNELS = DECODER_KERNELS + TOWER_KERNELS
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
  others unchanged). What a policy or an export gets, and in training the image towers' kernels (for_training)."""
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


# -- the factored path: the decoder's adapters inside its layers ------------------------------------------------


def is_factored(path: str) -> bool:
  """Whether the kernel at `path` trains factored (a decoder kernel, DECODER_KERNELS) rather than merged."""
  return any(re.fullmatch(pattern, path) for pattern, _ in DECODER_KERNELS)


def _nested(flat: dict[str, dict]) -> dict:
  out: dict = {}
  for path, ab in flat.items():
    node = out
    for key in path.split("/"):
      node = node.setdefault(key, {})
    node.update(ab)
  return out


def for_training(params, alpha: float, factored: bool = True):
  """A train state's params -> (the model's params, the COLLECTION tree or None): the decoder's adapters as
  {<kernel path>: {a: A, b: (alpha / r) B}} for the layers to compute factored, the other adapters (the image
  towers') merged into their kernels. factored=False merges every adapter (the old path; for comparisons)."""
  base, adapters = split(params)
  if adapters is None:
    return base, None
  flat = adapter_paths(adapters)
  inside = {p: ab for p, ab in flat.items() if factored and is_factored(p)}
  outside = {p: ab for p, ab in flat.items() if p not in inside}
  model_params = merge(base, _nested(outside), alpha) if outside else base
  if not inside:
    return model_params, None
  scaled = {p: {"a": ab["a"], "b": (alpha / ab["a"].shape[-1]) * ab["b"]} for p, ab in inside.items()}
  return model_params, _nested(scaled)


class WithAdapters:
  """`model` whose apply also passes `collection` as the variable collection COLLECTION (callers that run
  model.apply({"params": ...}), the action heads, need not know); every other attribute is the model's."""

  def __init__(self, model, collection):
    self.model = model
    self.collection = collection

  def apply(self, variables, *args, **kwargs):
    return self.model.apply({**variables, COLLECTION: self.collection}, *args, **kwargs)

  def __getattr__(self, name):
    return getattr(self.model, name)


def with_collection(model, collection):
  """model as is when `collection` is None, else WithAdapters(model, collection)."""
  return model if collection is None else WithAdapters(model, collection)


def layer_roles(kernel: str) -> str:
  """The axis roles of one layer's slice of a decoder kernel ('attn/q_einsum' -> 'oio': the scanned layer axis
  dropped), ValueError for a name that is no decoder kernel."""
  for pattern, kernel_roles in DECODER_KERNELS:
    if re.fullmatch(pattern, f"layers/{kernel}"):
      return kernel_roles[1:]
  raise ValueError(f"lora: {kernel!r} is no decoder kernel (DECODER_KERNELS: layers/attn/..., layers/mlp/...)")


def factored_equations(equation: str, kernel_roles: str) -> tuple[str, str]:
  """A projection's einsum 'x,w->y' and the kernel's axis roles -> the einsums of x A and of (x A) B:
  A = [b..., i..., r], B = [b..., r, o...] (adapter_shapes), x A keeps y's axes but the outputs (o), plus r.
  E.g. ('BTD,CDF->CBTF', 'bio') -> ('BTD,CDr->CBTr', 'CBTr,CrF->CBTF')."""
  inputs, y = equation.split("->")
  x, w = inputs.split(",")
  if len(w) != len(kernel_roles):
    raise ValueError(
      f"lora: einsum {equation!r} has a {len(w)}-axis kernel, the roles {kernel_roles!r} {len(kernel_roles)}"
    )
  role = dict(zip(w, kernel_roles))
  for letter, r in role.items():
    wrong = (r == "i" and (letter not in x or letter in y)) or (r != "i" and (letter in x or letter not in y))
    if wrong:
      raise ValueError(f"lora: einsum {equation!r}: axis {letter!r} of role {r!r} is not where that role goes")
  rank = next(c for c in "rzqjk" + string.ascii_lowercase if c not in equation)
  pick = lambda which: "".join(c for c in w if role[c] == which)  # noqa: E731
  xa = "".join(c for c in y if role.get(c) != "o") + rank
  return f"{x},{pick('b')}{pick('i')}{rank}->{xa}", f"{xa},{pick('b')}{rank}{pick('o')}->{y}"


def adapter(module, kernel: str):
  """The {a, s B} a decoder layer's `module` finds for its kernel named `kernel` in COLLECTION, None if none."""
  if module.has_variable(COLLECTION, kernel):
    return module.get_variable(COLLECTION, kernel)
  return None


def project(equation: str, x, w, ab, kernel: str):
  """A decoder projection einsum(equation, x, w), plus, with adapters `ab` = {a, b: s B} (adapter()),
  einsum(einsum(x, A), s B) in x's dtype; `kernel`: the kernel's name in its layer ('attn/q_einsum', for its
  axis roles). Without adapters exactly the plain einsum."""
  y = jnp.einsum(equation, x, w)
  if ab is None:
    return y
  xa_equation, low_equation = factored_equations(equation, layer_roles(kernel))
  xa = jnp.einsum(xa_equation, x, ab["a"].astype(x.dtype))
  return y + jnp.einsum(low_equation, xa, ab["b"].astype(x.dtype))
