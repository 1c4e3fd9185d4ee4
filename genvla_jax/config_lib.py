"""Shared building blocks for config files (`configs/*.py`, each with `get_config(arg)`).

A config is one ml_collections.ConfigDict holding model, tokenizer, data, optimizer, training and mesh
settings. It is locked (an unknown key is an error, never silently ignored) and saved with every
checkpoint, so predict/eval/serve need only the run directory.

Config arguments (`--config=configs/pi0_plus.py:ARG`): comma-separated, the first item optionally a
variant name, then key=value options, e.g. `demo`, `demo,ablation=DS`, `ablation=S`.
"""

import ml_collections

from genvla_jax.data import registry

# Llama 2 options of the one decoder (models/gemma.py); LLAMA2_7B as OpenVLA uses it (vocabulary padded
# from 32000 to 32064 for tensor-core-friendly shapes).
_LLAMA2 = dict(
  query_pre_attn_scalar=None,
  post_norms=False,
  attn_logits_softcap=None,
  final_logits_softcap=None,
  sliding_window=None,
  norm_offset=0.0,
  norm_eps=1e-5,
  activation="silu",
  scale_embeddings=False,
  tie_embeddings=False,
)
LLAMA2_7B = dict(
  vocab_size=32_064, width=4096, depth=32, mlp_dim=11_008, num_heads=32, num_kv_heads=32, head_dim=128, **_LLAMA2
)
LLAMA2_TINY = dict(vocab_size=640, width=128, depth=3, mlp_dim=352, num_heads=4, num_kv_heads=4, head_dim=32, **_LLAMA2)
# Published sizes. SigLIP So400m/14 + Gemma 2B = PaliGemma-3B; SigLIP So400m/14 + Gemma 2 2B = PaliGemma 2 3B.
SIGLIP_SO400M_14 = dict(patch_size=14, width=1152, depth=27, mlp_dim=4304, num_heads=16, posemb_std=None)
_GEMMA1 = dict(
  query_pre_attn_scalar=None, post_norms=False, attn_logits_softcap=None, final_logits_softcap=None, sliding_window=None
)
GEMMA_2B = dict(
  vocab_size=257_152, width=2048, depth=18, mlp_dim=16_384, num_heads=8, num_kv_heads=1, head_dim=256, **_GEMMA1
)
GEMMA2_2B = dict(
  vocab_size=257_152,
  width=2304,
  depth=26,
  mlp_dim=9216,
  num_heads=8,
  num_kv_heads=4,
  head_dim=256,
  query_pre_attn_scalar=256,
  post_norms=True,
  attn_logits_softcap=50.0,
  final_logits_softcap=30.0,
  sliding_window=4096,
)
# PaliGemma backbones by name: (vision tower, language model, image size).
BACKBONES = {
  "paligemma_224": (SIGLIP_SO400M_14, GEMMA_2B, 224),
  "paligemma_448": (SIGLIP_SO400M_14, GEMMA_2B, 448),
  "paligemma2_224": (SIGLIP_SO400M_14, GEMMA2_2B, 224),
  "paligemma2_448": (SIGLIP_SO400M_14, GEMMA2_2B, 448),
}
# DINOv2 ViT-L/14 (with 4 registers, as Prismatic / OpenVLA use it), and the towers as Prismatic feeds
# them to the LLM: the penultimate block's patch tokens, no final norm (depth one less than released).
DINOV2_L14 = dict(
  patch_size=14,
  width=1024,
  depth=24,
  mlp_dim=4096,
  num_heads=16,
  posemb_std=None,
  cls_token=True,
  num_registers=4,
  layer_scale=True,
  mlp_activation="gelu",
  pixel_norm="imagenet",
)
DINOV2_L14_PRISMATIC = dict(DINOV2_L14, depth=23, final_norm=False)
SIGLIP_SO400M_14_PRISMATIC = dict(SIGLIP_SO400M_14, depth=26, final_norm=False)
# Prismatic / OpenVLA at test size: a DINOv2-like tower (CLS, a register, LayerScale, exact GELU, ImageNet
# pixels) fused with a SigLIP-like one of another width, both cut before their final norm
DINOV2_TINY = dict(
  patch_size=8,
  width=96,
  depth=2,
  mlp_dim=384,
  num_heads=4,
  posemb_std=1.0,
  cls_token=True,
  num_registers=1,
  layer_scale=True,
  mlp_activation="gelu",
  pixel_norm="imagenet",
  final_norm=False,
)
SIGLIP_TINY_PRISMATIC = dict(
  patch_size=8, width=64, depth=2, mlp_dim=256, num_heads=4, posemb_std=1.0, final_norm=False
)
# Tiny sizes for the CPU demo and tests (a few million parameters).
# posemb_std=1: from scratch, a strong position signal lets the tiny model localize within ~200 steps
# (with the default 1/sqrt(width) it needed several times longer on the demo task).
SIGLIP_TINY = dict(patch_size=8, width=128, depth=2, mlp_dim=512, num_heads=4, posemb_std=1.0)
GEMMA_TINY = dict(vocab_size=640, width=128, depth=3, mlp_dim=512, num_heads=4, num_kv_heads=1, head_dim=32, **_GEMMA1)
# π0's action expert (Gemma 300M: width 1024, MLP 4096; depth / heads / head size are the VLM's).
EXPERT_300M = dict(width=1024, mlp_dim=4096)
EXPERT_TINY = dict(width=64, mlp_dim=256)

ABLATION_LETTERS = "DSC"  # D: dual encoder, S: string actions (else bins), C: co-training with VL data


def parse_arg(arg: str | None, variants: tuple[str, ...], **defaults) -> ml_collections.ConfigDict:
  """'demo,ablation=DS' -> {variant: 'demo', ablation: 'DS'}; unknown variants or keys raise."""
  opts = ml_collections.ConfigDict(dict(variant=variants[0], **defaults))
  items = [s.strip() for s in (arg or "").split(",") if s.strip()]
  for i, item in enumerate(items):
    if "=" not in item:
      if i != 0 or item not in variants:
        raise ValueError(f"unknown config variant {item!r}; variants: {variants}")
      opts.variant = item
      continue
    key, value = item.split("=", 1)
    if key not in defaults:
      raise ValueError(f"unknown config option {key!r}; options: {sorted(defaults)}")
    opts[key] = type(defaults[key])(value)
  return opts


def base_config(backbone: str = "paligemma_224") -> ml_collections.ConfigDict:
  if backbone not in BACKBONES:
    raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
  img, llm, image_size = BACKBONES[backbone]
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.model = dict(
    image_size=image_size,
    img=dict(img),
    llm=dict(llm),
    dual_encoder=True,
    dtype="float32",  # compute dtype (activations)
    param_dtype="float32",  # storage dtype of trained params (optimizer state is float32)
    frozen_dtype="float32",  # storage dtype of the frozen tower (no optimizer state)
    remat_policy="none",
    # Prismatic / OpenVLA layout (configs/openvla.py): a second tower fused per patch ({} =
    # none), how the dual encoder is made ("copy" | "split": the fused tower frozen), the
    # projector ("linear" | "mlp3"), [BOS][image][text] order and causal image/prompt tokens
    fused_img={},
    dual_mode="copy",
    projector="linear",
    image_after_bos=False,
    causal_prefix=False,
    # π0 baseline (tokenizer.action="flow"): flow-matching action expert; width 0 = none.
    # action_dim / state_dim are resolved from the data at training time (saved with the run)
    action_expert=dict(width=0, mlp_dim=0, action_dim=0, use_state=False, state_dim=0),
  )
  # Start from released weights (used when the run has no checkpoint yet): format "hf" (transformers
  # PaliGemma safetensors dir) or "big_vision" (.npz). The architecture above must match the checkpoint's.
  c.pretrained = dict(format="", path="")
  c.tokenizer = dict(
    path="",  # SentencePiece model (PaliGemma's for full-size runs)
    action="string",  # "string" (S), "bins" (OpenVLA-style 256 bins), "fast" (DCT + BPE),
    # or "flow" (no action tokens: π0's action expert, model.action_expert)
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
    constrained=True,
  )  # decode through the action grammar (every output parses)
  c.data = dict(
    rlds_root="",  # robot dataset paths below are relative to this
    robot=registry.mixture("paper"),  # fractal (RT-1) + bridge, as in the paper; see data/registry.py
    vl_root="",  # VL json paths below are relative to this
    vl=[],  # dict(name, path, format="llava_json"|"parquet", weight) entries
    robot_fraction=0.5,  # share of every batch from robot data (C); 1.0 = robot only
    batch_size=256,  # global batch
    num_workers=0,  # grain worker processes (0: in the main process)
    prompt="What action should the robot take to {instruction}?",
    cache_dir="~/.cache/genvla_jax",  # converted shards land here
    demo_dir="",  # when set, the embedded demo data is generated here if missing
    sim_dir="",  # when set, simulator expert demos are recorded here if missing
    sim_record={},  # data/sim_record.ensure settings (env, train_episodes, image_size, ...)
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
  c.optimizer = dict(lr=1e-4, warmup_steps=1000, weight_decay=1e-4, clip_norm=1.0, b1=0.9, b2=0.95)
  c.train = dict(
    steps=100_000,
    log_every=50,
    grad_accum_steps=1,  # micro-batches per step (the global batch is split; same update)
    checkpoint_every=1000,
    keep_checkpoints=3,  # the newest N checkpoints are kept ...
    keep_every=0,  # ... plus every step divisible by this (0: none)
    peak_flops_per_device=0.0,  # for MFU; 0: looked up from the device kind (training/flops.py)
    # representation drift monitor (eval/representation.py): every N steps, linear-probe
    # accuracy of each tower and CKA(trained, frozen) on a labelled image set -> metrics.jsonl
    drift=dict(every=0, data="", limit=500),
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


def apply_demo(c: ml_collections.ConfigDict, demo_dir: str = "~/.cache/genvla_jax/demo_v7"):
  """Tiny model on the embedded demo data: trains on a 2-core CPU in minutes. Paths are derived from
  data.demo_dir by reference, so `--config.data.demo_dir=DIR` moves all of them (layout: demo.py)."""
  c.model.image_size = 32
  c.model.img = dict(SIGLIP_TINY)
  c.model.llm = dict(GEMMA_TINY)
  c.data.demo_dir = demo_dir
  demo_ref = c.data.get_ref("demo_dir")
  c.tokenizer.path = demo_ref + "/tokenizer.model"
  c.tokenizer.max_text_len = 40
  c.tokenizer.bins_overwrite_text_ids = False  # demo vocab has 256 spare ids above the tokenizer's
  c.data.rlds_root = demo_ref + "/rlds"
  c.data.robot = [dict(name="demo_targets", path="demo_targets/1.0.0", split="train", weight=1.0)]
  c.data.vl_root = demo_ref + "/vl"
  c.data.vl = [dict(name="demo_vqa", path="train.json", format="llava_json", weight=1.0)]
  c.data.batch_size = 32
  c.data.augment.enabled = False  # the demo's targets are pixel-exact grid cells: crops would move them
  c.optimizer = dict(lr=1e-3, warmup_steps=100, weight_decay=1e-4, clip_norm=1.0, b1=0.9, b2=0.95)
  c.train.update(steps=2000, log_every=50, checkpoint_every=250, keep_checkpoints=2)


def apply_sim(c: ml_collections.ConfigDict, env: str):
  """Tiny model trained on a simulated benchmark's expert demonstrations (data/sim_record.py): "tabletop"
  (MuJoCo, ours; with a VL set about the same scenes) or "metaworld" (MT10; no VL set, so robot only).
  Closed-loop evaluation: `python -m genvla_jax.eval --config=configs/eval_<env>.py`."""
  apply_demo(c)
  c.data.demo_dir = ""
  c.model.image_size = 64
  c.data.sim_dir = f"~/.cache/genvla_jax/{env}_v3"  # data/sim_record.py RECORDER_VERSION
  # one front camera cannot tell the gripper's height from its depth: the prompt writes the robot
  # state (normalized, as text), as pi0-FAST does (every row of the grid, π0 too, which also has its
  # state token)
  c.data.prompt = "What action should the robot take to {instruction}? State: {state}"
  ref = c.data.get_ref("sim_dir")
  # training demos executed with noise (recoveries in the data; the labels stay the expert's commands)
  c.data.sim_record = dict(
    env=env, train_episodes=400, val_episodes=40, image_size=64, execution_noise=1.0 if env == "tabletop" else 0.0
  )
  c.tokenizer.path = ref + "/tokenizer.model"
  c.tokenizer.max_text_len = 80  # ~22 prompt + ~20 state tokens + 4 x 7 action characters + EOS
  c.data.rlds_root = ref + "/rlds"
  name = {"tabletop": "tabletop", "metaworld": "metaworld_mt10"}[env]
  c.data.robot = [dict(name=name, path=f"{name}/1.0.0", split="train", weight=1.0)]
  c.data.vl_root = ref + "/vl"
  if env == "tabletop":
    c.data.vl = [dict(name="tabletop_vqa", path="train.json", format="llava_json", weight=1.0)]
  else:
    c.data.vl = []
    c.data.robot_fraction = 1.0


def apply_pi0(c: ml_collections.ConfigDict, expert: dict, horizon: int):
  """The π0 baseline on the config's backbone: one image tower, continuous action chunks of `horizon`
  steps from a flow-matching action expert (`expert`: width / mlp_dim), robot data only, with
  instruction augmentation and a state token (as the paper trains it)."""
  c.model.dual_encoder = False
  c.model.action_expert.update(width=expert["width"], mlp_dim=expert["mlp_dim"], use_state=True)
  c.tokenizer.action = "flow"
  c.tokenizer.action_horizon = horizon
  c.data.robot_fraction = 1.0
  c.data.instruction_aug.prob = 0.5


def apply_openvla(c: ml_collections.ConfigDict, tiny: bool, dual_mode: str = "split"):
  """OpenVLA on Prismatic's layout: DINOv2 + SigLIP fused per patch (penultimate blocks), the
  fused-gelu-mlp projector, Llama 2 with [BOS][image][text] causal attention, OpenVLA's prompt, 256
  bins on the last ids of the text vocabulary. With D (ablation letters), dual_mode "split" freezes
  SigLIP and trains DINOv2 (the paper's released code), "copy" duplicates both towers."""
  m = c.model
  if tiny:
    m.img, m.fused_img, m.llm = dict(DINOV2_TINY), dict(SIGLIP_TINY_PRISMATIC), dict(LLAMA2_TINY)
  else:
    m.img, m.fused_img, m.llm = dict(DINOV2_L14_PRISMATIC), dict(SIGLIP_SO400M_14_PRISMATIC), dict(LLAMA2_7B)
    m.image_size = 224
    # a 7B model: bf16 storage (optimizer state stays float32), remat, FSDP over every device
    m.update(dtype="bfloat16", param_dtype="bfloat16", frozen_dtype="bfloat16", remat_policy="dots")
    c.mesh.update(data=1, fsdp=-1)
    c.tokenizer.bins_position = "text_vocab_end"  # OpenVLA: the 256 least-used ids of Llama's 32000
  m.update(dual_mode=dual_mode, projector="mlp3", image_after_bos=True, causal_prefix=True)
  c.tokenizer.bins_layout = "openvla"  # OpenVLA's bin edges and id order (ablation rows with bins)
  c.data.prompt = "In: What action should the robot take to {instruction}?\nOut:"
  c.tokenizer.prompt_separator = " "


def eval_config(
  env: str, env_kwargs: dict, tasks, protocols, episodes_per_task: int, num_envs: int, video_episodes: int
) -> ml_collections.ConfigDict:
  """Closed-loop evaluation settings (configs/eval_*.py; read by genvla_jax/eval/__main__.py)."""
  c = ml_collections.ConfigDict()
  c.env = env
  c.env_kwargs = dict(env_kwargs)
  c.tasks = list(tasks)
  c.protocols = list(protocols)
  c.episodes_per_task = episodes_per_task
  c.num_envs = num_envs  # environments stepped together (one batched policy call per re-plan)
  c.execute_steps = 1  # actions of each predicted chunk executed before re-planning
  c.seed = 0  # episode seeds seed, seed+1, ... (recorded demos use seeds >= 100000)
  c.video_episodes = video_episodes  # per (protocol, task): the first episodes are saved as videos
  c.video_format = "mp4"  # mp4 | gif
  c.lock()
  return c


def apply_ablation(c: ml_collections.ConfigDict, letters: str):
  """letters: the subset of 'DSC' switched on (e.g. 'DS'); the others off."""
  unknown = set(letters) - set(ABLATION_LETTERS)
  if unknown:
    raise ValueError(f"unknown ablation letters {sorted(unknown)}; use a subset of {ABLATION_LETTERS!r}")
  c.model.dual_encoder = "D" in letters
  c.tokenizer.action = "string" if "S" in letters else "bins"
  if "C" not in letters:
    c.data.robot_fraction = 1.0
