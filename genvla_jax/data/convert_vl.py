r"""Converts a vision-language corpus, as published, into ArrayRecord shards of (image, question, answer).

  python -m genvla_jax.data.convert_vl --input=llava_cc3m.json --format=llava_json --out=DIR
  python -m genvla_jax.data.convert_vl --input='/data/vqasynth/*.parquet' --format=parquet --out=DIR

Formats:
  llava_json  a list of {"id", "image": path relative to the JSON's folder or to its images/ subfolder
              (or to --image_root), "conversations": [{"from": "human"|"gpt", "value"}...]}
              (LLaVA CC3M, RoboPoint: the JSON with its images unpacked into images/)
  parquet     rows with the image embedded: an "image" column ({"bytes", "path"} struct or binary) or an
              "images" list column (the first image is used), and either "conversations" (LLaVA style)
              or "messages" ([{"role": "user"|"assistant", "content": str | [{"type", "text"}...]}])
              (LLaVA-OneVision, VQASynth spatial). Read in record batches (memory stays flat).
Every (question, answer) turn pair of a conversation becomes one record (msgpack):
  {"image": encoded bytes, "question": str ("<image>" placeholders removed), "answer": str,
   "source": "<row or entry id>#<turn>"}
Points and boxes stay text exactly as the corpus writes them. Rows with a missing or undecodable image,
no complete turn pair, or a malformed entry, are skipped and listed in meta.json with their source
("<file>:<id or row>"; `on_bad="fail"` raises BadVLRecordError naming it at the first).
Output: vl-XXXXX.array_record shards, meta.json (written last: counts, sha256 per shard, skipped). A
finished --out is reused only for the same input and format (else VLInputError); a failed run removes
the shards it wrote and the --out it created; training reads a finished --out given as a data.vl entry's
path as it is (`finished`). With a printer, progress (rows, rate, ETA) every PROGRESS_EVERY_S seconds.

PUBLISHED: the paper's four co-training corpora as their authors publish them (the file or parquet glob
inside a corpus's download folder, its format): configs/pi0_plus.py:full takes each folder as an option
(`llava=DIR,vqasynth=DIR,onevision=DIR,robopoint=DIR`, config_lib.published_vl).
"""

import dataclasses
import glob
import json
import os
import time

from absl import flags
from array_record.python import array_record_module

from genvla_jax import cli
from genvla_jax.data import convert, preprocess

FORMAT_VERSION = 1
FORMATS = ("llava_json", "parquet")
PROGRESS_EVERY_S = 10.0


@dataclasses.dataclass(frozen=True)
class Published:
  """A VL corpus as published: `path` (a file or parquet glob) inside its download folder ROOT, its format,
  and `layout`, what ROOT holds (named in the error when a folder lacks it)."""

  path: str
  format: str
  layout: str


# The paper's co-training corpora by option name (the data.vl entry's name). Layouts of the published
# downloads: LLaVA's docs/Data.md (chat.json, images.zip), the lmms-lab/LLaVA-OneVision-Data repository
# (one folder per subset of train-*.parquet: id, image, conversations, data_source), VQASynth's prompt
# stage pushed to the HF hub (data/train-*.parquet: image, messages with typed content parts), the
# wentao-yuan/robopoint-data repository (robopoint_1432k.json, images/*.tar.gz).
PUBLISHED = {
  "llava": Published(
    "chat.json",
    "llava_json",
    "LLaVA-CC3M-Pretrain-595K: ROOT/chat.json (LLaVA JSON) with its images.zip unpacked into ROOT/images/",
  ),
  "vqasynth": Published(
    "data/train-*.parquet",
    "parquet",
    "a VQASynth spatial VQA dataset as pushed to the HF hub: ROOT/data/train-*.parquet (columns image, messages)",
  ),
  "onevision": Published(
    "*/train-*.parquet",
    "parquet",
    "lmms-lab/LLaVA-OneVision-Data: ROOT/<subset>/train-*.parquet (columns id, image, conversations)",
  ),
  "robopoint": Published(
    "robopoint_1432k.json",
    "llava_json",
    "wentao-yuan/robopoint-data: ROOT/robopoint_1432k.json (LLaVA JSON) with images/*.tar.gz unpacked in ROOT/images/",
  ),
}
ROW_ERRORS = (KeyError, TypeError, AttributeError, ValueError, IndexError)  # a malformed row


class BadVLRecordError(cli.UserError, ValueError):
  """A bad row: the message starts with its source "<file>:<id or row>"."""


class VLInputError(cli.UserError, ValueError):
  """The corpus (or --out) cannot be used at all: names the file and the fix."""


def _turn_pairs(turns, roles) -> list[tuple[str, str]]:
  """Consecutive (question, answer) pairs; roles = (question role, answer role, role key, text key)."""
  q_role, a_role, role_key, text_key = roles
  pairs = []
  for q, a in zip(turns[0::2], turns[1::2]):
    if q.get(role_key) != q_role or a.get(role_key) != a_role:
      raise BadVLRecordError(f"turns must alternate {q_role}/{a_role}")
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


def load_json_list(path: str) -> list:
  """A JSON file holding a list (LLaVA style); VLInputError naming the file otherwise."""
  if not os.path.isfile(path):
    raise VLInputError(f"VL corpus not found: {path} (give the LLaVA-style .json file)")
  try:
    with open(path) as f:
      entries = json.load(f)
  except (UnicodeDecodeError, json.JSONDecodeError) as err:
    raise VLInputError(f"{path} is not valid JSON ({err}): give a LLaVA-style .json list") from err
  if not isinstance(entries, list):
    raise VLInputError(f"{path}: expected a JSON list of conversations (LLaVA style), got a {type(entries).__name__}")
  return entries


def _entry_source(path: str, entry, n: int) -> str:
  name = entry.get("id", n) if isinstance(entry, dict) else n
  return f"{os.path.basename(path)}:{name}"


def _image_roots(path: str, image_root: str | None) -> list[str]:
  """Where a LLaVA JSON's image paths are relative to: `image_root` when given, else the JSON's folder and
  then its images/ subfolder (LLaVA CC3M and RoboPoint unpack their images there)."""
  if image_root:
    return [image_root]
  folder = os.path.dirname(os.path.abspath(path))
  return [folder, os.path.join(folder, "images")]


def _image_path(roots: list[str], name: str) -> str:
  """The first of roots/name that exists; BadVLRecordError naming where it was looked for."""
  for root in roots:
    candidate = os.path.join(root, name)
    if os.path.exists(candidate):
      return candidate
  also = [r for r in roots[1:] if os.path.isdir(r)]
  raise BadVLRecordError(
    f"image file missing: {os.path.join(roots[0], name)}" + "".join(f" (nor in {r})" for r in also)
  )


def iter_llava_json(path: str, image_root: str | None = None, progress=None):
  """(source id, image bytes | BadVLRecordError, [(question, answer)]) per entry; a bad entry is yielded with
  its error (never raised), so every entry is named. `progress`: told the number of entries (start)."""
  roots = _image_roots(path, image_root)
  entries = load_json_list(path)
  if progress is not None:
    progress.start(len(entries))
  for n, entry in enumerate(entries):
    source = _entry_source(path, entry, n)
    try:
      if not isinstance(entry, dict) or "image" not in entry or "conversations" not in entry:
        raise BadVLRecordError("lacks 'image' or 'conversations'")
      image_path = _image_path(roots, entry["image"])
      with open(image_path, "rb") as f:
        image = f.read()
      yield source, image, llava_pairs(entry)
    except BadVLRecordError as err:
      yield source, err, []
    except ROW_ERRORS as err:
      yield source, BadVLRecordError(f"malformed entry ({type(err).__name__}: {err})"[:300]), []


def parquet_files(pattern: str) -> list[str]:
  """The files a parquet path or glob names; VLInputError when none exists."""
  files = [pattern] if os.path.isfile(pattern) else sorted(glob.glob(pattern))
  if not files:
    raise VLInputError(f"VL corpus not found: no file matches {pattern} (give a parquet file or a glob)")
  return files


def _open_parquet(file: str):
  import pyarrow.parquet as pq

  try:
    return pq.ParquetFile(file)
  except Exception as err:
    raise VLInputError(f"{file} is not a readable parquet file ({err})") from err


def iter_parquet(pattern: str, batch_rows: int = 256, progress=None):
  """Rows of every parquet file matching `pattern`, streamed in record batches: (source id, image bytes |
  BadVLRecordError, [(question, answer)]); a file that is not parquet raises VLInputError naming it.
  `progress`: told the number of rows (start; from the files' footers)."""
  files = parquet_files(pattern)
  if progress is not None:
    progress.start(sum(_open_parquet(f).metadata.num_rows for f in files))
  for file in files:
    parquet = _open_parquet(file)
    row = 0
    for batch in _batches(parquet, file, batch_rows):
      for record in batch.to_pylist():
        source = f"{os.path.basename(file)}:{record.get('id', row)}"
        row += 1
        try:
          image = _image_bytes(record.get("image", record.get("images")))
          if image is None:
            raise BadVLRecordError("no embedded image")
          if "conversations" in record and record["conversations"] is not None:
            pairs = llava_pairs(record)
          elif "messages" in record and record["messages"] is not None:
            pairs = _message_pairs(record)
          else:
            raise BadVLRecordError("no 'conversations' or 'messages' column")
          yield source, image, pairs
        except BadVLRecordError as err:
          yield source, err, []
        except ROW_ERRORS as err:
          yield source, BadVLRecordError(f"malformed row ({type(err).__name__}: {err})"[:300]), []


def _batches(parquet, file: str, batch_rows: int):
  """The file's record batches; a damaged file raises VLInputError naming it."""
  batches, rows = parquet.iter_batches(batch_size=batch_rows), 0
  while True:
    try:
      batch = next(batches)
    except StopIteration:
      return
    except Exception as err:
      raise VLInputError(f"{file}: unreadable after row {rows} ({' '.join(str(err).split())[:200]})") from err
    rows += batch.num_rows
    yield batch


def check_input(input_path: str, fmt: str) -> None:
  """Raises VLInputError unless the corpus exists in `fmt` (reads no rows)."""
  if fmt not in FORMATS:
    raise VLInputError(f"unknown VL format {fmt!r}; choose one of {FORMATS}")
  if os.path.isdir(input_path):
    raise VLInputError(
      f"{input_path} is a directory but holds no finished convert_vl output (meta.json): give the corpus's "
      f"{'LLaVA-style .json file' if fmt == 'llava_json' else 'parquet file or glob'}, or a convert_vl --out"
    )
  if fmt == "parquet":
    parquet_files(input_path)
  elif not os.path.isfile(input_path):
    raise VLInputError(f"VL corpus not found: {input_path} (give the LLaVA-style .json file)")


def finished(out_dir: str) -> dict | None:
  """meta.json of a finished conversion (this converter's, this FORMAT_VERSION) in `out_dir`, else None: how
  training tells a convert_vl --out given as a data.vl entry's path (read as it is) from a corpus."""
  meta = convert.completed_meta(out_dir, FORMAT_VERSION)
  return meta if meta is not None and "num_examples" in meta and "shards" in meta else None


class _Progress:
  """Rows read, examples written, rate and ETA: a line every PROGRESS_EVERY_S seconds (and none for a
  conversion shorter than that)."""

  def __init__(self, printer, label: str):
    self.printer, self.label = printer, label
    self.total, self.rows, self.examples = None, 0, 0
    self.start_time = self.last = time.perf_counter()

  def start(self, total: int):
    self.total = total

  def update(self, examples: int):
    self.rows += 1
    self.examples += examples
    now = time.perf_counter()
    if self.printer is None or now - self.last < PROGRESS_EVERY_S:
      return
    self.last = now
    rate = self.rows / max(now - self.start_time, 1e-9)
    of = f"/{self.total}" if self.total else ""
    eta = f" | ETA {(self.total - self.rows) / rate:.0f}s" if self.total else ""
    self.printer(f"{self.label}: {self.rows}{of} rows | {self.examples} examples | {rate:.0f} rows/s{eta}", flush=True)


def _reusable(out_dir: str, input_path: str, fmt: str) -> dict | None:
  """The finished conversion of this input in `out_dir`, None if there is none; VLInputError when --out
  holds another corpus's conversion or a foreign meta.json."""
  path = os.path.join(out_dir, "meta.json")
  if not os.path.exists(path):
    return None
  meta = convert._read_json(path)
  if meta is None or "num_examples" not in meta:
    raise VLInputError(f"--out {out_dir} holds a meta.json not written by convert_vl: give another --out")
  asked = {"input": os.path.abspath(input_path), "format": fmt, "format_version": FORMAT_VERSION}
  diffs = [f"{k} {meta.get(k)!r} (asked {v!r})" for k, v in asked.items() if meta.get(k) != v]
  if diffs:
    raise VLInputError(f"--out {out_dir} holds the conversion of other input: {'; '.join(diffs)}: give another --out")
  return meta


def convert_vl(
  input_path: str,
  fmt: str,
  out_dir: str,
  *,
  image_root: str | None = None,
  records_per_shard: int = 10_000,
  on_bad: str = "skip",
  check_images: bool = True,
  printer=None,
) -> dict:
  """Converts a corpus (see the module docstring); returns meta. The input and --out are checked before
  anything is written; a complete conversion of the same input and format is reused. `printer` (e.g.
  print): progress lines while converting, and what was written where at the end."""
  if on_bad not in ("skip", "fail"):
    raise ValueError(f"on_bad must be 'skip' or 'fail', got {on_bad!r}")
  if fmt not in FORMATS:
    raise VLInputError(f"unknown VL format {fmt!r}; choose one of {FORMATS}")
  if os.path.exists(out_dir) and not os.path.isdir(out_dir):
    raise VLInputError(f"--out {out_dir} is a file, not a directory: give another --out")
  done = _reusable(out_dir, input_path, fmt)
  if done is not None:
    return done
  check_input(input_path, fmt)
  progress = _Progress(printer, f"converting {input_path}")
  if fmt == "llava_json":
    rows = iter_llava_json(input_path, image_root, progress=progress)
  else:
    rows = iter_parquet(input_path, progress=progress)
  created = convert._make_dirs(out_dir)
  written = []
  try:
    shards, skipped, conversations = _write_shards(
      rows, out_dir, records_per_shard, on_bad, check_images, written, progress
    )
    total = sum(s["records"] for s in shards)
    if not total:
      raise VLInputError(f"no usable examples in {input_path} ({len(skipped)} skipped, first: {skipped[:3]})")
  except BaseException:
    for path in written:  # a conversion does not resume: its shards are of no use
      if os.path.exists(path):
        os.remove(path)
    convert._remove_empty_dirs(out_dir, created)
    raise
  meta = {
    "format_version": FORMAT_VERSION,
    "input": os.path.abspath(input_path),
    "format": fmt,
    "num_examples": total,
    "num_conversations": conversations,
    "shards": shards,
    "skipped": skipped,
  }
  meta_path = os.path.join(out_dir, "meta.json")
  tmp = meta_path + f".tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(meta, f, indent=1)
  os.replace(tmp, meta_path)
  if printer is not None:
    printer(
      f"converted {input_path} ({fmt}): {total} examples from {conversations} conversations, "
      f"{len(skipped)} rows skipped -> {out_dir}",
      flush=True,
    )
  return meta


def _row_problem(image, pairs, check_images: bool) -> str | None:
  """Why a row (image bytes or its BadVLRecordError, turn pairs) is skipped; None if it is usable."""
  if isinstance(image, Exception):
    return str(image)
  if check_images:
    try:
      preprocess.decode_image(image)
    except preprocess.BadImageError as err:
      return f"undecodable image: {err}"[:200]
  if not pairs:
    return "no complete (question, answer) turn pair"
  return None


def _write_shards(
  rows, out_dir: str, records_per_shard: int, on_bad: str, check_images: bool, written: list, progress=None
) -> tuple[list, list, int]:
  """Rows -> vl-XXXXX.array_record shards (paths appended to `written` as they are opened)
  -> (shards [{file, records, sha256}], skipped [{source, reason}], conversations)."""
  shards, skipped, writer, count, conversations = [], [], None, 0, 0

  def close():
    nonlocal writer, count
    if writer is not None:
      writer.close()
      shards[-1].update(records=count, sha256=convert._sha256(written[-1]))
      writer, count = None, 0

  try:
    for source, image, pairs in rows:
      reason = _row_problem(image, pairs, check_images)
      if progress is not None:
        progress.update(0 if reason else len(pairs))
      if reason:
        if on_bad == "fail":
          raise BadVLRecordError(
            f"{source}: {reason} (on_bad='fail'; on_bad='skip' skips it and lists it in meta.json)"
          )
        skipped.append({"source": source, "reason": reason})
        continue
      conversations += 1
      for t, (question, answer) in enumerate(pairs):
        if writer is None:
          shards.append({"file": f"vl-{len(shards):05d}.array_record"})
          written.append(os.path.join(out_dir, shards[-1]["file"]))
          writer = array_record_module.ArrayRecordWriter(written[-1], "group_size:1")
        writer.write(
          convert.encode_step({"image": image, "question": question, "answer": answer, "source": f"{source}#{t}"})
        )
        count += 1
        if count >= records_per_shard:
          close()
  finally:
    close()
  return shards, skipped, conversations


class VLSource:
  """Random access to converted VL records: {"image": bytes, "question", "answer", "source"}."""

  def __init__(self, out_dir: str):
    import grain

    with open(os.path.join(out_dir, "meta.json")) as f:
      meta = json.load(f)
    self._source = grain.sources.ArrayRecordDataSource([os.path.join(out_dir, s["file"]) for s in meta["shards"]])

  def __len__(self):
    return len(self._source)

  def __getitem__(self, index):
    return convert.decode_step(self._source[index])


FLAGS = flags.FLAGS


def main(argv):
  del argv
  meta = convert_vl(
    FLAGS.input, FLAGS.format, FLAGS.out, image_root=FLAGS.image_root, on_bad=FLAGS.on_bad, printer=print
  )
  print(
    json.dumps(
      {k: v for k, v in meta.items() if k not in ("shards", "skipped")} | {"skipped": len(meta["skipped"])}, indent=1
    )
  )


if __name__ == "__main__":
  flags.DEFINE_string("input", None, "LLaVA JSON file, or parquet file / glob", required=True)
  flags.DEFINE_enum("format", None, list(FORMATS), "input format", required=True)
  flags.DEFINE_string("out", None, "output directory", required=True)
  flags.DEFINE_string("image_root", None, "llava_json: image folder (default: the JSON's folder, then its images/)")
  flags.DEFINE_enum("on_bad", "skip", ["skip", "fail"], "skip and report bad rows, or stop at the first")
  cli.run(main)
