r"""π0 baseline (the paper's "π0 w/ Inst. Aug."): PaliGemma-3B prefix + a flow-matching action expert
(Gemma 300M: width 1024, MLP 4096) over 50-step action chunks with a state token; 10 Euler steps at
inference with the prefix KV cache computed once; robot data only, instructions augmented with
paraphrases from a per-task table (data/instruction_aug.py).

  python -m genvla_jax.train --config=configs/pi0_baseline.py:demo --workdir=DIR      # tiny, CPU
  python -m genvla_jax.train --config=configs/pi0_baseline.py \
      --config.data.rlds_root=/data/oxe --config.tokenizer.path=/ckpt/paligemma_tokenizer.model \
      --config.data.instruction_aug.path=/data/oxe/paraphrases.json \
      --config.pretrained.format=big_vision --config.pretrained.path=/ckpt/pt_224.npz ...

Variants: `full` (default), `demo`, `tabletop`, `metaworld` (tiny sizes on the embedded / simulator
data, where the paraphrase table comes with the data; MetaWorld has none, so there augmentation is
off); options `backbone=...`, `mixture=...` (+ `robot_dir=OUT` for a LeRobot mixture; `mixture=droid`: three
cameras), `vlm=...`, `cameras=...` (as configs/pi0_plus.py), `horizon=H` (action chunk; 50 full, 4 tiny).
"""

from genvla_jax import config_lib
from genvla_jax.models import action_expert, gemma, vit


def get_config(arg=None):
  opts = config_lib.parse_arg(
    arg,
    variants=("full", "demo", "tabletop", "metaworld"),
    backbone="paligemma_224",
    mixture="paper",
    robot_dir="",  # a LeRobot mixture's finished convert_lerobot --out
    vlm="none",
    cameras="image",
    horizon=0,
  )
  # every field's default (genvla_jax/config_schema.py) + SigLIP So400m/14 and Gemma (2) 2B at 224/448 px
  c = config_lib.base_config(opts.backbone)
  if opts.variant == "demo":
    c.data.demo_dir = config_lib.DEMO_DIR  # generated there on first use
    c.update_from_flattened_dict(config_lib.demo_data(c.data.get_ref("demo_dir")))
    c.tokenizer.max_text_len = 40
    c.data.instruction_aug.path = c.data.get_ref("demo_dir") + "/paraphrases.json"
  elif opts.variant in ("tabletop", "metaworld"):
    cameras = config_lib.sim_cameras(opts.cameras)
    c.data.sim_dir = config_lib.sim_dir(opts.variant, cameras)  # recorded there on first use
    c.update_from_flattened_dict(config_lib.sim_data(opts.variant, c.data.get_ref("sim_dir"), cameras))
    c.model.image_size = 64
    # training demos executed with noise (recoveries in the data; the labels stay the expert's commands)
    noise = 1.0 if opts.variant == "tabletop" else 0.0
    c.data.sim_record = dict(
      env=opts.variant,
      train_episodes=400,
      val_episodes=40,
      image_size=64,
      execution_noise=noise,
      **config_lib.sim_record_cameras(cameras),
    )
    # one front camera cannot tell the gripper's height from its depth: the prompt writes the robot state
    # (normalized, as text), as pi0-FAST does (π0 also has its state token)
    c.data.prompt = "What action should the robot take to {instruction}? State: {state}"
    c.tokenizer.max_text_len = 80  # ~22 prompt + ~20 state tokens + 4 x 7 action characters + EOS
    if opts.variant == "tabletop":
      c.data.instruction_aug.path = c.data.get_ref("sim_dir") + "/paraphrases.json"
  if opts.variant != "full":  # the tiny model: trains on a 2-core CPU in minutes
    c.model.img = dict(vit.VARIANTS["tiny"])
    c.model.llm = dict(gemma.VARIANTS["tiny"])
    c.model.scan_unroll = config_lib.TINY_SCAN_UNROLL
    c.data.batch_size = 32
    c.data.augment.enabled = False  # the demo's targets are pixel-exact grid cells: crops would move them
    c.optimizer.update(lr=1e-3, warmup_steps=100)
    c.train.update(steps=2000, log_every=50, checkpoint_every=250, keep_checkpoints=2)
  if opts.vlm != "none":  # start from the project's pretrained VLM (or its architecture from scratch)
    c.data.corpus_dir = config_lib.CORPUS_DIR  # made there on first use (data/vl_corpus.py)
    c.update_from_flattened_dict(config_lib.vlm_start(opts.vlm, opts.variant, c.data.get_ref("corpus_dir")))
  # after the variant's own data: paper = fractal (RT-1) + bridge (full); a mixture of several cameras also sets
  # data.cameras and model.num_cameras; `demo,mixture=libero,robot_dir=OUT`: the tiny model on a LeRobot conversion
  c.update_from_flattened_dict(config_lib.robot_mixture(opts.mixture, opts.robot_dir, opts.variant))
  # π0: one image tower, continuous action chunks from the flow-matching action expert (Gemma 300M; tiny:
  # width 64), a state token; robot data only, with instruction augmentation (MetaWorld: no paraphrases)
  expert = action_expert.VARIANTS["gemma_300m" if opts.variant == "full" else "tiny"]
  c.model.dual_encoder = False
  c.model.head = "flow"  # the action head (genvla_jax/heads); tokenizer.action="flow": no action tokens
  c.model.action_expert.update(width=expert["width"], mlp_dim=expert["mlp_dim"], use_state=True)
  c.tokenizer.action = "flow"
  c.tokenizer.action_horizon = opts.horizon or (50 if opts.variant == "full" else 4)
  c.data.robot_fraction = 1.0
  c.data.instruction_aug.prob = 0.0 if opts.variant == "metaworld" else 0.5
  c.lock()
  return c
