r"""Parameter counts of the full-size models, from `jax.eval_shape` (nothing is allocated).

python -m genvla_jax.tools.param_count            # every PaliGemma backbone, single and dual tower
python -m genvla_jax.tools.param_count --config=configs/pi0_plus.py:full,backbone=paligemma2_448
python -m genvla_jax.tools.param_count --config=configs/pi0_baseline.py   # π0 (7-D actions, 8-D state)
"""

from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from genvla_jax import cli, config_lib
from genvla_jax.models import build, prefix_lm, surgery

FLAGS = flags.FLAGS


def count(model: prefix_lm.PrefixLM, image_size: int) -> dict[str, int]:
  """-> parameters per top-level part (img, img_frozen, projector, llm, expert) and "total"."""
  shapes = jax.eval_shape(lambda: surgery.init_params(model, jax.random.PRNGKey(0), image_size))
  parts = {k: int(sum(np.prod(x.shape) for x in jax.tree.leaves(v))) for k, v in shapes.items()}
  return dict(parts, total=sum(parts.values()))


def backbone_model(name: str, dual_encoder: bool = False) -> tuple[prefix_lm.PrefixLM, int]:
  img, llm, image_size = config_lib.BACKBONES[name]
  return build.vla(img, llm, dual="copy" if dual_encoder else None), image_size


def table() -> list[str]:
  rows = [f"{'backbone':<16} {'towers':<7} {'vision':>8} {'projector':>9} {'llm':>8} {'total':>8}"]
  for name in config_lib.BACKBONES:
    for dual in (False, True):
      c = count(*backbone_model(name, dual))
      vision = c["img"] + c.get("img_frozen", 0)
      rows.append(
        f"{name:<16} {'dual' if dual else 'single':<7} {vision / 1e9:>7.3f}B "
        f"{c['projector'] / 1e9:>8.4f}B {c['llm'] / 1e9:>7.3f}B {c['total'] / 1e9:>7.3f}B"
      )
  return rows


def main(argv):
  del argv
  if FLAGS.config is None:
    print("\n".join(table()))
    return
  expert = FLAGS.config.model.action_expert
  if expert.width and not expert.action_dim:  # resolved from the data at training time; RT-1 sizes here
    expert.action_dim, expert.state_dim = 7, 8
  model = build.from_config(FLAGS.config.model)
  c = count(model, FLAGS.config.model.image_size)
  print("\n".join(f"{k:<12} {v:>14,d}" for k, v in c.items()))


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", None, "config file; without it, every PaliGemma backbone")
  cli.run(main)
