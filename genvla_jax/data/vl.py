"""Vision-language examples from LLaVA-style JSON (a list of conversations over an image folder).

  [{"id": "...", "image": "relative/path.png",
    "conversations": [{"from": "human", "value": "<image>\\nQuestion?"}, {"from": "gpt", "value": "Answer"},
                      ...more turns...]}, ...]
Each (human, gpt) turn pair becomes one example {"image_path", "question", "answer"}; the "<image>"
placeholder is removed (the model always sees the image first, as PaliGemma does).
"""

import json
import os

from genvla_jax.data import convert_vl


def load_llava_json(json_path: str, image_root: str | None = None) -> list[dict]:
  image_root = image_root or os.path.dirname(os.path.abspath(json_path))
  with open(json_path) as f:
    entries = json.load(f)
  examples = []
  for n, entry in enumerate(entries):
    if "image" not in entry or "conversations" not in entry:
      raise ValueError(f"{json_path}: entry {n} ({entry.get('id')}) lacks 'image' or 'conversations'")
    try:
      pairs = convert_vl.llava_pairs(entry)
    except convert_vl.BadRecordError as err:
      raise ValueError(f"{json_path}: entry {n} ({entry.get('id')}): {err}") from err
    examples += [{"image_path": os.path.join(image_root, entry["image"]), "question": q, "answer": a}
                 for q, a in pairs]
  return examples
