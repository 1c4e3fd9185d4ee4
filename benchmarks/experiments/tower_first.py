r"""Experiment (issue 20, VLM diagnosis): does the prefix-LM learn to look once the tower has features?

Stage 1: the tiny tower alone learns the cube's colour (4 classes, mean-pooled features + a linear head, 400
Adam steps at batch 64) on `vl_corpus.probe_set` images under the wide condition pool. Stage 2: those tower
weights in an otherwise random VLM, exported as an HF start (`--out`), for a colour-only prefix-LM run:

  python benchmarks/experiments/tower_first.py --out=/tmp/vlm_tower_first
  python -m genvla_jax.train --config=configs/pretrain_vlm.py --workdir=/tmp/colour_tf \
      --config.pretrained.format=hf --config.pretrained.path=/tmp/vlm_tower_first \
      --set='data.vl=[{"name": "colour", "path": "colour_only.json", "format": "llava_json", "weight": 1.0}]' \
      --config.train.steps=400
  python benchmarks/vlm_looks.py --workdir=/tmp/colour_tf --annotations=COLOUR_SAMPLE.json --families=colour
(colour_only.json: the colour and presence entries of the corpus' train.json.) A diagnostic, not a recipe.
"""

import os

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import pretrain_vlm
from genvla_jax.data import vl_corpus
from genvla_jax.eval import representation
from genvla_jax.models import build, pixels, surgery, vit
from genvla_jax.pretrained import hf
from genvla_jax.tools import export_hf

FLAGS = flags.FLAGS
flags.DEFINE_string("out", "/tmp/vlm_tower_first", "HF directory of the VLM start")
flags.DEFINE_integer("steps", 400, "tower training steps")


def main(argv):
  del argv
  c = pretrain_vlm.get_config()
  data = vl_corpus.probe_set("/tmp/probe_train_wide", "wide", 600, c.model.image_size, seed=7)
  x, y, _ = representation.load_folder(data, "train", size=c.model.image_size)
  x_test, y_test, _ = representation.load_folder(data, "test", size=c.model.image_size)
  params = surgery.init_params(build.from_config(c.model), jax.random.PRNGKey(0), c.model.image_size)
  tower = vit.ViT(**c.model.img)
  head = jax.random.normal(jax.random.PRNGKey(1), (c.model.img.width, 4)) * 0.01

  def logits(tower_params, head, images):
    return jnp.mean(tower.apply({"params": tower_params}, pixels.to_unit_range(images)), axis=1) @ head

  def loss(both, images, labels):
    return optax.softmax_cross_entropy_with_integer_labels(logits(*both, images), labels).mean()

  tx = optax.adam(1e-3)
  both = (params["img"], head)
  state = tx.init(both)

  @jax.jit
  def step(both, state, images, labels):
    value, grads = jax.value_and_grad(loss)(both, images, labels)
    updates, state = tx.update(grads, state, both)
    return optax.apply_updates(both, updates), state, value

  rng = np.random.default_rng(0)
  for i in range(FLAGS.steps):
    idx = rng.integers(0, len(y), 64)
    both, state, value = step(both, state, x[idx], y[idx])
    if i % 100 == 0:
      print(f"tower step {i}: loss {float(value):.3f}", flush=True)
  accuracy = float(np.mean(np.argmax(np.asarray(jax.jit(logits)(*both, x_test)), -1) == y_test))
  print(f"tower colour accuracy on held-out images of the wide pool: {accuracy:.1%}", flush=True)
  params["img"] = both[0]
  os.makedirs(FLAGS.out, exist_ok=True)
  hf.export(jax.tree.map(np.asarray, params), c.model, FLAGS.out)
  export_hf.write_tokenizer(os.path.expanduser(c.tokenizer.path), FLAGS.out)
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  app.run(main)
