r"""Scripted-expert demonstrations of the tabletop benchmark, written in the published RLDS layout (by
TFDS itself, ArrayRecord files) so that the data pipeline reads them like any OXE dataset; plus a small
LLaVA-JSON vision-language set about the same scenes and a SentencePiece tokenizer.

  python -m genvla_jax.eval.record --out=DIR [--train_episodes=400 --val_episodes=40 --image_size=64]

Layout under DIR: rlds/tabletop/1.0.0 (splits train, val), vl/{train,val}.json + images/, tokenizer.model,
DONE.json. Training episodes use seeds from TRAIN_SEED_OFFSET up (evaluation uses seeds from 0: never
the same scenes), the visual-matching appearance and the training wordings; tasks cycle through
tabletop.TASKS. Each RLDS step: observation {image [S,S,3] PNG, state [4]}, action [4] (the expert's
command at that observation), language_instruction, reward (1 on success), is_first / is_last /
is_terminal; episode_metadata {episode_id, task, seed}.
"""

import json
import os

from absl import app, flags
import numpy as np
from PIL import Image

from genvla_jax.data import demo, preprocess
from genvla_jax.eval.envs import tabletop
from genvla_jax.tokenizers import string_actions, text

TRAIN_SEED_OFFSET = 100_000
VAL_SEED_OFFSET = 200_000
RECORDER_VERSION = 1


def expert_episodes(num_episodes: int, seed_offset: int, image_size: int):
  """Yields (key, RLDS episode) of expert rollouts (failed rollouts are an error: the expert is exact)."""
  env = tabletop.TabletopEnv(image_size)
  try:
    for e in range(num_episodes):
      task, seed = tabletop.TASKS[e % len(tabletop.TASKS)], seed_offset + e
      obs = env.reset(task, seed, "visual_matching")
      expert = tabletop.Expert(env)
      steps, done = [], False
      while not done:
        action = expert.act()
        step = {"observation": {"image": Image.fromarray(obs["image"]), "state": obs["state"]},
                "action": action, "language_instruction": obs["instruction"], "discount": 1.0}
        obs, success, done = env.step(action)
        steps.append(dict(step, reward=float(success), is_first=not steps, is_last=done, is_terminal=success))
      if not env.episode.success:
        raise RuntimeError(f"the expert failed {env.episode}")
      yield f"episode_{e}", {"steps": steps, "episode_metadata": {"episode_id": e, "task": task, "seed": seed}}
  finally:
    env.close()


def vl_examples(num_images: int, seed_offset: int, image_size: int):
  """(image, question, answer) about tabletop scenes: which cubes are there, how many, is the drawer open."""
  env = tabletop.TabletopEnv(image_size)
  rng = np.random.default_rng(seed_offset)
  try:
    for i in range(num_images):
      task = tabletop.TASKS[i % len(tabletop.TASKS)]
      env.reset(task, seed_offset + i, "visual_matching")
      image = env.render()
      present = [c for c in tabletop.COLORS if abs(env.cube(c)[0]) < 1]
      kind = i % 3
      if kind == 0:
        colour = str(rng.choice(sorted(tabletop.COLORS)))
        yield image, f"is there a {colour} cube on the table?", "yes" if colour in present else "no"
      elif kind == 1:
        yield image, "how many cubes are on the table?", str(len(present))
      else:
        yield image, "is the drawer open?", "yes" if env.drawer > 0.05 else "no"
  finally:
    env.close()


def _write_vl(out_dir, split, num_images, seed_offset, image_size):
  os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
  entries = []
  for i, (image, question, answer) in enumerate(vl_examples(num_images, seed_offset, image_size)):
    rel = f"images/{split}_{i:05d}.png"
    Image.fromarray(image).save(os.path.join(out_dir, rel))
    entries.append({"id": f"{split}_{i}", "image": rel, "conversations": [
        {"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]})
  with open(os.path.join(out_dir, f"{split}.json"), "w") as f:
    json.dump(entries, f)


def _tokenizer_corpus():
  """Every wording (training and held-out: the tokenizer stands for a pretrained one that knows the
  words; the policy never trains on the held-out ones), VL questions, action strings."""
  corpus = []
  for train, held_out in tabletop.INSTRUCTIONS.values():
    for wording in train + held_out:
      for a in tabletop.COLORS:
        for b in tabletop.COLORS:
          corpus += [preprocess.robot_prompt(demo.DEFAULT_PROMPT, wording.format(a=a, b=b))] * 3
  for c in tabletop.COLORS:
    corpus += [f"is there a {c} cube on the table?"] * 10
  corpus += ["how many cubes are on the table?", "is the drawer open?", "yes", "no", "2", "3"] * 10
  rng = np.random.default_rng(0)
  codec = string_actions.StringActionCodec(horizon=2, dim=tabletop.ACTION_DIM)
  corpus += [codec.format(rng.uniform(-1, 1, (2, tabletop.ACTION_DIM)))[0] for _ in range(200)]
  return corpus


def _write_rlds(root, train_episodes, val_episodes, image_size):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class Tabletop(tfds.core.GeneratorBasedBuilder):
    """Scripted-expert episodes of the genvla tabletop benchmark (genvla_jax/eval/envs/tabletop.py)."""
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      step = {
          "observation": {"image": tfds.features.Image(shape=(image_size, image_size, 3), encoding_format="png"),
                          "state": tfds.features.Tensor(shape=(tabletop.STATE_DIM,), dtype=np.float32)},
          "action": tfds.features.Tensor(shape=(tabletop.ACTION_DIM,), dtype=np.float32),
          "language_instruction": tfds.features.Text(),
          "reward": tfds.features.Scalar(dtype=np.float32),
          "discount": tfds.features.Scalar(dtype=np.float32),
          "is_first": np.bool_, "is_last": np.bool_, "is_terminal": np.bool_}
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "steps": tfds.features.Dataset(step),
          "episode_metadata": {"episode_id": np.int64, "task": tfds.features.Text(), "seed": np.int64}}))

    def _split_generators(self, dl_manager):
      return {"train": expert_episodes(train_episodes, TRAIN_SEED_OFFSET, image_size),
              "val": expert_episodes(val_episodes, VAL_SEED_OFFSET, image_size)}

    def _generate_examples(self):
      raise NotImplementedError  # splits come from _split_generators

  tfds.disable_progress_bar()
  builder = Tabletop(data_dir=root, file_format="array_record")
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(verify_ssl=False))
  return builder.data_dir


def ensure(out_dir: str, train_episodes: int = 400, val_episodes: int = 40, vl_train: int = 400,
           vl_val: int = 40, image_size: int = 64, vocab_size: int = 384) -> str:
  """Records everything under `out_dir` unless a complete recording with the same settings is there."""
  out_dir = os.path.abspath(os.path.expanduser(out_dir))
  settings = dict(version=RECORDER_VERSION, train_episodes=train_episodes, val_episodes=val_episodes,
                  vl_train=vl_train, vl_val=vl_val, image_size=image_size, vocab_size=vocab_size)
  done = os.path.join(out_dir, "DONE.json")
  if os.path.exists(done):
    with open(done) as f:
      if json.load(f) == settings:
        return out_dir
    raise ValueError(f"{out_dir} holds a tabletop recording with other settings; use another directory")
  os.makedirs(out_dir, exist_ok=True)
  print(f"recording tabletop expert demonstrations in {out_dir} ({train_episodes} + {val_episodes} episodes)",
        flush=True)
  _write_rlds(os.path.join(out_dir, "rlds"), train_episodes, val_episodes, image_size)
  _write_vl(os.path.join(out_dir, "vl"), "train", vl_train, TRAIN_SEED_OFFSET, image_size)
  _write_vl(os.path.join(out_dir, "vl"), "val", vl_val, VAL_SEED_OFFSET, image_size)
  text.train_sentencepiece(_tokenizer_corpus(), os.path.join(out_dir, "tokenizer.model"), vocab_size)
  with open(done, "w") as f:
    json.dump(settings, f)
  return out_dir


FLAGS = flags.FLAGS


def main(argv):
  del argv
  ensure(FLAGS.out, FLAGS.train_episodes, FLAGS.val_episodes, image_size=FLAGS.image_size)


if __name__ == "__main__":
  flags.DEFINE_string("out", None, "output directory", required=True)
  flags.DEFINE_integer("train_episodes", 400, "training episodes (tasks cycle)")
  flags.DEFINE_integer("val_episodes", 40, "validation episodes")
  flags.DEFINE_integer("image_size", 64, "rendered image side")
  app.run(main)
