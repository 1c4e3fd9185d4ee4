r"""OpenVLA+ (the paper's recipe on OpenVLA): configs/openvla.py with D (SigLIP frozen, DINOv2 trained;
`dual=copy` duplicates both towers instead), S (string actions) and C (50/50 co-training) on.

  python -m genvla_jax.train --config=configs/openvla_plus.py:demo --workdir=DIR      # tiny, CPU
  python -m genvla_jax.train --config=configs/openvla_plus.py --workdir=DIR ...         # 7B
"""

import importlib.util
import os

_spec = importlib.util.spec_from_file_location("openvla", os.path.join(os.path.dirname(__file__), "openvla.py"))
_openvla = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_openvla)


def get_config(arg=None):
  return _openvla.get_config(arg, default_ablation="DSC")
