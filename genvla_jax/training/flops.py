"""FLOPs of a train step and device peak FLOP/s, for the MFU in the training log and benchmarks.

MFU = model_flops(step) / step time / (number of devices x peak dense bf16 FLOP/s per device).
`model_flops` is the analytic count (below): matmuls forward + backward (6 x params x tokens) plus
attention scores, logits, projector and the frozen tower's forward; it does not count what remat
recomputes (so remat lowers MFU, as it should). `compiled_flops` is XLA's own count for one device's
program, printed once at start-up for cross-checking; it counts the body of a while loop once, so for
our layer-scanned models it undercounts (e.g. tiny tabletop model: 1.15e10 vs 2.68e10 analytic).
"""

from genvla_jax.models import build

# Dense bf16 peak FLOP/s per device (vendor datasheets, no sparsity), matched against
# jax.Device.device_kind; the first matching entry wins.
PEAK_FLOPS = [
  ("H200", 989e12),
  ("H100", 989e12),
  ("GH200", 989e12),
  ("A100", 312e12),
  ("L40S", 362e12),
  ("L4", 121e12),
  ("A10", 125e12),
  ("B200", 2250e12),
  ("TPU v6", 918e12),
  ("TPU v5p", 459e12),
  ("TPU v5", 197e12),
  ("TPU v4", 275e12),
]


def peak_flops(device, override: float = 0.0) -> float | None:
  """Peak FLOP/s of `device` (config.train.peak_flops_per_device wins when > 0); None if unknown
  (CPU, unlisted accelerators): the log then shows no MFU."""
  if override > 0:
    return float(override)
  kind = getattr(device, "device_kind", "")
  for name, flops in PEAK_FLOPS:
    if name.lower() in kind.lower():
      return flops
  return None


def model_flops(model_config, batch: int, text_len: int, action_horizon: int = 1, *, head) -> float:
  """Analytic training FLOPs of one step on `batch` examples of `text_len` text tokens each (and
  model.num_cameras camera frames: the towers run on each, the decoder sees all their tokens), plus what
  the action head (heads.from_config) adds (π0: the action expert's state + `action_horizon` action
  tokens attending to the prefix)."""
  llm = model_config.llm
  cameras, per_camera = build.num_cameras(model_config), build.tokens_per_camera(model_config)
  patches = cameras * per_camera  # image tokens in the sequence: every camera's
  seq = patches + text_len
  d, f = llm.width, llm.mlp_dim
  llm_params = llm.depth * (d * llm.num_heads * llm.head_dim * 2 + 2 * d * llm.num_kv_heads * llm.head_dim + 3 * d * f)
  flops = 6 * llm_params * batch * seq  # decoder matmuls
  flops += 12 * llm.depth * batch * seq**2 * llm.num_heads * llm.head_dim  # attention scores + values
  flops += 6 * batch * text_len * llm.vocab_size * d  # logits
  encoder = build.encoder(model_config)
  frames = batch * cameras  # the towers run on every camera's frame, each attending within itself
  for tower in encoder.built():
    t = tower.vit
    tower_params = t["depth"] * (4 * t["width"] ** 2 + 2 * t["width"] * t["mlp_dim"])
    tower_attn = 12 * t["depth"] * frames * per_camera**2 * t["width"]
    if tower.frozen:  # forward only
      flops += 2 * tower_params * frames * per_camera + tower_attn / 3
    else:
      flops += 6 * tower_params * frames * per_camera + tower_attn
  if model_config.projector == "mlp3":
    hidden = 4 * encoder.single().width
    projector_params = encoder.width * hidden + hidden * d + d * d
  else:
    projector_params = encoder.width * d
  flops += 6 * projector_params * batch * patches  # projector
  flops += head.extra_flops(model_config, batch, seq, action_horizon)  # the action head's own (π0: the expert)
  return float(flops)


def compiled_flops(compiled) -> float | None:
  """FLOPs of one call of a compiled (jax.stages.Compiled) per device, or None if XLA gives none."""
  try:
    analysis = compiled.cost_analysis()
  except Exception:  # (backends without cost analysis)
    return None
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  flops = (analysis or {}).get("flops")
  return float(flops) if flops and flops > 0 else None
