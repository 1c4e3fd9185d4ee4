r"""The embedded demo (launch/demo.sh, the README's first command): π0+ (D + S + C) on the MuJoCo tabletop benchmark,
fine-tuned from the project's small pretrained VLM (shipped in the package: config_lib.VLM_DIR) with the front
camera and the camera on the gripper, batch 16 for 5000 steps.

  python -m genvla_jax.train --config=configs/demo_tabletop.py --workdir=DIR
  python -m genvla_jax.eval --config=configs/eval_tabletop.py:quick --workdir=DIR

It is configs/pi0_plus.py:tabletop,vlm=pretrained,cameras=image+wrist_image with a schedule that fits the demo's ~35
minutes on 2 CPU cores (benchmarks/RESULTS.md, "The demo's schedule"): batch 16 costs 0.30 s a step against 0.70 s
at batch 32 (0.26 s since the tiny model's layers are unrolled: "Unrolled layers"), so 5000 steps train in ~22-25
minutes. Measured on 50 episodes per task (visual matching): 56% [50, 63],
every task type solved sometimes (pick 20%, move near 12%, drawers 96-98%). The >= 60% target needs about twice the
examples: batch 32 for 6000 steps reached 62% [55, 68] in ~70 minutes; batch 16 for 7000 steps (~30 minutes)
58% [52, 65]. Options after the file name are pi0_plus.py's
(e.g. `ablation=DS`).
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location("pi0_plus", os.path.join(os.path.dirname(__file__), "pi0_plus.py"))
_pi0_plus = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pi0_plus)

BASE = "tabletop,vlm=pretrained,cameras=image+wrist_image"


def get_config(arg=None):
  config = _pi0_plus.get_config(BASE + (f",{arg}" if arg else ""))
  with config.unlocked():
    config.data.batch_size = 16
    config.train.update(steps=5000, checkpoint_every=500, keep_checkpoints=2)
  return config
