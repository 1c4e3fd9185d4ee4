r"""Does a VLM look? VQA exact match with the real images, a grey image and another question's image.

  python benchmarks/vlm_looks.py --workdir=RUN --annotations=~/.cache/genvla_jax/vl_corpus_v2/train.json \
      [--images=DIR] [--families=colour,presence] [--limit=400] [--last]

A model that answers from the question alone scores the same in the three columns; the gap real - grey is
what the image adds. --last takes the last --limit entries (e.g. training questions the run has seen).
"""

import os

from absl import app, flags
import numpy as np

from genvla_jax.data import preprocess
from genvla_jax.eval import vqa
from genvla_jax.inference import policy as policy_lib

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "run directory", required=True)
flags.DEFINE_integer("step", None, "checkpoint step (default: newest)")
flags.DEFINE_string("annotations", None, "LLaVA JSON (data/vl_corpus.py layout)", required=True)
flags.DEFINE_string("images", "", "image folder (default: the annotations' folder)")
flags.DEFINE_list("families", [], "question families to keep (default: all)")
flags.DEFINE_integer("limit", 400, "questions")
flags.DEFINE_bool("last", False, "take the last --limit questions instead of the first")


def answers(answerer, items, mode: str, size: int) -> list[str]:
  """mode: real | grey | shuffled (each question with the image of another, fixed permutation)."""
  perm = np.random.default_rng(0).permutation(len(items))
  out = []
  for s in range(0, len(items), 16):
    chunk = range(s, min(s + 16, len(items)))
    if mode == "grey":
      images = [np.full((size, size, 3), 128, np.uint8) for _ in chunk]
    else:
      source = [items[perm[i]] if mode == "shuffled" else items[i] for i in chunk]
      images = [preprocess.decode_image(open(it.image_path, "rb").read()) for it in source]
    out += answerer.answer(images, [items[i].question for i in chunk])
  return out


def main(argv):
  del argv
  items = vqa.load("llava", os.path.expanduser(FLAGS.annotations), os.path.expanduser(FLAGS.images))
  if FLAGS.families:
    items = [it for it in items if it.family in FLAGS.families]
  items = items[-FLAGS.limit :] if FLAGS.last else items[: FLAGS.limit]
  policy = policy_lib.Policy.from_workdir(FLAGS.workdir, FLAGS.step)
  answerer = vqa.Answerer(policy, max_answer_len=24)
  rows = {
    mode: vqa.corpus_scores(answers(answerer, items, mode, policy.config.model.image_size), items)
    for mode in ("real", "grey", "shuffled")
  }
  families = sorted(rows["real"]["families"])
  print(f"{len(items)} questions, {FLAGS.workdir} step {policy.step}")
  print("| images | all | " + " | ".join(families) + " |")
  print("|---" * (len(families) + 2) + "|")
  for mode, r in rows.items():
    cells = [f"{r['families'][f]['exact_match']:.1%}" for f in families]
    print(f"| {mode} | {r['exact_match']:.1%} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
  app.run(main)
