r"""pi0+ (the paper's recipe): PaliGemma-3B with the dual image encoder (D), string actions (S) and 50/50
co-training with vision-language data (C).

  python -m genvla_jax.train --config=configs/pi0_plus.py:demo --workdir=DIR     # tiny, CPU, embedded data
  python -m genvla_jax.train --workdir=DIR \
      --config=configs/pi0_plus.py:full,llava=/vl/llava,vqasynth=/vl/vqasynth,onevision=/vl/ov,robopoint=/vl/robopoint \
      --config.data.rlds_root=/data/oxe --config.tokenizer.path=/ckpt/paligemma_tokenizer.model \
      --config.pretrained.format=hf --config.pretrained.path=/ckpt/paligemma-3b-pt-224 \
      --config.pretrained.architecture=checkpoint ...

Arguments: variant `full` (default), `demo`, `tabletop` or `metaworld` (tiny model on the MuJoCo
tabletop benchmark's / MetaWorld MT10's expert demonstrations, evaluated closed-loop by
`python -m genvla_jax.eval`; metaworld has no VL data, so its C is off); option `ablation=<subset of DSC>`
switches D, S, C
(e.g. `demo,ablation=DS` = no co-training; `ablation=` = none of the three); option
`backbone=paligemma_224|paligemma_448|paligemma2_224|paligemma2_448` picks the full-size PaliGemma;
option `mixture=paper|bridge|fractal|droid|libero|droid_lerobot` picks the robot datasets (data/registry.py
MIXTURES; full, and `demo` with a converted LeRobot mixture: the tiny model on it, two cameras at 64 px, e.g.
`demo,mixture=libero,robot_dir=OUT,ablation=DS` for LIBERO on a CPU): `droid` is DROID 1.0.1 as published in
RLDS (data.rlds_root/droid/1.0.1) with its three cameras (exterior_image_1_left, exterior_image_2_left,
wrist_image_left: data.cameras, model.num_cameras=3, so 3 x 256 image tokens at 224 px); `libero` (agent view
+ wrist camera) and `droid_lerobot` (DROID's LeRobot release, joint-position actions) are LeRobot datasets you
convert first, then give the conversion's directory as `robot_dir=OUT`:
  python -m genvla_jax.data.convert_lerobot --dataset=libero --root=LIBERO_LEROBOT_DIR --out=OUT
  python -m genvla_jax.train --config=configs/pi0_plus.py:full,mixture=libero,robot_dir=OUT ...
(a mixture's cameras: data/registry.py MIXTURE_CAMERAS, applied by config_lib.robot_mixture);
option `cameras=image+wrist_image` (tabletop) adds the camera on the gripper to the front one ("image", the
default alone): demonstrations recorded with both (dataset tabletop_wrist), every example and the policy see both;
option `robot_view=N` (with `vlm=`): N questions about the robot's own view (which cube is where: presence,
colour, left/right, nearer, pointing, in the demonstrations' scenes and appearance; data/vl_corpus.py
robot_view_split) co-trained beside the VLM's corpus, a quarter of every batch each.
The full variant's VL corpora (C) are the paper's four, each given by its download folder as published
(full only; a corpus not given is left out; data/convert_vl.py PUBLISHED has each one's layout):
`llava=DIR` (LLaVA-CC3M-Pretrain-595K: chat.json + images/), `vqasynth=DIR` (VQASynth spatial VQA:
data/train-*.parquet), `onevision=DIR` (LLaVA-OneVision-Data: <subset>/train-*.parquet), `robopoint=DIR`
(robopoint_1432k.json + images/). Every batch is half robot, half VL data, the VL half split evenly among
the corpora given. Other VL entries: `--set=data.vl=[...]` (README, Configs).
"""

from genvla_jax import config_lib
from genvla_jax.models import gemma, vit


def get_config(arg=None):
  opts = config_lib.parse_arg(
    arg,
    variants=("full", "demo", "tabletop", "metaworld"),
    ablation="DSC",
    backbone="paligemma_224",
    mixture="paper",
    robot_dir="",  # a LeRobot mixture's finished convert_lerobot --out
    vlm="none",
    robot_view=0,  # with vlm=: questions about the robot's own view co-trained beside the corpus
    cameras="image",
    **config_lib.vl_corpus_options(),  # llava=DIR, vqasynth=DIR, onevision=DIR, robopoint=DIR
  )
  # every field's default (genvla_jax/config_schema.py) + SigLIP So400m/14 and Gemma (2) 2B at 224/448 px
  c = config_lib.base_config(opts.backbone)
  roots = {name: opts[name] for name in config_lib.vl_corpus_options()}
  if any(roots.values()) and opts.variant != "full":
    raise ValueError(f"the VL corpus options ({', '.join(roots)}) are for the full variant, not {opts.variant!r}")
  c.update_from_flattened_dict(config_lib.published_vl(roots))  # the paper's VL corpora given (none: {})
  if opts.variant == "demo":
    c.data.demo_dir = config_lib.DEMO_DIR  # generated there on first use
    c.update_from_flattened_dict(config_lib.demo_data(c.data.get_ref("demo_dir")))
    c.tokenizer.max_text_len = 40
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
    # (normalized, as text), as pi0-FAST does
    c.data.prompt = "What action should the robot take to {instruction}? State: {state}"
    c.tokenizer.max_text_len = 80  # ~22 prompt + ~20 state tokens + 4 x 7 action characters + EOS
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
  vlm = config_lib.vlm_start(opts.vlm, opts.variant, c.data.get_ref("corpus_dir"), opts.robot_view)
  c.update_from_flattened_dict(vlm)
  # after the variant's own data: paper = fractal (RT-1) + bridge (full); a mixture of several cameras also sets
  # data.cameras and model.num_cameras; `demo,mixture=libero,robot_dir=OUT`: the tiny model on a LeRobot conversion
  c.update_from_flattened_dict(config_lib.robot_mixture(opts.mixture, opts.robot_dir, opts.variant))
  c.update_from_flattened_dict(config_lib.ablation(opts.ablation))  # D, S, C: all three by default
  c.lock()
  return c
