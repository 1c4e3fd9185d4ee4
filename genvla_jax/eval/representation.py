r"""Representation quality of the image towers: linear-probe accuracy, t-SNE plots, and CKA between the
trained tower and the frozen one (the dual encoder's point is that the frozen copy keeps the
pretrained features while the trained copy adapts).

  python -m genvla_jax.eval.representation --workdir=RUN --data=/data/cifar-10-batches-py [--out=DIR]
  python -m genvla_jax.eval.representation --workdir=RUN --data=/data/my_labelled_folder --limit=2000
      [--pretrained_path=/weights/paligemma-3b-pt-224 --pretrained_format=hf]   # + the released tower

Data: CIFAR-10 as published (python pickles `data_batch_1..5`, `test_batch`, `batches.meta`) or any
folder with one sub-folder of images per class (80% train / 20% test by file order). Features: the
tower's output tokens [N_patches, D] averaged over patches (images resized as in training). Probe:
multinomial logistic regression (scikit-learn, features standardized) fit on the train split, accuracy
on the test split. CKA: linear CKA of the two towers' features on the test images (1 = the same up to
rotation and scale). t-SNE (scikit-learn) of the test features, one PNG per tower, coloured by class.

Also a drift monitor during training (`drift_monitor`): config.train.drift = {every, data, limit} logs
probe accuracy of each tower and CKA(trained, frozen) into metrics.jsonl (genvla_jax.train passes it to
training/trainer.py).
"""

import json
import os
import pickle

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from genvla_jax import cli
from genvla_jax.data import preprocess
from genvla_jax.models import pixels, vit
from genvla_jax.training import loop


def load_cifar10(directory: str, split: str, limit: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """-> (images uint8 [N,32,32,3], labels int [N], class names) from the published python pickles."""
  files = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
  images, labels = [], []
  for name in files:
    with open(os.path.join(directory, name), "rb") as f:
      batch = pickle.load(f, encoding="bytes")
    images.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    labels.append(np.asarray(batch[b"labels"], np.int64))
    if limit and sum(map(len, labels)) >= limit:
      break
  with open(os.path.join(directory, "batches.meta"), "rb") as f:
    names = [n.decode() for n in pickle.load(f, encoding="bytes")[b"label_names"]]
  images, labels = np.concatenate(images), np.concatenate(labels)
  return (images[:limit], labels[:limit], names) if limit else (images, labels, names)


def load_folder(directory: str, split: str, limit: int = 0, size: int = 64):
  """A folder of class sub-folders -> (images uint8 [N,size,size,3], labels, class names); the first 80%
  of each class's files (sorted) are train, the rest test."""
  names = sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)))
  images, labels = [], []
  for k, name in enumerate(names):
    files = sorted(os.listdir(os.path.join(directory, name)))
    cut = int(len(files) * 0.8)
    for f in files[:cut] if split == "train" else files[cut:]:
      with open(os.path.join(directory, name, f), "rb") as fh:
        images.append(preprocess.resize_image(preprocess.decode_image(fh.read()), size))
      labels.append(k)
  order = np.random.default_rng(0).permutation(len(labels))[: limit or None]
  return np.stack(images)[order], np.asarray(labels)[order], names


def load_labelled(data: str, split: str, limit: int = 0):
  if os.path.exists(os.path.join(data, "batches.meta")):
    return load_cifar10(data, split, limit)
  return load_folder(data, split, limit)


def make_feature_fn(model_config):
  """-> jitted fn(tower_params, images uint8 [B,H,W,3] at model size) -> mean-pooled features [B,D]."""
  tower = vit.ViT(**model_config.img, dtype="float32")

  @jax.jit
  def features(params, images):
    return jnp.mean(tower.apply({"params": params}, pixels.to_unit_range(images)), axis=1)

  return features


def tower_features(feature_fn, params, images, image_size: int, batch_size: int = 128) -> np.ndarray:
  out = []
  for start in range(0, len(images), batch_size):
    chunk = np.stack([preprocess.resize_image(im, image_size) for im in images[start : start + batch_size]])
    n = len(chunk)
    if n < batch_size:  # one shape: compile once
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, 0)])
    out.append(np.asarray(feature_fn(params, chunk), np.float32)[:n])
  return np.concatenate(out)


def linear_probe(train_x, train_y, test_x, test_y) -> float:
  from sklearn.linear_model import LogisticRegression
  from sklearn.pipeline import make_pipeline
  from sklearn.preprocessing import StandardScaler

  probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, C=1.0))
  probe.fit(train_x, train_y)
  return float(probe.score(test_x, test_y))


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
  """Linear CKA of [N,D1] and [N,D2] features: ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F), centred."""
  x = x - x.mean(0)
  y = y - y.mean(0)
  cross = np.linalg.norm(y.T @ x) ** 2
  return float(cross / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def tsne_plot(features, labels, names, path: str, title: str, seed: int = 0):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from sklearn.manifold import TSNE

  perplexity = float(min(30, max(2, (len(features) - 1) // 3)))
  xy = TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(features)
  fig, ax = plt.subplots(figsize=(4.5, 4.5))
  for k, name in enumerate(names):
    sel = labels == k
    ax.scatter(xy[sel, 0], xy[sel, 1], s=5, label=name)
  ax.set_title(title, fontsize=9)
  ax.set_xticks([])
  ax.set_yticks([])
  ax.legend(fontsize=6, markerscale=2)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def evaluate(params, model_config, data: str, limit: int = 2000, out_dir: str | None = None, feature_fn=None) -> dict:
  """params: a tree with tower entries "img" (trained), optionally "img_frozen" and "pretrained" (each a
  SigLIP param tree). -> {"probe": {tower: accuracy}, "cka_trained_vs_frozen": float | None}; t-SNE
  PNGs to out_dir."""
  train_x_img, train_y, names = load_labelled(data, "train", limit)
  test_x_img, test_y, _ = load_labelled(data, "test", max(limit // 4, 1) if limit else 0)
  feature_fn = feature_fn or make_feature_fn(model_config)
  towers = [t for t in ("pretrained", "img_frozen", "img") if t in params]
  result, test_features = {"probe": {}, "n_train": len(train_y), "n_test": len(test_y)}, {}
  for tower in towers:
    tr = tower_features(feature_fn, params[tower], train_x_img, model_config.image_size)
    te = tower_features(feature_fn, params[tower], test_x_img, model_config.image_size)
    result["probe"][tower] = linear_probe(tr, train_y, te, test_y)
    test_features[tower] = te
    if out_dir:
      os.makedirs(out_dir, exist_ok=True)
      tsne_plot(te, test_y, names, os.path.join(out_dir, f"tsne_{tower}.png"), f"{tower}: t-SNE of test features")
  result["cka_trained_vs_frozen"] = (
    linear_cka(test_features["img"], test_features["img_frozen"]) if "img_frozen" in test_features else None
  )
  return result


def drift_monitor(config) -> loop.Monitor | None:
  """The training drift monitor of config.train.drift (None when off): every `drift.every` steps, the
  linear-probe accuracy of each tower (`drift/probe_<tower>`) and CKA(trained, frozen)
  (`drift/cka_trained_vs_frozen`, dual encoders) on `drift.data`, at most `drift.limit` images."""
  drift = config.train.drift
  if not drift.every:
    return None
  feature_fn = make_feature_fn(config.model)

  def measure(params):
    result = evaluate(params, config.model, os.path.expanduser(drift.data), drift.limit, feature_fn=feature_fn)
    values = {f"drift/probe_{tower}": acc for tower, acc in result["probe"].items()}
    if result["cka_trained_vs_frozen"] is not None:
      values["drift/cka_trained_vs_frozen"] = result["cka_trained_vs_frozen"]
    return values

  return loop.Monitor("representation", drift.every, measure)


FLAGS = flags.FLAGS


def main(argv):
  del argv
  from genvla_jax.inference import policy as policy_lib

  workdir = cli.run_dir()
  policy = policy_lib.Policy.from_workdir(workdir, step=FLAGS.step)
  out = FLAGS.out or os.path.join(workdir, "representation")
  towers = {k: v for k, v in policy.params.items() if k in ("img", "img_frozen")}
  if FLAGS.pretrained_path:  # the tower the run started from, imported from the released checkpoint
    from genvla_jax.pretrained import api

    towers["pretrained"] = api.load(
      FLAGS.pretrained_format, FLAGS.pretrained_path, policy.model, policy.config.model.image_size
    )["img"]
  result = evaluate(towers, policy.config.model, FLAGS.data, FLAGS.limit, out)
  with open(os.path.join(out, "representation.json"), "w") as f:
    json.dump(result, f, indent=1)
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  cli.define_run_dir_flag("run directory")
  flags.DEFINE_integer("step", None, "checkpoint step (default: latest)")
  flags.DEFINE_string("data", None, "CIFAR-10 python directory or a class-per-folder image directory", required=True)
  flags.DEFINE_integer("limit", 2000, "training images for the probe (test: a quarter); 0 = all")
  flags.DEFINE_string("out", "", "output directory (default: RUN/representation)")
  flags.DEFINE_string("pretrained_path", "", "also probe the released checkpoint's tower (PaliGemma weights)")
  flags.DEFINE_enum("pretrained_format", "hf", ["hf", "big_vision"], "format of --pretrained_path")
  cli.run(main)
