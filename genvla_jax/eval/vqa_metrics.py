"""VQA retention metrics, as the benchmarks define them.

- VQA accuracy (TextVQA, VizWiz; the VQAv2 rule): both the prediction and the 10 human answers are
  normalized (lower case, punctuation, number words -> digits, articles, common contractions); for each
  of the 10 leave-one-out subsets of 9 answers, acc = min(1, #matches / 3); the score is their mean.
- Exact match after normalization (GQA).
- Yes/no (POPE, VSR): the first word of the prediction decides (yes / no / neither); accuracy, and for
  POPE precision, recall and F1 with "yes" as the positive class plus the share of "yes" answers.
"""

import re

_CONTRACTIONS = {
  "aint": "ain't",
  "arent": "aren't",
  "cant": "can't",
  "couldnt": "couldn't",
  "didnt": "didn't",
  "doesnt": "doesn't",
  "dont": "don't",
  "hadnt": "hadn't",
  "hasnt": "hasn't",
  "havent": "haven't",
  "isnt": "isn't",
  "itll": "it'll",
  "its": "it's",
  "ive": "i've",
  "shouldnt": "shouldn't",
  "thats": "that's",
  "theres": "there's",
  "theyre": "they're",
  "wasnt": "wasn't",
  "werent": "weren't",
  "whats": "what's",
  "wont": "won't",
  "wouldnt": "wouldn't",
  "youre": "you're",
  "youve": "you've",
}
_NUMBERS = {
  "none": "0",
  "zero": "0",
  "one": "1",
  "two": "2",
  "three": "3",
  "four": "4",
  "five": "5",
  "six": "6",
  "seven": "7",
  "eight": "8",
  "nine": "9",
  "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
_PUNCT = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_NUMBER = re.compile(r"(\d)(,)(\d)")


def _punctuation(text: str) -> str:
  out = text
  for p in _PUNCT:
    if (p + " " in text or " " + p in text) or re.search(_COMMA_NUMBER, text) is not None:
      out = out.replace(p, "")
    else:
      out = out.replace(p, " ")
  return _PERIOD.sub("", out)


def normalize_answer(text: str) -> str:
  """The VQA evaluation's answer normalization."""
  text = " ".join(text.replace("\n", " ").replace("\t", " ").strip().lower().split())
  text = _punctuation(text)
  words = []
  for word in text.split():
    word = _NUMBERS.get(word, word)
    if word in _ARTICLES:
      continue
    words.append(_CONTRACTIONS.get(word, word))
  return " ".join(words)


def vqa_accuracy(prediction: str, human_answers: list[str]) -> float:
  """VQAv2 / TextVQA / VizWiz accuracy of one prediction against (usually 10) human answers."""
  if not human_answers:
    raise ValueError("no human answers")
  pred = normalize_answer(prediction)
  gts = [normalize_answer(a) for a in human_answers]
  if len(gts) == 1:
    return float(pred == gts[0])
  scores = []
  for i in range(len(gts)):
    others = gts[:i] + gts[i + 1 :]
    scores.append(min(1.0, sum(g == pred for g in others) / 3))
  return sum(scores) / len(scores)


def exact_match(prediction: str, answer: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(answer))


def yes_no(prediction: str) -> str | None:
  """'Yes, there is ...' -> 'yes'; anything not starting with yes / no -> None (counted wrong)."""
  words = normalize_answer(prediction).replace(".", " ").split()
  return words[0] if words and words[0] in ("yes", "no") else None


def binary_scores(predictions: list[str], labels: list[str]) -> dict:
  """POPE / VSR: labels 'yes'/'no' -> accuracy, precision, recall, F1 (yes = positive), yes ratio,
  unanswered (predictions that were neither yes nor no)."""
  if len(predictions) != len(labels):
    raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
  answers = [yes_no(p) for p in predictions]
  tp = sum(a == "yes" and l == "yes" for a, l in zip(answers, labels))
  fp = sum(a == "yes" and l == "no" for a, l in zip(answers, labels))
  fn = sum(a != "yes" and l == "yes" for a, l in zip(answers, labels))
  correct = sum(a == l for a, l in zip(answers, labels))
  precision = tp / (tp + fp) if tp + fp else 0.0
  recall = tp / (tp + fn) if tp + fn else 0.0
  return {
    "accuracy": correct / len(labels) if labels else 0.0,
    "precision": precision,
    "recall": recall,
    "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
    "yes_ratio": sum(a == "yes" for a in answers) / len(labels) if labels else 0.0,
    "unanswered": sum(a is None for a in answers),
  }
