r"""Converts a vision-language corpus, as published, into ArrayRecord shards of (image, question, answer).

  python -m genvla_jax.data.convert_vl --input=llava_cc3m.json --format=llava_json --out=DIR
  python -m genvla_jax.data.convert_vl --input='/data/vqasynth/*.parquet' --format=parquet --out=DIR

Formats:
  llava_json  a list of {"id", "image": path relative to the JSON's folder (or --image_root),
              "conversations": [{"from": "human"|"gpt", "value"}...]}  (LLaVA CC3M, RoboPoint)
  parquet     rows with the image embedded: an "image" column ({"bytes", "path"} struct or binary) or an
              "images" list column (the first image is used), and either "conversations" (LLaVA style)
              or "messages" ([{"role": "user"|"assistant", "content": str | [{"type", "text"}...]}])
              (LLaVA-OneVision, VQASynth spatial). Read in record batches (memory stays flat).
Every (question, answer) turn pair of a conversation becomes one record (msgpack):
  {"image": encoded bytes, "question": str ("<image>" placeholders removed), "answer": str,
   "source": "<row or entry id>#<turn>"}
Points and boxes stay text exactly as the corpus writes them. Rows with a missing or undecodable image,
or no complete turn pair, are skipped and listed in meta.json (`on_bad="fail"` raises at the first).
Output: vl-XXXXX.array_record shards, meta.json (written last: counts, sha256 per shard, skipped).
"""

import glob
import json
import os

from absl import app, flags
from array_record.python import array_record_module

from genvla_jax.data import convert, preprocess

FORMAT_VERSION = 1
FORMATS = ("llava_json", "parquet")


class BadRecordError(ValueError):
  pass


def _turn_pairs(turns, roles) -> list[tuple[str, str]]:
  """Consecutive (question, answer) pairs; roles = (question role, answer role, role key, text key)."""
  q_role, a_role, role_key, text_key = roles
  pairs = []
  for q, a in zip(turns[0::2], turns[1::2]):
    if q.get(role_key) != q_role or a.get(role_key) != a_role:
      raise BadRecordError(f"turns must alternate {q_role}/{a_role}")
    pairs.append((_text(q[text_key]).replace("<image>", "").strip(), _text(a[text_key]).strip()))
  return pairs


def _text(content) -> str:
  """A message's content: a string, or a list of typed parts whose text parts are joined."""
  if isinstance(content, str):
    return content
  return " ".join(p.get("text") or "" for p in content if p.get("type", "text") == "text").strip()


def llava_pairs(row) -> list[tuple[str, str]]:
  """LLaVA-style {"conversations": [{"from", "value"}...]} -> [(question, answer)]."""
  return _turn_pairs(row["conversations"], ("human", "gpt", "from", "value"))


def _message_pairs(row):
  return _turn_pairs(row["messages"], ("user", "assistant", "role", "content"))


def _image_bytes(value) -> bytes | None:
  if value is None:
    return None
  if isinstance(value, (bytes, bytearray)):
    return bytes(value)
  if isinstance(value, dict):
    return value.get("bytes")
  if isinstance(value, (list, tuple)) and value:
    return _image_bytes(value[0])
  return None


def iter_llava_json(path: str, image_root: str | None = None):
  """(source id, image bytes | None, [(question, answer)]) per entry; reading errors -> BadRecordError."""
  image_root = image_root or os.path.dirname(os.path.abspath(path))
  with open(path) as f:
    entries = json.load(f)
  for n, entry in enumerate(entries):
    source = f"{os.path.basename(path)}:{entry.get('id', n)}"
    try:
      if "image" not in entry or "conversations" not in entry:
        raise BadRecordError("lacks 'image' or 'conversations'")
      image_path = os.path.join(image_root, entry["image"])
      if not os.path.exists(image_path):
        raise BadRecordError(f"image file missing: {image_path}")
      with open(image_path, "rb") as f:
        image = f.read()
      yield source, image, llava_pairs(entry)
    except BadRecordError as err:
      yield source, err, []


def iter_parquet(pattern: str, batch_rows: int = 256):
  """Rows of every parquet file matching `pattern`, streamed in record batches."""
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  files = sorted(glob.glob(pattern)) or [pattern]
  for file in files:
    parquet = pq.ParquetFile(file)
    row = 0
    for batch in parquet.iter_batches(batch_size=batch_rows):
      for record in batch.to_pylist():
        source = f"{os.path.basename(file)}:{record.get('id', row)}"
        row += 1
        try:
          image = _image_bytes(record.get("image", record.get("images")))
          if image is None:
            raise BadRecordError("no embedded image")
          if "conversations" in record and record["conversations"] is not None:
            pairs = llava_pairs(record)
          elif "messages" in record and record["messages"] is not None:
            pairs = _message_pairs(record)
          else:
            raise BadRecordError("no 'conversations' or 'messages' column")
          yield source, image, pairs
        except BadRecordError as err:
          yield source, err, []


def convert_vl(input_path: str, fmt: str, out_dir: str, *, image_root: str | None = None,
               records_per_shard: int = 10_000, on_bad: str = "skip", check_images: bool = True) -> dict:
  """Converts a corpus (see the module docstring); returns meta. A complete conversion is reused."""
  meta_path = os.path.join(out_dir, "meta.json")
  done = convert.completed_meta(out_dir, FORMAT_VERSION)
  if done is not None:
    return done
  if fmt not in FORMATS:
    raise ValueError(f"unknown VL format {fmt!r}; choose one of {FORMATS}")
  if on_bad not in ("skip", "fail"):
    raise ValueError(f"on_bad must be 'skip' or 'fail', got {on_bad!r}")
  rows = iter_llava_json(input_path, image_root) if fmt == "llava_json" else iter_parquet(input_path)
  os.makedirs(out_dir, exist_ok=True)
  shards, skipped, writer, count, total, conversations = [], [], None, 0, 0, 0

  def close():
    nonlocal writer, count
    if writer is not None:
      writer.close()
      name = shards[-1]["file"]
      shards[-1].update(records=count, sha256=convert._sha256(os.path.join(out_dir, name)))  # pylint: disable=protected-access
      writer, count = None, 0

  for source, image, pairs in rows:
    reason = str(image) if isinstance(image, Exception) else None
    if reason is None and check_images:
      try:
        preprocess.decode_image(image)
      except Exception as err:  # undecodable bytes
        reason = f"undecodable image: {err}"[:200]
    if reason is None and not pairs:
      reason = "no complete (question, answer) turn pair"
    if reason:
      if on_bad == "fail":
        raise BadRecordError(f"{source}: {reason}")
      skipped.append({"source": source, "reason": reason})
      continue
    conversations += 1
    for t, (question, answer) in enumerate(pairs):
      if writer is None:
        shards.append({"file": f"vl-{len(shards):05d}.array_record"})
        writer = array_record_module.ArrayRecordWriter(os.path.join(out_dir, shards[-1]["file"]),
                                                       "group_size:1")
      writer.write(convert.encode_step({"image": image, "question": question, "answer": answer,
                                        "source": f"{source}#{t}"}))
      count += 1
      total += 1
      if count >= records_per_shard:
        close()
  close()
  if not total:
    raise ValueError(f"no usable examples in {input_path} ({len(skipped)} skipped, first: {skipped[:3]})")
  meta = {"format_version": FORMAT_VERSION, "input": os.path.abspath(input_path), "format": fmt,
          "num_examples": total, "num_conversations": conversations, "shards": shards, "skipped": skipped}
  tmp = meta_path + f".tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(meta, f, indent=1)
  os.replace(tmp, meta_path)
  return meta


class VLSource:
  """Random access to converted VL records: {"image": bytes, "question", "answer", "source"}."""

  def __init__(self, out_dir: str):
    import grain  # pylint: disable=g-import-not-at-top
    with open(os.path.join(out_dir, "meta.json")) as f:
      meta = json.load(f)
    self._source = grain.sources.ArrayRecordDataSource([os.path.join(out_dir, s["file"])
                                                        for s in meta["shards"]])

  def __len__(self):
    return len(self._source)

  def __getitem__(self, index):
    return convert.decode_step(self._source[index])


FLAGS = flags.FLAGS


def main(argv):
  del argv
  meta = convert_vl(FLAGS.input, FLAGS.format, FLAGS.out, image_root=FLAGS.image_root,
                    on_bad=FLAGS.on_bad)
  print(json.dumps({k: v for k, v in meta.items() if k not in ("shards", "skipped")}
                   | {"skipped": len(meta["skipped"])}, indent=1))


if __name__ == "__main__":
  flags.DEFINE_string("input", None, "LLaVA JSON file, or parquet file / glob", required=True)
  flags.DEFINE_enum("format", None, list(FORMATS), "input format", required=True)
  flags.DEFINE_string("out", None, "output directory", required=True)
  flags.DEFINE_string("image_root", None, "llava_json: image folder (default: the JSON's folder)")
  flags.DEFINE_enum("on_bad", "skip", ["skip", "fail"], "skip and report bad rows, or stop at the first")
  app.run(main)
