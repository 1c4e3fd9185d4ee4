"""The shared progress line (genvla_jax/progress.py) and the long jobs that print it."""

from genvla_jax import progress


def test_progress_line_rate_eta_and_throttle(monkeypatch):
  clock = iter([0.0, 5.0, 12.0, 13.0, 20.0])
  monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
  lines = []
  p = progress.Progress("recording", 100, "episodes", printer=lambda line, **k: lines.append(line), every_s=10.0)
  p.update(10)  # t=5: throttled
  p.update(30)  # t=12: 30 in 12 s -> 2.5/s, 70 left -> 28 s
  p.update(40)  # t=13: throttled
  p.update(100)  # the end: always printed
  assert lines == [
    "recording: 30/100 episodes (30%), 2.5 episodes/s, ETA 28s",
    "recording: 100/100 episodes (100%), 5.0 episodes/s, ETA 0s",
  ]


def test_vqa_evaluate_reports_progress(tmp_path):
  from PIL import Image

  from genvla_jax.eval import vqa

  path = tmp_path / "a.png"
  Image.new("RGB", (8, 8)).save(path)
  items = [vqa.Item(question=f"q{i}", answers=["yes"], image_path=str(path)) for i in range(5)]

  class Yes:
    def answer(self, images, questions):
      return ["yes"] * len(questions)

  lines = []
  result = vqa.evaluate(Yes(), "llava", items, batch_size=2, printer=lambda line, **k: lines.append(line))
  assert result["n"] == 5 and result["exact_match"] == 1.0
  assert lines[-1].startswith("VQA llava: 5/5 questions (100%)")
