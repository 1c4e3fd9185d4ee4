"""The training config's fields and their defaults (`defaults()`), and what reads a saved config back
(`upgrade()`).

A run's config is one locked ml_collections.ConfigDict with exactly these fields: an unknown key is an
error when set, and code reads fields as attributes (`config.data.on_bad`), never `.get(key,
default)`, so a misspelt key raises instead of falling back to a default. The experiments themselves
(`configs/*.py`) start from `config_lib.base_config`, which is `defaults()` with a PaliGemma architecture,
and set every value that differs from these defaults in their own file.

A config saved by an older run (config.json, a checkpoint's meta) lacks the fields added since; every
reader of a saved config goes through `upgrade()`, which fills them with the defaults here.

Imports nothing of genvla_jax: every layer may read it (tests/test_layering.py), so the policy
(inference), the run directory check (training) and the data sources can all use `upgrade()` and
`entry_problems()`.
"""

import copy
import difflib
import re

import ml_collections

# List-valued fields whose items are dicts with exactly these keys.
ROBOT_ENTRY = ("name", "path", "split", "weight")  # data.robot (data/registry.py names, RLDS dirs)
VL_ENTRY = ("name", "path", "format", "weight")  # data.vl (data/convert_vl.py formats)
MESH_AXES = ("data", "fsdp", "model")  # training/sharding.py MESH_AXES


def defaults() -> ml_collections.ConfigDict:
  """Every field of a training config with its default (unlocked). The architecture (model.image_size,
  model.img, model.llm) and the robot datasets (data.robot) are the experiment's: empty here, set by
  config_lib.base_config (a backbone by name) / the config file."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = dict(
    image_size=224,
    # camera frames per observation, each image_size square: num_cameras x P image tokens; must equal the
    # cameras data.cameras feeds (len, or 1 for []; training/preflight.py refuses a mismatch)
    num_cameras=1,
    img={},  # ViT keyword arguments (models/vit.py VARIANTS); options left out take the ViT's defaults
    llm={},  # Gemma keyword arguments (models/gemma.py VARIANTS); likewise
    dual_encoder=True,
    dtype="float32",  # compute dtype (activations)
    param_dtype="float32",  # storage dtype of trained params (optimizer state is float32)
    frozen_dtype="float32",  # storage dtype of the frozen tower (no optimizer state)
    remat_policy="none",
    # layers per scan iteration in the towers and decoders: 1 loops over the stacked layers (compiles once per
    # stack: the size for large models); a number >= the depth unrolls them (tiny models on a CPU step faster:
    # benchmarks/RESULTS.md "Unrolled layers"). Not architecture: checkpoints are the same either way
    scan_unroll=1,
    # attention (models/attention.py), the towers' and the decoder's: attention_impl for training / prefill
    # ("xla": today's path | "dot_product": jax.nn.dot_product_attention | "cudnn": its cuDNN flash attention,
    # NVIDIA GPU + bf16/fp16 only | "auto": cudnn where it applies, else xla, counted); decode_attention for the
    # one-token decode step ("xla": today's | "fused": one query over the cache in fewer kernels)
    attention_impl="xla",
    decode_attention="xla",
    # Prismatic / OpenVLA layout (configs/openvla.py): a second tower fused per patch ({} =
    # none), how the dual encoder is made ("copy" | "split": the fused tower frozen), the
    # projector ("linear" | "mlp3"), [BOS][image][text] order and causal image/prompt tokens
    fused_img={},
    dual_mode="copy",
    projector="linear",
    image_after_bos=False,
    causal_prefix=False,
    # the action head (genvla_jax/heads HEADS): "tokens" (the LM writes action tokens, tokenizer.action)
    # or "flow" (π0: the flow-matching action expert below, width > 0; tokenizer.action="flow")
    head="tokens",
    # π0 baseline (model.head="flow"): flow-matching action expert; width 0 = none.
    # action_dim / state_dim are resolved from the data at training time (saved with the run)
    action_expert=dict(width=0, mlp_dim=0, action_dim=0, use_state=False, state_dim=0),
  )
  # Start from released weights (used when the run has no checkpoint yet): format "hf" (transformers
  # PaliGemma safetensors dir) or "big_vision" (.npz). architecture: "config" (model.image_size / img / llm
  # above must match the checkpoint's; a mismatch is an error) or "checkpoint" (they are taken from the
  # checkpoint before the model is built, and the run's saved config records them)
  c.pretrained = dict(format="", path="", architecture="config")
  c.tokenizer = dict(
    path="",  # SentencePiece model (PaliGemma's for full-size runs)
    action="string",  # "string" (S), "bins" (OpenVLA-style 256 bins), "fast" (DCT + BPE),
    # or "flow" (no action tokens: model.head="flow", π0's action expert, model.action_expert)
    decimals=4,  # string actions: digits after the point
    action_horizon=1,  # action chunk length H
    num_bins=256,  # bins: number of bins, ids [vocab - num_bins, vocab)
    bins_overwrite_text_ids=True,  # bins/fast may reuse the least-used text ids (OpenVLA does)
    bins_position="model_vocab_end",  # bins: the last ids of the model's vocabulary, or "text_vocab_end"
    bins_layout="uniform",  # bins: "uniform" (bin b -> first id + b) or "openvla" (its exact
    # edges and descending ids: a released OpenVLA's action tokens)
    fast_vocab_size=1024,  # fast: BPE pieces, ids [vocab - fast_vocab_size, vocab)
    fast_scale=10.0,  # fast: DCT coefficients are rounded after multiplying by this
    max_text_len=128,  # prompt + answer tokens per example
    prompt_separator="\n",  # ends the prompt before the answer (PaliGemma "\n"; OpenVLA " ")
    vl_overflow="truncate",  # VL training rows over max_text_len: "truncate" (cut, counted) or "fail"
    constrained=True,
  )  # decode through the action grammar (every output parses)
  c.data = dict(
    rlds_root="",  # robot dataset paths below are relative to this
    robot=[],  # dict(name, path, split, weight) entries (ROBOT_ENTRY); data/registry.py mixtures
    vl_root="",  # VL json paths below are relative to this
    vl=[],  # dict(name, path, format="llava_json"|"parquet", weight) entries (VL_ENTRY)
    # the robot datasets' cameras the model sees, by name and in this order (a converted dataset's meta.json
    # "cameras", e.g. a LeRobot conversion's ["front", "wrist"]); [] = each dataset's primary (first) camera.
    # Two or more: batches carry image [B,C,S,S,3] + image_mask [B,C] (data/pipeline.py); model.num_cameras
    # must equal the count (preflight checks)
    cameras=[],
    robot_fraction=0.5,  # share of every batch from robot data (C); 1.0 = robot only; 0.0 = VL only (pretraining)
    batch_size=256,  # global batch
    num_workers=0,  # grain worker processes (0: in the main process)
    prompt="What action should the robot take to {instruction}?",
    cache_dir="~/.cache/genvla_jax",  # converted shards land here
    demo_dir="",  # when set, the embedded demo data is generated here if missing
    sim_dir="",  # when set, simulator expert demos are recorded here if missing
    sim_record={},  # data/sim_record.ensure settings (env, train_episodes, image_size, ...)
    corpus_dir="",  # when set, the generated VL pretraining corpus (+ its tokenizer) is made here if missing
    corpus={},  # data/vl_corpus.ensure settings (num_train, num_heldout, image_size, seed, vocab_size)
    unnorm_dataset="",  # whose action statistics the policy de-normalizes with ("" = first)
    on_bad="skip",  # bad records at conversion: "skip" (counted, listed) or "fail"
    # instruction augmentation (data/instruction_aug.py): with probability prob a robot example's
    # instruction is replaced by one of its paraphrases from the JSON table at path
    instruction_aug=dict(path="", prob=0.0),
    augment=dict(
      enabled=True,
      crop_scale=(0.9, 1.0),
      crop_ratio=(0.95, 1.05),  # training only
      brightness=0.2,
      contrast=0.2,
      saturation=0.2,
    ),
  )
  c.flow = dict(
    num_steps=10,  # Euler steps from noise (t=1) to actions (t=0) at inference
    time_beta=(1.5, 1.0),  # training flow times ~ Beta(a, b) (π0)
    time_min=0.001,
  )
  c.inference = dict(
    speculative=True,  # constrained decoding verifying proposed tokens K per pass (same output)
    proposal_len=8,  # K: forced tokens (jump-forward) and draft tokens per pass
    draft_previous_action=True,
  )  # draft = the previous act() call's action (Policy.reset() per episode)
  c.optimizer = dict(
    lr=1e-4,
    warmup_steps=1000,
    weight_decay=1e-4,
    clip_norm=1.0,
    b1=0.9,
    b2=0.95,
    lr_mults={},  # {top-level param part ("img", "projector", "llm", "expert"): learning-rate multiplier}
    # parameters that do not train (no gradient, no optimizer state, no update): regexes fully matching the
    # '/'-joined param path, e.g. "llm/.*" (the decoder), "llm/embedder/.*", "img/.*", "projector/.*",
    # "expert/.*" (training/freezing.py); besides these the dual encoder's frozen towers and the kernels LoRA
    # adapts are always frozen. A pattern that matches no parameter is an error at start-up.
    # From the command line: --set='optimizer.frozen=["llm/.*"]'
    frozen=[],
  )
  # LoRA (models/lora.py): per adapted kernel W, A [in, r] (random) and B [r, out] (zeros), the model computes
  # x W + (x A)(alpha / rank B) (decoder, in training; merged W + (alpha / rank) A B for the image towers and for
  # acting); W frozen, A and B train (the params' part lora/). rank 0 = off. targets: regexes
  # fully matching kernel paths (the decoder's attention / MLP projections here; also e.g.
  # "expert/llm/layers/(attn|mlp)/.*" for π0's expert, "img/blocks/.*/kernel" for the trained image tower).
  # Other parameters train unless optimizer.frozen names them (classic LoRA: frozen=["llm/.*"])
  c.lora = dict(rank=0, alpha=16.0, targets=["llm/layers/attn/.*", "llm/layers/mlp/.*"])
  c.train = dict(
    steps=100_000,
    log_every=50,
    grad_accum_steps=1,  # micro-batches per step (the global batch is split; same update)
    checkpoint_every=1000,
    keep_checkpoints=3,  # the newest N checkpoints are kept ...
    keep_every=0,  # ... plus every step divisible by this (0: none)
    # with LoRA or optimizer.frozen a checkpoint holds only the trainable parameters (+ their optimizer state)
    # and a reference to the base they complete (training/frozen_base.py); True: every parameter, always
    checkpoint_frozen=False,
    peak_flops_per_device=0.0,  # for MFU; 0: looked up from the device kind (training/flops.py)
    # representation drift monitor (eval/representation.py): every N steps, linear-probe
    # accuracy of each tower and CKA(trained, frozen) on a labelled image set -> metrics.jsonl
    drift=dict(every=0, data="", limit=500),
    # Weights & Biases (training/metric_writers.py): mode disabled | offline | online; wandb is imported
    # only when enabled (pip install wandb); TensorBoard scalars are always written (WORKDIR/tensorboard)
    wandb=dict(project="", entity="", mode="disabled", name=""),
  )
  c.mesh = dict(
    data=-1,
    fsdp=1,  # -1: all remaining devices
    model=1,  # tensor parallel: attention heads / MLP hidden units split over "model"
    rules=[],
  )  # [(param path regex, PartitionSpec tuple)], before the defaults
  c.distributed = dict(
    initialize="auto",  # auto | always | never (training/distributed.py)
    coordinator_address="",
    num_processes=0,
    process_id=-1,  # explicit start-up
    cpu_collectives="gloo",
  )
  return c


def upgrade(saved) -> ml_collections.ConfigDict:
  """A config saved by any run (a dict read from config.json or a checkpoint's meta, or a ConfigDict)
  -> a locked ConfigDict with every field of `defaults()`.

  - A field the saved config lacks (added after that run) gets its default, recursively through the
    sub-configs (model, data.augment, train.drift, ...).
  - Every value the saved config has is kept as it is. Fields whose default is `{}` (model.img, llm,
    fused_img, data.sim_record: keyword arguments of a module or function) or a list (data.robot,
    data.vl, data.cameras, mesh.rules) are values, not sub-configs: they are kept whole, never filled in (an
    architecture option an older run left out means the module's default, which the model applies).
  - Keys the schema does not know are kept (nothing the run recorded is dropped); no reader reads
    them, and resuming such a run names them as differences (training/run_dir.py).
  - Older forms are rewritten: a data.vl entry {name, json, weight} (the first VL form: LLaVA JSON)
    becomes {name, path, format: "llava_json", weight}; a config without model.head (chosen then by
    tokenizer.action == "flow") gets "flow" when its tokenizer.action is "flow", else "tokens".
  """
  saved = saved.to_dict() if isinstance(saved, ml_collections.ConfigDict) else copy.deepcopy(dict(saved))
  model = saved.get("model")
  if isinstance(model, dict) and "head" not in model:
    flow = (saved.get("tokenizer") or {}).get("action") == "flow"
    saved["model"] = dict(model, head="flow" if flow else "tokens")
  merged = _fill(saved, defaults().to_dict())
  merged["data"]["vl"] = [_vl_entry(e) for e in merged["data"]["vl"]]
  config = ml_collections.ConfigDict(merged)
  config.lock()
  return config


def _fill(saved: dict, schema: dict) -> dict:
  out = dict(saved)
  for key, default in schema.items():
    if key not in out:
      out[key] = copy.deepcopy(default)
    elif isinstance(default, dict) and default and isinstance(out[key], dict):
      out[key] = _fill(out[key], default)
  return out


def _vl_entry(entry):
  if isinstance(entry, dict) and "json" in entry and "path" not in entry:
    entry = {k: v for k, v in entry.items() if k != "json"} | {"path": entry["json"]}
    entry.setdefault("format", "llava_json")
  return entry


def entry_problems(key: str, value) -> list[str]:
  """What is wrong with the value of a list-valued field (`data.robot`, `data.vl`, `mesh.rules`): one
  line per bad entry (wrong type, missing or unknown keys, a rule that is no [regex, [axis, ...]]).
  Empty: fine. Other keys: always fine."""
  if key not in ("data.robot", "data.vl", "mesh.rules"):
    return []
  if not isinstance(value, (list, tuple)):
    return [f"{key} must be a list, got {type(value).__name__}"]
  problems = []
  for i, entry in enumerate(value):
    where = f"{key}[{i}]"
    if key == "mesh.rules":
      problems += _rule_problems(where, entry)
      continue
    keys = ROBOT_ENTRY if key == "data.robot" else VL_ENTRY
    if not isinstance(entry, dict):
      problems.append(f"{where} must be a dict with keys {', '.join(keys)}, got {entry!r}")
      continue
    for k in sorted(set(entry) - set(keys)):
      near = difflib.get_close_matches(k, keys, n=1)
      problems.append(f"{where} has unknown key {k!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    missing = [k for k in keys if k not in entry]
    if missing:
      problems.append(f"{where} ({entry.get('name', '?')!r}) lacks {', '.join(missing)} (keys: {', '.join(keys)})")
  return problems


def _rule_problems(where: str, rule) -> list[str]:
  usage = '[param path regex, [axis or null or [axes], ...]], e.g. ["llm/.*/mlp/linear$", [null, "model", "fsdp"]]'
  if not (isinstance(rule, (list, tuple)) and len(rule) == 2 and isinstance(rule[0], str)):
    return [f"{where} must be {usage}, got {rule!r}"]
  try:
    re.compile(rule[0])
  except re.error as err:
    return [f"{where}: bad regex {rule[0]!r} ({err})"]
  if not isinstance(rule[1], (list, tuple)):
    return [f"{where} must be {usage}, got {rule!r}"]
  for axes in rule[1]:
    for axis in axes if isinstance(axes, (list, tuple)) else (axes,):
      if axis is not None and axis not in MESH_AXES:
        return [f"{where}: unknown mesh axis {axis!r}; axes: {', '.join(MESH_AXES)}"]
  return []
