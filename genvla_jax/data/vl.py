"""Vision-language examples from LLaVA-style JSON (a list of conversations over an image folder).

  [{"id": "...", "image": "relative/path.png",
    "conversations": [{"from": "human", "value": "<image>\\nQuestion?"}, {"from": "gpt", "value": "Answer"},
                      ...more turns...]}, ...]
Each (human, gpt) turn pair becomes one example {"image_path", "question", "answer"}; the "<image>"
placeholder is removed (the model always sees the image first, as PaliGemma does).
"""

import os

from genvla_jax.data import convert_vl


def load_llava_json(json_path: str, image_root: str | None = None) -> list[dict]:
  """-> [{"image_path", "question", "answer"}] (images not read); the first malformed entry raises
  convert_vl.BadVLRecordError naming the file and the entry."""
  image_root = image_root or os.path.dirname(os.path.abspath(json_path))
  examples = []
  for n, entry in enumerate(convert_vl.load_json_list(json_path)):
    name = entry.get("id") if isinstance(entry, dict) else None
    if not isinstance(entry, dict) or "image" not in entry or "conversations" not in entry:
      raise convert_vl.BadVLRecordError(f"{json_path}: entry {n} ({name}) lacks 'image' or 'conversations'")
    try:
      pairs = convert_vl.llava_pairs(entry)
    except (convert_vl.BadVLRecordError,) + convert_vl.ROW_ERRORS as err:
      raise convert_vl.BadVLRecordError(f"{json_path}: entry {n} ({name}): {err}") from err
    examples += [{"image_path": os.path.join(image_root, entry["image"]), "question": q, "answer": a} for q, a in pairs]
  return examples
