r"""Stage 1 of the small VLM (configs/pretrain_tower.py): train the tower on the corpus' scenes
(training/tower_stage.py) and write the VLM start stage 2 loads: an HF PaliGemma directory holding the
trained tower, the projector and decoder freshly initialised (seed config.seed), and the corpus tokenizer.

  python -m genvla_jax.tools.pretrain_tower --config=configs/pretrain_tower.py [--config.stage.steps=N]

Reused when config.out holds a finished stage with the same config (DONE.json, written last, also holds
the held-out scores); a config change makes it train again into the same directory.
"""

import json
import os

from absl import flags
import jax
import numpy as np
from ml_collections import config_flags

from genvla_jax import cli
from genvla_jax.data import vl_corpus
from genvla_jax.models import build, surgery
from genvla_jax.pretrained import hf
from genvla_jax.tools import export_hf
from genvla_jax.training import tower_stage

FLAGS = flags.FLAGS


def run(config, printer=print) -> dict:
  """-> the DONE.json contents: {"config", "scores"}."""
  out = os.path.abspath(os.path.expanduser(config.out))
  done_path = os.path.join(out, "DONE.json")
  settings = json.loads(config.to_json())
  if os.path.exists(done_path):
    with open(done_path) as f:
      done = json.load(f)
    if done.get("config") == settings:
      printer(f"tower stage: reusing {out} (same config)", flush=True)
      return done
    os.remove(done_path)
  corpus_dir = vl_corpus.ensure(os.path.expanduser(config.corpus_dir), **config.corpus)
  model_config = config.model
  params = surgery.init_params(
    build.from_config(model_config), jax.random.PRNGKey(config.seed), config.model.image_size
  )
  tower, scores = tower_stage.train(params["img"], dict(config.model.img), config.stage, corpus_dir, printer)
  params["img"] = tower
  os.makedirs(out, exist_ok=True)
  hf.export(jax.tree.map(np.asarray, params), model_config, out)
  export_hf.write_tokenizer(os.path.join(corpus_dir, "tokenizer.model"), out)
  done = dict(config=settings, scores=scores)
  with open(done_path, "w") as f:  # last: marks the start complete
    json.dump(done, f, indent=1)
  printer(json.dumps(scores, indent=1), flush=True)
  printer(f"wrote {out}", flush=True)
  return done


def main(argv):
  del argv
  run(FLAGS.config)


if __name__ == "__main__":
  config_flags.DEFINE_config_file("config", "configs/pretrain_tower.py", "tower stage config", lock_config=True)
  cli.run(main)
