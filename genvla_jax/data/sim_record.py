r"""Scripted-expert demonstrations of a simulated benchmark (the MuJoCo tabletop, or MetaWorld MT10),
written in the published RLDS layout (by TFDS itself, ArrayRecord files) so that the data pipeline reads
them like any OXE dataset; plus (tabletop) a small LLaVA-JSON vision-language set about the same scenes,
and a SentencePiece tokenizer.

  python -m genvla_jax.data.sim_record --env=tabletop|metaworld --out=DIR [--train_episodes=400 --val_episodes=40]
      [--cameras=image,wrist_image]      # tabletop: the front camera + one on the gripper (dataset tabletop_wrist)

Layout under DIR: rlds/<dataset_name(env, cameras)>/1.0.0 (splits train, val), vl/{train,val}.json + images/
(tabletop), paraphrases.json (training-time instruction augmentation, tabletop), tokenizer.model,
DONE.json (settings + how many expert rollouts failed and were left out).
Training episodes use seeds from TRAIN_SEED_OFFSET up (evaluation uses seeds from 0: never the same
scenes), the visual-matching appearance and the training wordings; tasks cycle through the env's
TASKS. Each RLDS step: observation {image [S,S,3] PNG (and one more PNG per further camera, e.g.
wrist_image), state [STATE_DIM]}, action [ACTION_DIM] (the
expert's command at that observation), language_instruction, reward (1 on success), is_first /
is_last / is_terminal; episode_metadata {episode_id, task, seed}.

The simulators themselves (eval/envs/) sit below data in the layering (they import nothing else of
genvla_jax); this module is the data side of them, used by prepare.py for `data.sim_dir`.
"""

import json
import os

from absl import flags
import numpy as np
from PIL import Image

from genvla_jax import cli, progress
from genvla_jax.data import demo, instruction_aug, preprocess, rlds_writer
from genvla_jax.eval import envs as envs_lib
from genvla_jax.tokenizers import string_actions, text

TRAIN_SEED_OFFSET = 100_000
VAL_SEED_OFFSET = 200_000
RECORDER_VERSION = 3
DATASET_NAMES = {"tabletop": "tabletop", "metaworld": "metaworld_mt10"}  # data/registry.py entries
ONE_CAMERA = ("image",)
# the recordings with more cameras than the env's "image" and their registry entries: (env, cameras) -> name
CAMERA_DATASETS = {("tabletop", ("image", "wrist_image")): "tabletop_wrist"}


def dataset_name(env: str, cameras=ONE_CAMERA) -> str:
  """The registry entry (and RLDS dataset name) of `env`'s recording with `cameras` (observation names)."""
  cameras = tuple(cameras)
  if cameras == ONE_CAMERA:
    return DATASET_NAMES[env]
  if (env, cameras) not in CAMERA_DATASETS:
    known = [list(c) for e, c in CAMERA_DATASETS if e == env]
    raise ValueError(f"{env} records no camera set {list(cameras)}; recordable: {[list(ONE_CAMERA)] + known}")
  return CAMERA_DATASETS[(env, cameras)]


def expert_episodes(
  env_name: str,
  num_episodes: int,
  seed_offset: int,
  image_size: int,
  failures: list,
  execution_noise: float = 0.0,
  cameras=ONE_CAMERA,
):
  """Yields (key, RLDS episode) of successful expert rollouts; a failed rollout (MetaWorld's scripted
  policies miss now and then; the tabletop expert does not) is left out and appended to `failures`.
  `execution_noise` > 0: the executed action is the expert's plus Gaussian noise of
  `execution_noise` x the env's EXECUTION_NOISE_STD (seeded per episode); the recorded action stays the
  expert's command, so the demonstrations show recoveries from perturbed states. `cameras`: the observation's
  cameras, each stored as `observation/<camera>`."""
  module = envs_lib.module(env_name)
  noise_std = np.float32(0.0)
  if execution_noise:
    if not hasattr(module, "EXECUTION_NOISE_STD"):
      raise ValueError(f"{env_name} defines no EXECUTION_NOISE_STD; record it with execution_noise=0")
    noise_std = execution_noise * np.asarray(module.EXECUTION_NOISE_STD, np.float32)
  cameras = tuple(cameras)
  env = envs_lib.make(env_name, image_size=image_size, **({} if cameras == ONE_CAMERA else {"cameras": cameras}))
  shown = progress.Progress(f"recording {env_name} (seeds from {seed_offset})", num_episodes, "episodes")
  try:
    e = attempt = 0
    while e < num_episodes:
      if attempt >= 2 * num_episodes + 10:
        raise RuntimeError(f"the {env_name} expert failed {len(failures)} of {attempt} rollouts: {failures[-3:]}")
      task, seed = module.TASKS[e % len(module.TASKS)], seed_offset + attempt
      attempt += 1
      obs = env.reset(task, seed, "visual_matching")
      expert = module.Expert(env)
      noise_rng = np.random.default_rng([seed, 7])
      steps, done = [], False
      while not done:
        action = expert.act()
        step = {
          "observation": {**_frames(obs["image"], cameras), "state": obs["state"]},
          "action": action,
          "language_instruction": obs["instruction"],
          "discount": 1.0,
        }
        executed = action + noise_rng.normal(0.0, 1.0, action.shape).astype(np.float32) * noise_std
        obs, success, done = env.step(executed)
        steps.append(dict(step, reward=float(success), is_first=not steps, is_last=done, is_terminal=success))
      if not env.episode.success:
        failures.append({"task": task, "seed": seed})
        continue
      yield f"episode_{e}", {"steps": steps, "episode_metadata": {"episode_id": e, "task": task, "seed": seed}}
      e += 1
      shown.update(e)
  finally:
    env.close()


def _frames(image, cameras) -> dict:
  """An observation's image ([S,S,3], or [C,S,S,3] for several cameras) -> {camera: PIL image}."""
  frames = [image] if len(cameras) == 1 else list(image)
  return {c: Image.fromarray(f) for c, f in zip(cameras, frames, strict=True)}


def _write_vl(env_name, out_dir, split, num_images, seed_offset, image_size):
  module = envs_lib.module(env_name)
  env = envs_lib.make(env_name, image_size=image_size)
  rng = np.random.default_rng(seed_offset)
  os.makedirs(os.path.join(out_dir, "images"), exist_ok=True)
  entries = []
  try:
    examples = []
    for i in range(num_images):
      env.reset(module.TASKS[i % len(module.TASKS)], seed_offset + i, "visual_matching")
      examples.append((env.render(), *module.scene_question(env, rng, i)))
  finally:
    env.close()
  for i, (image, question, answer) in enumerate(examples):
    rel = f"images/{split}_{i:05d}.png"
    Image.fromarray(image).save(os.path.join(out_dir, rel))
    entries.append(
      {
        "id": f"{split}_{i}",
        "image": rel,
        "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}],
      }
    )
  with open(os.path.join(out_dir, f"{split}.json"), "w") as f:
    json.dump(entries, f)


def tokenizer_corpus(env_name):
  """Every wording (training and held-out: the tokenizer stands for a pretrained one that knows the
  words; the policy never trains on the held-out ones), VL questions, action strings."""
  module = envs_lib.module(env_name)
  names = list(getattr(module, "COLORS", [""]))
  corpus = []
  for train, held_out in module.INSTRUCTIONS.values():
    for wording in train + held_out:
      for a in names:
        for b in names:
          corpus += [preprocess.robot_prompt(demo.DEFAULT_PROMPT, wording.format(a=a, b=b))] * 3
  corpus += list(getattr(module, "QUESTION_CORPUS", ())) * 10
  rng = np.random.default_rng(0)
  corpus += [f"State: {preprocess.state_text(rng.uniform(-1, 1, module.STATE_DIM))}" for _ in range(200)]
  codec = string_actions.StringActionCodec(horizon=2, dim=module.ACTION_DIM)
  corpus += [codec.format(rng.uniform(-1, 1, (2, module.ACTION_DIM)))[0] for _ in range(200)]
  return corpus


def _write_paraphrases(env_name, out_dir):
  """paraphrases.json (instruction augmentation) for environments with TRAIN_PARAPHRASES: every
  training wording of a task -> the task's training paraphrases (never the held-out ones)."""
  module = envs_lib.module(env_name)
  if not hasattr(module, "TRAIN_PARAPHRASES"):
    return
  templates = {
    w: module.TRAIN_PARAPHRASES[task] for task, (wordings, _) in module.INSTRUCTIONS.items() for w in wordings
  }
  names = list(module.COLORS)
  instruction_aug.ensure_table(
    os.path.join(out_dir, "paraphrases.json"), instruction_aug.expand(templates, a=names, b=names)
  )


def _write_rlds(env_name, root, train_episodes, val_episodes, image_size, failures, execution_noise, cameras):
  import tensorflow_datasets as tfds

  module, f = envs_lib.module(env_name), tfds.features
  step = rlds_writer.simple_step_features(image_size, module.STATE_DIM, module.ACTION_DIM, cameras)
  return rlds_writer.write_rlds(
    root,
    dataset_name(env_name, cameras),
    step,
    {
      "train": expert_episodes(
        env_name, train_episodes, TRAIN_SEED_OFFSET, image_size, failures, execution_noise, cameras
      ),
      "val": expert_episodes(env_name, val_episodes, VAL_SEED_OFFSET, image_size, failures, cameras=cameras),
    },
    metadata_features={"episode_id": np.int64, "task": f.Text(), "seed": np.int64},
  )


def ensure(
  out_dir: str,
  env: str = "tabletop",
  train_episodes: int = 400,
  val_episodes: int = 40,
  vl_train: int = 400,
  vl_val: int = 40,
  image_size: int = 64,
  vocab_size: int = 384,
  execution_noise: float = 0.0,
  cameras=ONE_CAMERA,
) -> str:
  """Records everything under `out_dir` unless a complete recording with the same settings is there.
  `cameras`: the observation's cameras (the RLDS dataset is `dataset_name(env, cameras)`).
  VL examples are made only for environments that can ask questions about their scenes
  (`scene_question`: the tabletop). `execution_noise` perturbs the training episodes' executed actions
  (expert_episodes); validation episodes are always clean expert rollouts."""
  if env not in DATASET_NAMES:
    raise ValueError(f"unknown environment {env!r}; recordable: {sorted(DATASET_NAMES)}")
  out_dir = os.path.abspath(os.path.expanduser(out_dir))
  settings = dict(
    version=RECORDER_VERSION,
    env=env,
    train_episodes=train_episodes,
    val_episodes=val_episodes,
    vl_train=vl_train,
    vl_val=vl_val,
    image_size=image_size,
    vocab_size=vocab_size,
    execution_noise=execution_noise,
  )
  cameras = tuple(cameras)
  dataset_name(env, cameras)  # a camera set the env cannot record fails here, before any work
  if cameras != ONE_CAMERA:  # (one camera: the settings of recordings made before cameras existed)
    settings["cameras"] = list(cameras)
  done = os.path.join(out_dir, "DONE.json")
  if os.path.exists(done):
    with open(done) as f:
      recorded = json.load(f)["settings"]
    if recorded == settings:
      _write_paraphrases(env, out_dir)
      return out_dir
    keys = sorted(set(recorded) | set(settings))
    diffs = [f"{k} {recorded.get(k)!r} (asked {settings.get(k)!r})" for k in keys if recorded.get(k) != settings.get(k)]
    raise ValueError(f"{out_dir} holds a recording with other settings: {'; '.join(diffs)}; use another directory")
  os.makedirs(out_dir, exist_ok=True)
  print(f"recording {env} expert demonstrations in {out_dir} ({train_episodes} + {val_episodes} episodes)", flush=True)
  failures = []
  _write_rlds(
    env, os.path.join(out_dir, "rlds"), train_episodes, val_episodes, image_size, failures, execution_noise, cameras
  )
  if hasattr(envs_lib.module(env), "scene_question"):
    _write_vl(env, os.path.join(out_dir, "vl"), "train", vl_train, TRAIN_SEED_OFFSET, image_size)
    _write_vl(env, os.path.join(out_dir, "vl"), "val", vl_val, VAL_SEED_OFFSET, image_size)
  text.train_sentencepiece(tokenizer_corpus(env), os.path.join(out_dir, "tokenizer.model"), vocab_size)
  _write_paraphrases(env, out_dir)
  with open(done, "w") as f:
    json.dump({"settings": settings, "failed_expert_rollouts_left_out": failures}, f, indent=1)
  return out_dir


FLAGS = flags.FLAGS


def main(argv):
  del argv
  ensure(
    FLAGS.out,
    FLAGS.env,
    FLAGS.train_episodes,
    FLAGS.val_episodes,
    image_size=FLAGS.image_size,
    execution_noise=FLAGS.execution_noise,
    cameras=FLAGS.cameras,
  )


if __name__ == "__main__":
  flags.DEFINE_string("out", None, "output directory", required=True)
  flags.DEFINE_enum("env", "tabletop", sorted(DATASET_NAMES), "which simulated benchmark")
  flags.DEFINE_integer("train_episodes", 400, "training episodes (tasks cycle)")
  flags.DEFINE_integer("val_episodes", 40, "validation episodes")
  flags.DEFINE_integer("image_size", 64, "rendered image side")
  flags.DEFINE_list("cameras", list(ONE_CAMERA), "the observation's cameras (tabletop: image,wrist_image)")
  flags.DEFINE_float("execution_noise", 0.0, "noise on executed training actions, x the env's EXECUTION_NOISE_STD")
  cli.run(main)
