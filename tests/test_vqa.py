"""VQA retention: the benchmarks' metrics against hand-computed values, each benchmark's file layout,
and answering through a trained checkpoint's ordinary decoding."""

import json

import numpy as np
import pytest
from PIL import Image

from genvla_jax.eval import vqa, vqa_metrics


def test_vqa_accuracy_hand_computed():
  humans = ["2", "2", "two", "3", "3", "3", "3", "3", "3", "3"]  # normalized: three "2", seven "3"
  # "two" -> "2": leaving out one of the three "2"s leaves 2 matches (2/3); leaving out a "3" leaves 3 (1)
  assert vqa_metrics.vqa_accuracy("Two", humans) == pytest.approx((3 * 2 / 3 + 7 * 1) / 10)
  assert vqa_metrics.vqa_accuracy("3", humans) == 1.0
  assert vqa_metrics.vqa_accuracy("four", humans) == 0.0
  assert vqa_metrics.vqa_accuracy("A dog.", ["dog"] * 10) == 1.0  # article and period go
  assert vqa_metrics.vqa_accuracy("dont", ["don't"] * 10) == 1.0  # contraction restored
  assert vqa_metrics.vqa_accuracy("1000", ["1,000"] * 10) == 1.0  # thousands comma
  assert vqa_metrics.vqa_accuracy("red", ["red"] * 2 + ["blue"] * 8) == pytest.approx((2 * 1 / 3 + 8 * 2 / 3) / 10)
  assert vqa_metrics.exact_match("The Table", "table") == 1.0 and vqa_metrics.exact_match("chair", "table") == 0.0


def test_binary_scores_hand_computed():
  s = vqa_metrics.binary_scores(["Yes", "no.", "yes there is", "maybe"], ["yes", "yes", "no", "no"])
  assert s == {"accuracy": 0.25, "precision": 0.5, "recall": 0.5, "f1": 0.5, "yes_ratio": 0.5, "unanswered": 1}


def _image(path):
  Image.fromarray(np.full((8, 8, 3), 120, np.uint8)).save(path)


def test_each_benchmark_layout_loads(tmp_path):
  images = tmp_path / "images"
  images.mkdir()
  for name in ("10.jpg", "v.jpg", "g1.jpg", "p.jpg", "s.jpg"):
    _image(images / name)
  (tmp_path / "textvqa.json").write_text(
    json.dumps({"data": [{"question": "what brand?", "image_id": "10", "answers": ["nike"] * 10}]})
  )
  (tmp_path / "vizwiz.json").write_text(
    json.dumps(
      [
        {
          "image": "v.jpg",
          "question": "what is this?",
          "answers": [{"answer": "soup", "answer_confidence": "yes"}] * 10,
        }
      ]
    )
  )
  (tmp_path / "gqa.json").write_text(json.dumps({"q1": {"imageId": "g1", "question": "what color?", "answer": "red"}}))
  (tmp_path / "pope.jsonl").write_text(json.dumps({"image": "p.jpg", "text": "is there a dog?", "label": "no"}) + "\n")
  (tmp_path / "vsr.jsonl").write_text(
    json.dumps({"image": "s.jpg", "caption": "The cat is on the mat.", "label": 1}) + "\n"
  )
  (tmp_path / "llava.json").write_text(
    json.dumps([{"image": "g1.jpg", "conversations": [{"from": "human", "value": "<image>\nq"}, {"value": "a"}]}])
  )
  got = {
    b: vqa.load(b, str(tmp_path / f"{b}.{'jsonl' if b in ('pope', 'vsr') else 'json'}"), str(images))
    for b in vqa.BENCHMARKS
  }
  assert got["llava"][0].question == "q" and got["llava"][0].answers == ["a"]
  assert got["textvqa"][0].answers == ["nike"] * 10 and got["textvqa"][0].image_path.endswith("10.jpg")
  assert got["vizwiz"][0].answers == ["soup"] * 10
  assert got["gqa"][0].question == "what color?" and got["gqa"][0].answers == ["red"]
  assert got["pope"][0].answers == ["no"]
  assert got["vsr"][0].question == "Is it true that The cat is on the mat?" and got["vsr"][0].answers == ["yes"]
  assert vqa.score("vsr", ["Yes"], got["vsr"]) == {"accuracy": 1.0, "n": 1}
  assert vqa.score("textvqa", ["Nike"], got["textvqa"])["vqa_accuracy"] == 1.0
  with pytest.raises(ValueError, match="unknown benchmark"):
    vqa.load("mmmu", "x", "y")


def test_answer_text_drops_ids_beyond_the_text_vocabulary(demo_dir):
  # a bins model's free-text answer can hold action-bin ids past the text vocabulary: SentencePiece raised
  # "piece id is out of range" on them (the ablation runner's VQA scoring crashed on bins rows)
  from genvla_jax.tokenizers import text as text_lib

  tok = text_lib.TextTokenizer(str(demo_dir / "tokenizer.model"))
  words = tok.encode("red square")
  ids = np.array(words[:1] + [tok.vocab_size + 3] + words[1:] + [tok.eos_id, tok.vocab_size + 7])
  with pytest.raises(IndexError):
    tok.decode([int(i) for i in ids[: len(words) + 1]])
  assert vqa.text_answer(ids, tok) == ("red square", 1)  # the id after EOS is not part of the answer


def test_answers_through_a_trained_checkpoint(tmp_path, demo_dir, cache_dir):
  from conftest import tiny_config
  from genvla_jax import train
  from genvla_jax.data import demo
  from genvla_jax.inference import policy as policy_lib

  config = tiny_config(demo_dir, cache_dir)
  config.train.update(steps=2, checkpoint_every=2)
  train.train(config, str(tmp_path / "run"), printer=lambda *a, **k: None)
  images = tmp_path / "coco"
  images.mkdir()
  rows = []
  for i in range(3):
    Image.fromarray(demo.render(demo.random_scene(np.random.default_rng(i)))).save(images / f"{i}.png")
    rows.append(json.dumps({"image": f"{i}.png", "text": "how many squares are there?", "label": "yes"}))
  (tmp_path / "pope.jsonl").write_text("\n".join(rows))
  answerer = vqa.Answerer(policy_lib.Policy.from_workdir(str(tmp_path / "run")), max_answer_len=6)
  items = vqa.load("pope", str(tmp_path / "pope.jsonl"), str(images))
  result = vqa.evaluate(answerer, "pope", items, batch_size=2)
  assert result["n"] == 3 and 0.0 <= result["accuracy"] <= 1.0
  assert len(result["examples"]) == 3 and all(isinstance(e["prediction"], str) for e in result["examples"])
  # the same question on the same image gets the same answer in a batch or alone
  alone = answerer.answer([demo.render(demo.random_scene(np.random.default_rng(0)))], ["how many squares are there?"])
  assert alone[0] == result["examples"][0]["prediction"]


def test_llava_corpus_layout_scores_families_and_points(tmp_path):
  entries = [
    {
      "image": "images/a.png",
      "family": "count",
      "conversations": [{"from": "human", "value": "<image>\nhow many blocks?"}, {"from": "gpt", "value": "3"}],
    },
    {
      "image": "images/b.png",
      "family": "pointing",
      "conversations": [
        {"from": "human", "value": "<image>\npoint to the red cube"},
        {"from": "gpt", "value": "(0.40, 0.60)"},
      ],
    },
    {
      "image": "images/c.png",
      "family": "pointing",
      "conversations": [
        {"from": "human", "value": "<image>\npoint to the ball"},
        {"from": "gpt", "value": "(0.10, 0.20)"},
      ],
    },
  ]
  path = tmp_path / "heldout.json"
  path.write_text(json.dumps(entries))
  items = vqa.load("llava", str(path), "")
  assert [it.question for it in items] == ["how many blocks?", "point to the red cube", "point to the ball"]
  assert items[0].image_path == str(tmp_path / "images" / "a.png") and items[1].family == "pointing"
  scores = vqa.score("llava", ["3", "(0.43, 0.64)", "the ball"], items)
  assert scores["exact_match"] == pytest.approx(1 / 3)
  assert scores["families"] == {"count": {"exact_match": 1.0, "n": 1}, "pointing": {"exact_match": 0.0, "n": 2}}
  p = scores["pointing"]
  assert p["n"] == 2 and p["unparsable_points"] == 1 and p["hit_rate"] == 0.5
  assert p["mean_distance"] == pytest.approx((0.05 + 1.0) / 2)
  assert vqa.parse_point(" ( 0.5 ,1.0 ) ") == (0.5, 1.0) and vqa.parse_point("0.5, 1.0") is None
