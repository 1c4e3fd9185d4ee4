"""Vision-language examples from LLaVA-style JSON (a list of conversations over an image folder).

  [{"id": "...", "image": "relative/path.png",
    "conversations": [{"from": "human", "value": "<image>\\nQuestion?"}, {"from": "gpt", "value": "Answer"},
                      ...more turns...]}, ...]
Each (human, gpt) turn pair becomes one example {"image_path", "question", "answer"}; the "<image>"
placeholder is removed (the model always sees the image first, as PaliGemma does).
"""

import json
import os


def load_llava_json(json_path: str, image_root: str | None = None) -> list[dict]:
  image_root = image_root or os.path.dirname(os.path.abspath(json_path))
  with open(json_path) as f:
    entries = json.load(f)
  examples = []
  for n, entry in enumerate(entries):
    if "image" not in entry or "conversations" not in entry:
      raise ValueError(f"{json_path}: entry {n} ({entry.get('id')}) lacks 'image' or 'conversations'")
    turns = entry["conversations"]
    for q, a in zip(turns[0::2], turns[1::2]):
      if q.get("from") != "human" or a.get("from") != "gpt":
        raise ValueError(f"{json_path}: entry {n} ({entry.get('id')}): turns must alternate human/gpt")
      examples.append({"image_path": os.path.join(image_root, entry["image"]),
                       "question": q["value"].replace("<image>", "").strip(),
                       "answer": a["value"].strip()})
  return examples
