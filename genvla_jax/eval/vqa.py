r"""VQA retention: does the policy still answer questions like the VLM it started from? Reads local copies
of the benchmarks in their published layouts and answers through the model's ordinary (unconstrained)
greedy decoding with the VL prompt layout of training (prefix = the question, PaliGemma style).

  python -m genvla_jax.eval.vqa --workdir=RUN --benchmark=textvqa \
      --annotations=TextVQA_0.5.1_val.json --images=train_images [--limit=500] [--prompt="answer en {question}"]

Benchmarks and layouts (`load(benchmark, annotations, images)` -> list of Item):
  textvqa  {"data": [{"question", "image_id", "answers": [10]}]}, images/<image_id>.jpg     VQA accuracy
  vizwiz   [{"image", "question", "answers": [{"answer", ...} x 10]}], images/<image>       VQA accuracy
  gqa      {qid: {"imageId", "question", "answer"}}, images/<imageId>.jpg                   exact match
  pope     JSON lines {"image", "text", "label": yes|no}, images/<image> (COCO val2014)     acc, P, R, F1
  vsr      JSON lines {"image", "caption", "label": 0|1}, images/<image>; asked as
           "Is it true that <caption>?"                                                   accuracy
  llava    LLaVA JSON [{"image", "conversations": [human, gpt], "family"?}] (our generated corpus,
           data/vl_corpus.py; images relative to --images, default the JSON's folder)   exact match, per
           family; pointing answers "(x, y)": mean distance and share within 0.1 (normalized image units)
"""

import dataclasses
import json
import os
import re
import sys

from absl import flags
import numpy as np

from genvla_jax import cli, progress
from genvla_jax.data import preprocess
from genvla_jax.eval import vqa_metrics
from genvla_jax.inference import decode
from genvla_jax.models import build

BENCHMARKS = ("textvqa", "vizwiz", "gqa", "pope", "vsr", "llava")
POINT_HIT_RADIUS = 0.1  # a pointing answer within this distance of the reference counts as a hit


@dataclasses.dataclass
class Item:
  image_path: str
  question: str
  answers: list[str]  # human answers (VQA accuracy), or the one reference answer
  family: str = ""  # question family (llava corpus entries that carry one)


def _jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def load(benchmark: str, annotations: str, images: str) -> list[Item]:
  if benchmark == "textvqa":
    data = json.load(open(annotations))["data"]
    return [Item(os.path.join(images, f"{d['image_id']}.jpg"), d["question"], list(d["answers"])) for d in data]
  if benchmark == "vizwiz":
    return [
      Item(os.path.join(images, d["image"]), d["question"], [a["answer"] for a in d["answers"]])
      for d in json.load(open(annotations))
    ]
  if benchmark == "gqa":
    return [
      Item(os.path.join(images, f"{d['imageId']}.jpg"), d["question"], [d["answer"]])
      for d in json.load(open(annotations)).values()
    ]
  if benchmark == "pope":
    return [Item(os.path.join(images, d["image"]), d["text"], [d["label"]]) for d in _jsonl(annotations)]
  if benchmark == "vsr":
    return [
      Item(
        os.path.join(images, d["image"]),
        f"Is it true that {d['caption'].rstrip('.')}?",
        ["yes" if int(d["label"]) else "no"],
      )
      for d in _jsonl(annotations)
    ]
  if benchmark == "llava":
    items = []
    for entry in json.load(open(annotations)):
      turns = entry["conversations"]
      question = turns[0]["value"].replace("<image>", "").strip()
      items.append(
        Item(
          os.path.join(images or os.path.dirname(annotations), entry["image"]),
          question,
          [turns[1]["value"]],
          entry.get("family", ""),
        )
      )
    return items
  raise ValueError(f"unknown benchmark {benchmark!r}; choose from {BENCHMARKS}")


def parse_point(text: str) -> tuple[float, float] | None:
  """'(0.42, 0.61)' -> (0.42, 0.61); None when the text is no point."""
  m = re.fullmatch(r"\(\s*([-+]?\d*\.?\d+)\s*,\s*([-+]?\d*\.?\d+)\s*\)", text.strip())
  return (float(m.group(1)), float(m.group(2))) if m else None


def corpus_scores(predictions: list[str], items: list[Item]) -> dict:
  """Exact match overall and per family; for answers that are points: mean distance (unparsable predictions
  count as distance 1.0, the counted `unparsable_points`) and the share within POINT_HIT_RADIUS."""
  match = np.array([vqa_metrics.exact_match(p, it.answers[0]) for p, it in zip(predictions, items)], float)
  out = {"exact_match": float(match.mean()) if len(match) else 0.0, "n": len(items), "families": {}}
  for family in sorted({it.family for it in items}):
    rows = [i for i, it in enumerate(items) if it.family == family]
    out["families"][family or "-"] = {"exact_match": float(match[rows].mean()), "n": len(rows)}
  distances, unparsable = [], 0
  for p, it in zip(predictions, items):
    reference = parse_point(it.answers[0])
    if reference is None:
      continue
    point = parse_point(p)
    unparsable += point is None
    distances.append(1.0 if point is None else float(np.hypot(point[0] - reference[0], point[1] - reference[1])))
  if distances:
    d = np.array(distances)
    out["pointing"] = dict(
      mean_distance=float(d.mean()),
      hit_rate=float((d <= POINT_HIT_RADIUS).mean()),
      n=len(d),
      unparsable_points=unparsable,
    )
  return out


def score(benchmark: str, predictions: list[str], items: list[Item]) -> dict:
  if benchmark == "llava":
    return corpus_scores(predictions, items)
  if benchmark in ("textvqa", "vizwiz"):
    values = [vqa_metrics.vqa_accuracy(p, it.answers) for p, it in zip(predictions, items)]
    return {"vqa_accuracy": float(np.mean(values)), "n": len(values)}
  if benchmark == "gqa":
    values = [vqa_metrics.exact_match(p, it.answers[0]) for p, it in zip(predictions, items)]
    return {"exact_match": float(np.mean(values)), "n": len(values)}
  scores = vqa_metrics.binary_scores(predictions, [it.answers[0] for it in items])
  return dict(scores, n=len(items)) if benchmark == "pope" else {"accuracy": scores["accuracy"], "n": len(items)}


class Answerer:
  """Free-text greedy answers from a trained run (inference.policy.Policy supplies params, tokenizer and
  its observation transform: `vqa_inputs`, training's VL example without the answer): the same decoding
  path as actions, without the action grammar."""

  def __init__(self, policy, max_answer_len: int = 16, prompt: str = "{question}"):
    self.policy, self.prompt = policy, prompt
    text = policy.text
    self.decoder = decode.make_greedy_decoder(
      build.for_decoding(policy.model), max_answer_len, text.eos_id, text.pad_id
    )

    self.num_non_text_ids = 0  # generated ids outside the text vocabulary (action bins), dropped from answers

  def answer(self, images, questions) -> list[str]:
    pixels, tokens, mask = self.policy.transform.vqa_inputs(images, questions, self.prompt)
    out = np.asarray(self.decoder(self.policy.params, pixels, tokens, mask))
    answers = []
    for row in out:
      answer, dropped = text_answer(row, self.policy.text)
      answers.append(answer)
      self.num_non_text_ids += dropped
    return answers


def text_answer(ids_L, text) -> tuple[str, int]:
  """Generated ids [L] -> (the answer text up to EOS, number of ids dropped because they are not text).
  Models with action tokens past the text vocabulary (bins / FAST on the model vocabulary's end) can emit
  them in free-text answers; SentencePiece cannot decode them, so they are dropped and counted."""
  ids = [int(t) for t in ids_L]
  if text.eos_id in ids:
    ids = ids[: ids.index(text.eos_id)]
  kept = [i for i in ids if 0 <= i < text.vocab_size]
  return text.decode(kept).strip(), len(ids) - len(kept)


def evaluate(answerer: Answerer, benchmark: str, items: list[Item], batch_size: int = 16, printer=None) -> dict:
  """Answers every item -> the benchmark's scores + the first examples. `printer` (e.g. print): a progress
  line every 10 s."""
  predictions = []
  shown = progress.Progress(f"VQA {benchmark}", len(items), "questions", printer) if printer else None
  for start in range(0, len(items), batch_size):
    chunk = items[start : start + batch_size]
    images = [preprocess.decode_image(open(it.image_path, "rb").read()) for it in chunk]
    predictions += answerer.answer(images, [it.question for it in chunk])
    if shown:
      shown.update(len(predictions))
  return dict(
    score(benchmark, predictions, items),
    examples=[
      {"question": it.question, "prediction": p, "answers": it.answers[:3]} for it, p in zip(items[:5], predictions)
    ],
  )


FLAGS = flags.FLAGS


def main(argv):
  del argv
  from genvla_jax.inference import policy as policy_lib

  workdir = cli.run_dir()
  items = load(FLAGS.benchmark, FLAGS.annotations, FLAGS.images)[: FLAGS.limit or None]
  policy = policy_lib.Policy.from_workdir(workdir, step=FLAGS.step)
  answerer = Answerer(policy, FLAGS.max_answer_len, FLAGS.prompt)
  result = evaluate(answerer, FLAGS.benchmark, items, printer=lambda *a, **k: print(*a, file=sys.stderr, **k))
  print(json.dumps({FLAGS.benchmark: result}, indent=1))


if __name__ == "__main__":
  cli.define_run_dir_flag("run directory")
  flags.DEFINE_integer("step", None, "checkpoint step (default: the newest readable one)")
  flags.DEFINE_enum("benchmark", None, list(BENCHMARKS), "which benchmark", required=True)
  flags.DEFINE_string("annotations", None, "questions / answers file in the benchmark's layout", required=True)
  flags.DEFINE_string("images", "", "image folder (llava: default the annotations' folder)")
  flags.DEFINE_integer("limit", 0, "evaluate the first N questions (0: all)")
  flags.DEFINE_integer("max_answer_len", 16, "tokens per answer")
  flags.DEFINE_string("prompt", "{question}", "prefix template (PaliGemma checkpoints: 'answer en {question}')")
  cli.run(main)
