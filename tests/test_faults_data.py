"""Faults and bad input on the data side (issue 18): corrupt and truncated TFRecords, undecodable images,
`inspect --verify`, --out folders that hold something else, conversions of other input, VL corpora with
bad rows, missing data in the training path, and one error line from every data CLI.

Each test reproduces a failure of the code before the fix (named in its docstring). The datasets are the
demo's val split (6 episodes x 4 steps, 32x32 PNG) rewritten as TFRecord, the layout OXE is published in,
and the real Bridge sample where it is present.
"""

import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

from conftest import BRIDGE_SAMPLE, ROOT, tiny_config
from genvla_jax import cli
from genvla_jax.data import convert, convert_vl, demo, inspect, prepare, rlds, vl


# ---------------------------------------------------------------------------------------------- helpers


def tfrecord_copy(src_dir: str, dst_dir, split: str = "val", records: int | None = None) -> str:
  """The `split` of TFDS dir `src_dir` (any format) rewritten as one TFRecord shard in `dst_dir`
  (features.json copied, dataset_info.json pointing at the new shard) -> dst_dir."""
  src = rlds.RLDSDataset(src_dir, split)
  data = [d for path in src.files for _, d in src.iter_file(path)][:records]
  os.makedirs(dst_dir)
  shutil.copy(os.path.join(src_dir, "features.json"), os.path.join(dst_dir, "features.json"))
  with open(os.path.join(src_dir, "dataset_info.json")) as f:
    info = json.load(f)
  frames = b"".join(rlds.tfrecord_frame(d) for d in data)
  template = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
  info.update(
    fileFormat="tfrecord",
    splits=[
      {"filepathTemplate": template, "name": split, "numBytes": str(len(frames)), "shardLengths": [str(len(data))]}
    ],
  )
  with open(os.path.join(dst_dir, "dataset_info.json"), "w") as f:
    json.dump(info, f)
  with open(shard_path(str(dst_dir), info["name"], split), "wb") as f:
    f.write(frames)
  return str(dst_dir)


def shard_path(dataset_dir: str, name: str = "demo_targets", split: str = "val") -> str:
  return os.path.join(dataset_dir, f"{name}-{split}.tfrecord-00000-of-00001")


def frames(path: str) -> list[tuple[int, int]]:
  """(byte offset of the frame, data length) of every record of a TFRecord file."""
  with open(path, "rb") as f:
    blob = f.read()
  out, offset = [], 0
  while offset < len(blob):
    (length,) = struct.unpack("<Q", blob[offset : offset + 8])
    out.append((offset, length))
    offset += 12 + length + 4
  return out


def flip_byte(path: str, offset: int):
  with open(path, "r+b") as f:
    f.seek(offset)
    byte = f.read(1)[0]
    f.seek(offset)
    f.write(bytes([byte ^ 0x10]))


def image_offset(path: str, record: int, signature: bytes = b"\x89PNG") -> int:
  """File offset of the first image (by its signature) inside record `record`'s data."""
  offset, length = frames(path)[record]
  with open(path, "rb") as f:
    f.seek(offset + 12)
    return offset + 12 + f.read(length).index(signature)


def rewrite_record(path: str, record: int, edit):
  """Replaces record `record`'s data by edit(data), framed with valid checksums (damage that the
  writer already wrote: only decoding can find it)."""
  with open(path, "rb") as f:
    blob = f.read()
  pieces = []
  for k, (offset, length) in enumerate(frames(path)):
    data = blob[offset + 12 : offset + 12 + length]
    pieces.append(rlds.tfrecord_frame(edit(data) if k == record else data))
  with open(path, "wb") as f:
    f.write(b"".join(pieces))


def stored_episodes(out_dir: str) -> list[int]:
  return [int(e) for e in np.load(os.path.join(out_dir, "episodes.npz"))["source_episode"]]


def run_cli(module: str, *args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  return subprocess.run(
    [sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False
  )


@pytest.fixture
def tfr(demo_dir, tmp_path):
  """The demo's val split as a TFRecord dataset: 6 episodes, 4 steps each."""
  return tfrecord_copy(demo.demo_paths(str(demo_dir)).rlds_dir, tmp_path / "tfr")


# ------------------------------------------------------------------- bad 3: corrupt records and images


def test_reader_checks_tfrecord_checksums(tfr):
  """Old: grain's TFRecord reader skipped both CRCs, so a flipped byte came back as good data."""
  path = shard_path(tfr)
  clean = [d for _, d in rlds.iter_tfrecord(path)]
  assert len(clean) == 6 and all(isinstance(d, bytes) for d in clean)
  flip_byte(path, image_offset(path, 2) + 60)
  items = list(rlds.iter_tfrecord(path))
  assert [k for k, d in items if isinstance(d, rlds.RecordError)] == [2]
  assert [d for k, d in items if k != 2] == clean[:2] + clean[3:]  # framing intact: the next records read
  assert "checksum mismatch" in str(items[2][1]) and not items[2][1].rest_lost
  with pytest.raises(rlds.RecordError, match=r"record 2 \(byte \d+\): corrupt data"):
    list(rlds.RLDSDataset(tfr, "val"))


def test_flipped_byte_skips_its_episode_by_name(tfr, tmp_path):
  """Old: a flipped byte in a stored image converted with exit 0 and '0 skipped' (the damaged image stored)."""
  path = shard_path(tfr)
  flip_byte(path, image_offset(path, 2) + 60)
  out = str(tmp_path / "out")
  meta = convert.convert(tfr, "demo_targets", "val", out, episodes_per_part=2)
  assert (meta["num_episodes"], meta["skipped_episodes"]) == (5, 1)
  (entry,) = meta["skipped_steps"]
  assert entry["file"] == os.path.basename(path) and (entry["record"], entry["episode"]) == (2, 2)
  assert "checksum mismatch" in entry["reason"]
  assert 2 not in stored_episodes(out)
  text = "\n".join(convert.summary_lines(meta, out))
  assert f"{os.path.basename(path)} record 2, episode 2: corrupt data (checksum mismatch)" in text
  with pytest.raises(convert.BadRecordError, match=r"record 2 \(byte \d+\): bad record in episode 2"):
    convert.convert(tfr, "demo_targets", "val", str(tmp_path / "strict"), on_bad="fail")
  assert not os.path.exists(tmp_path / "strict")  # the failed run leaves no folder behind


def test_undecodable_image_in_a_valid_record_skips_the_episode(tfr, tmp_path):
  """Old: conversion never decoded images, so an image broken before framing was stored silently."""
  path = shard_path(tfr)
  rewrite_record(path, 4, lambda data: data.replace(b"\x89PNG", b"JUNK", 1))
  meta = convert.convert(tfr, "demo_targets", "val", str(tmp_path / "out"))
  assert (meta["num_episodes"], meta["skipped_episodes"]) == (5, 1)
  (entry,) = meta["skipped_steps"]
  assert (entry["record"], entry["episode"], entry["step"]) == (4, 4, 0)
  assert entry["reason"].startswith("undecodable image")


def test_every_episode_bad_is_one_error_and_leaves_nothing(tfr, tmp_path):
  """Old: every record damaged still converted with exit 0."""
  path = shard_path(tfr)
  for k in range(6):
    flip_byte(path, image_offset(path, k) + 60)
  out = tmp_path / "new" / "out"
  with pytest.raises(convert.NoUsableDataError, match=r"all 6 skipped, first: .*record 0: episode 0: corrupt"):
    convert.convert(tfr, "demo_targets", "val", str(out), episodes_per_part=4)
  assert not os.path.exists(tmp_path / "new")


def test_flipped_byte_in_an_array_record_source(demo_dir, tmp_path):
  """ArrayRecord sources: riegeli's chunk hashes find the flip; the episode is skipped by name."""
  local = str(tmp_path / "demo")
  shutil.copytree(demo.demo_paths(str(demo_dir)).rlds_dir, local)
  path = os.path.join(local, "demo_targets-val.array_record-00000-of-00001")
  with open(os.path.join(local, "dataset_info.json")) as f:
    data_bytes = int(next(s["numBytes"] for s in json.load(f)["splits"] if s["name"] == "val"))
  flip_byte(path, data_bytes // 2)
  meta = convert.convert(local, "demo_targets", "val", str(tmp_path / "out"))
  assert (meta["num_episodes"], meta["skipped_episodes"]) == (5, 1)
  (entry,) = meta["skipped_steps"]
  assert entry["file"] == os.path.basename(path) and "hash mismatch" in entry["reason"]


def test_flipped_byte_in_the_real_bridge_sample(tmp_path):
  """Old (the probe): flipped bytes in a Bridge JPEG gave exit 0, 0 skipped, damaged images stored."""
  if not os.path.isdir(BRIDGE_SAMPLE):
    pytest.skip("shared Bridge sample not present")
  local = str(tmp_path / "bridge_dataset" / "1.0.0")
  shutil.copytree(BRIDGE_SAMPLE, local)
  path = shard_path(local, "bridge_dataset", "train")
  os.chmod(path, 0o644)
  flip_byte(path, image_offset(path, 3, b"\xff\xd8\xff") + 500)
  meta = convert.convert(local, "bridge", "train", str(tmp_path / "out"))
  assert (meta["num_episodes"], meta["skipped_episodes"]) == (24, 1)
  assert [(s["record"], s["episode"]) for s in meta["skipped_steps"]] == [(3, 3)]


# ------------------------------------------------------------------------------- weak: truncated files


@pytest.mark.parametrize("cut", ["inside_record", "at_boundary"])
def test_truncated_tfrecord_keeps_the_episodes_before_the_cut(tfr, tmp_path, cut):
  """Old: a 133 KB hex dump in a ValueError, and every episode of the file discarded."""
  path = shard_path(tfr)
  offset, length = frames(path)[4]
  with open(path, "r+b") as f:
    f.truncate(offset + (length // 2 if cut == "inside_record" else 0))
  meta = convert.convert(tfr, "demo_targets", "val", str(tmp_path / "out"), episodes_per_part=2)
  assert stored_episodes(str(tmp_path / "out")) == [0, 1, 2, 3]
  assert meta["skipped_episodes"] == 2
  (entry,) = meta["skipped_steps"]
  assert (entry["record"], entry["episode"], entry["episodes_lost"]) == (4, 4, 2)
  assert f"byte {offset}" in entry["reason"] and "truncated" in entry["reason"] and len(entry["reason"]) < 300
  with pytest.raises(rlds.RecordError) as error:
    list(rlds.RLDSDataset(tfr, "val"))
  assert error.value.rest_lost and error.value.index == 4 and len(str(error.value)) < 400


def test_truncated_part_after_the_cut_loses_only_its_episodes(tfr, tmp_path):
  """A cut before a part's first record: that part is counted lost, the others converted."""
  path = shard_path(tfr)
  offset, _ = frames(path)[1]
  with open(path, "r+b") as f:
    f.truncate(offset + 5)
  meta = convert.convert(tfr, "demo_targets", "val", str(tmp_path / "out"), episodes_per_part=2)
  assert stored_episodes(str(tmp_path / "out")) == [0]
  assert [(s["record"], s["episodes_lost"]) for s in meta["skipped_steps"]] == [(1, 1), (2, 2), (4, 2)]
  assert meta["skipped_episodes"] == 5


# -------------------------------------------------------------------------- bad 4: inspect --verify


@pytest.fixture
def converted(demo_dir, tmp_path):
  out = str(tmp_path / "conv")
  convert.convert(demo.demo_paths(str(demo_dir)).rlds_dir, "demo_targets", "val", out, episodes_per_part=3)
  return out


def _rewrite_shard(out_dir: str, shard: int, edit):
  """Rewrites shard `shard` record by record (edit(index, record dict) -> record) and updates its
  sha256 in meta.json, as a conversion that stored bad data would have."""
  from array_record.python import array_record_module
  import grain

  with open(os.path.join(out_dir, "meta.json")) as f:
    meta = json.load(f)
  path = os.path.join(out_dir, meta["shards"][shard]["file"])
  source = grain.sources.ArrayRecordDataSource([path])
  records = [edit(i, convert.decode_step(source[i])) for i in range(len(source))]
  del source
  writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
  for r in records:
    writer.write(convert.encode_step(r))
  writer.close()
  meta["shards"][shard]["sha256"] = convert._sha256(path)
  with open(os.path.join(out_dir, "meta.json"), "w") as f:
    json.dump(meta, f)


def test_inspect_verify_names_every_bad_record(converted):
  """Old: inspect decoded the first image only and called damaged data clean (no --verify)."""
  clean = inspect.inspect(converted, verify=True)["verify"]
  assert clean["ok"] and clean["records"] == 24 and clean["problems"] == 0

  def damage(i, record):
    if i == 1:
      record["image"] = record["image"][:40]
    if i == 2:
      record["action"] = np.array([np.nan, 0.0], np.float32)
    if i == 3:
      record["step"] = 0
    return record

  _rewrite_shard(converted, 1, damage)
  summary = inspect.inspect(converted, verify=True)
  result = summary["verify"]
  assert not result["ok"] and result["problems"] == 3
  assert result["listed"][0].startswith(
    "part-00001-of-00002.array_record record 1 (episode 3 step 1): undecodable image"
  )
  assert result["listed"][1].startswith(
    "part-00001-of-00002.array_record record 2 (episode 3 step 2): non-finite action"
  )
  assert result["listed"][2] == (
    "episodes.npz: 1 records disagree with the index, first: part-00001-of-00002"
    ".array_record record 3 (episode 3 step 0): episodes.npz says episode 3 step 3"
  )
  assert inspect.failures(summary)[0] == 3
  assert "verify: ok=False" in inspect.format_text(summary)


def test_inspect_verify_checks_shard_checksums(converted):
  with open(os.path.join(converted, "meta.json")) as f:
    meta = json.load(f)
  with open(os.path.join(converted, meta["shards"][0]["file"]), "r+b") as f:
    f.seek(200)
    f.write(b"garbage!")
  result = inspect.inspect(converted, verify=True)["verify"]
  assert not result["ok"]
  assert result["listed"][0] == (
    "part-00000-of-00002.array_record: sha256 differs from meta.json (the file changed after conversion)"
  )


def test_inspect_verify_decodes_the_images_of_a_llava_json(tmp_path):
  """Old (weak): inspect on a LLaVA JSON counted image files, never decoded them."""
  from PIL import Image

  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ok.png")
  (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
  turns = [{"from": "human", "value": "<image>\nQ?"}, {"from": "gpt", "value": "A"}]
  entries = [
    {"id": "a", "image": "ok.png", "conversations": turns},
    {"id": "b", "image": "broken.png", "conversations": turns},
    {"id": "c", "image": "gone.png", "conversations": turns},
  ]
  (tmp_path / "c.json").write_text(json.dumps(entries))
  result = inspect.inspect(str(tmp_path / "c.json"), verify=True)["verify"]
  assert (result["entries"], result["problems"]) == (3, 2)
  assert result["listed"][0].startswith("c.json:b: undecodable image")
  assert result["listed"][1] == f"c.json:c: image file missing: {tmp_path}/gone.png"


def test_inspect_verify_checks_a_converted_vl_corpus(tmp_path):
  from PIL import Image

  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ok.png")
  turns = [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A"}]
  (tmp_path / "c.json").write_text(json.dumps([{"id": i, "image": "ok.png", "conversations": turns} for i in range(3)]))
  out = str(tmp_path / "vl")
  convert_vl.convert_vl(str(tmp_path / "c.json"), "llava_json", out)
  assert inspect.inspect(out, verify=True)["verify"]["ok"]
  _rewrite_shard(out, 0, lambda i, r: dict(r, image=b"\xff\xd8 broken") if i == 1 else r)
  result = inspect.inspect(out, verify=True)["verify"]
  assert result["problems"] == 1 and result["listed"][0].startswith(
    "vl-00000.array_record record 1 (c.json:1#0): undecodable image"
  )


def test_inspect_verify_cli_exits_nonzero_naming_the_problem(converted):
  _rewrite_shard(converted, 0, lambda i, r: dict(r, image=b"") if i == 0 else r)
  run = run_cli("genvla_jax.data.inspect", f"--data={converted}", "--verify")
  assert run.returncode == cli.EXIT_USER_ERROR, run.stderr[-2000:]
  assert "part-00000-of-00002.array_record record 0 (episode 0 step 0): undecodable image" in run.stdout
  (line,) = run.stderr.strip().splitlines()
  assert line.startswith("error: --verify found 1 problem(s)") and "record 0" in line


# ------------------------------------------------------------------- bad 5: --out and bad input folders


def test_bad_rlds_dir_leaves_an_existing_out_untouched(tmp_path):
  """Old: --out holding an unrecognised meta.json was deleted whole (other files too), then the run
  failed on the bad --rlds_dir."""
  out = tmp_path / "out"
  out.mkdir()
  (out / "meta.json").write_text('{"mine": true}')
  (out / "notes.txt").write_text("keep me")
  with pytest.raises(rlds.DatasetDirError, match="RLDS dataset directory not found"):
    convert.convert(str(tmp_path / "nowhere"), "demo_targets", "val", str(out))
  assert sorted(os.listdir(out)) == ["meta.json", "notes.txt"]


def test_foreign_meta_json_in_out_is_refused(tfr, tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "meta.json").write_text('{"mine": true}')
  for overwrite in (False, True):
    with pytest.raises(convert.OutputDirError, match="holds meta.json not written by the robot converter"):
      convert.convert(tfr, "demo_targets", "val", str(out), overwrite=overwrite)
  assert json.loads((out / "meta.json").read_text()) == {"mine": True}


def test_non_tfds_folder_and_missing_dataset_info_are_one_line_errors(tfr, tmp_path):
  (tmp_path / "plain").mkdir()
  (tmp_path / "plain" / "x.txt").write_text("")
  with pytest.raises(
    rlds.DatasetDirError,
    match=r"plain is not a TFDS prepared dataset: missing "
    r"dataset_info.json and features.json \(give the version directory",
  ):
    convert.convert(str(tmp_path / "plain"), "demo_targets", "val", str(tmp_path / "o1"))
  with pytest.raises(rlds.DatasetDirError, match=r"did you mean .*tfr\?"):
    convert.convert(str(tmp_path), "demo_targets", "val", str(tmp_path / "o3"))  # the parent of a dataset
  os.remove(os.path.join(tfr, "dataset_info.json"))
  with pytest.raises(rlds.DatasetDirError, match=r"missing dataset_info.json \(an incomplete download"):
    convert.convert(tfr, "demo_targets", "val", str(tmp_path / "o2"))
  assert not any(os.path.exists(tmp_path / o) for o in ("o1", "o2", "o3"))
  for error in (rlds.DatasetDirError("x"), convert.OutputDirError("x"), convert.BadRecordError("x")):
    assert isinstance(error, cli.UserError)


def test_unknown_split_and_missing_shard_are_user_errors(tfr, tmp_path):
  with pytest.raises(rlds.UnknownSplitError, match=r"split 'train' not in .*available: \['val'\]"):
    convert.convert(tfr, "demo_targets", "train", str(tmp_path / "o"))
  os.remove(shard_path(tfr))
  with pytest.raises(rlds.DatasetDirError, match="1 of 1 shard files of split 'val' are missing"):
    convert.convert(tfr, "demo_targets", "val", str(tmp_path / "o"))
  assert not os.path.exists(tmp_path / "o")


# ----------------------------------------------------------------- bad 6: provenance of an existing --out


def test_finished_out_of_other_input_is_refused_then_overwritten(demo_dir, tfr, tmp_path):
  """Old: converting into a finished --out returned the old dataset whatever was asked, exit 0."""
  rlds_dir = demo.demo_paths(str(demo_dir)).rlds_dir
  out = tmp_path / "out"
  val = convert.convert(rlds_dir, "demo_targets", "val", str(out))
  (out / "notes.txt").write_text("keep me")
  assert convert.convert(rlds_dir, "demo_targets", "val", str(out)) == val  # same input: reused
  with pytest.raises(convert.OutputDirError, match=r"split 'val' \(asked 'train'\).*--overwrite"):
    convert.convert(rlds_dir, "demo_targets", "train", str(out))
  with pytest.raises(convert.OutputDirError, match=r"source '.*' \(asked '.*tfr'\); source_files"):
    convert.convert(tfr, "demo_targets", "val", str(out))
  train = convert.convert(rlds_dir, "demo_targets", "train", str(out), overwrite=True)
  assert train["num_episodes"] == 24 and train["provenance"]["split"] == "train"
  assert (out / "notes.txt").read_text() == "keep me"
  size = os.path.getsize(os.path.join(rlds_dir, "demo_targets-train.array_record-00000-of-00001"))
  assert train["provenance"] == {
    "source": os.path.abspath(rlds_dir),
    "dataset": "demo_targets",
    "split": "train",
    "converter_version": convert.CONVERTER_VERSION,
    "episodes_per_part": 1000,
    "source_files": train["provenance"]["source_files"],
  }
  assert train["provenance"]["source_files"].startswith(f"1 files, {size} bytes, sha1 ")


def test_partial_out_of_other_input_is_not_resumed(demo_dir, tmp_path):
  """Old: parts of an interrupted run were reused by name, whatever produced them (here: val's first part
  became train's first part)."""
  rlds_dir = demo.demo_paths(str(demo_dir)).rlds_dir
  out = str(tmp_path / "out")
  os.makedirs(out)
  parts = convert.plan(rlds.RLDSDataset(rlds_dir, "val"), 3)
  convert.convert_part(rlds_dir, "val", "demo_targets", parts[0], len(parts), out)  # an interrupted run
  assert os.path.exists(os.path.join(out, "part-00000-of-00002.json"))
  with pytest.raises(
    convert.OutputDirError,
    match=r"unfinished conversion of other input: episodes_per_part 3 "
    r"\(asked 12\); source_files .*; split 'val' \(asked 'train'\)",
  ):
    convert.convert(rlds_dir, "demo_targets", "train", out, episodes_per_part=12)  # also 2 parts
  meta = convert.convert(rlds_dir, "demo_targets", "val", out, episodes_per_part=3)  # same input: resumed
  assert meta["num_episodes"] == 6 and stored_episodes(out) == list(range(6))


def test_conversion_without_provenance_needs_overwrite(demo_dir, tmp_path):
  """A conversion by an older genvla_jax (no provenance recorded): refused, replaced with overwrite (which
  prepare's cache uses)."""
  rlds_dir = demo.demo_paths(str(demo_dir)).rlds_dir
  out = tmp_path / "out"
  convert.convert(rlds_dir, "demo_targets", "val", str(out))
  meta = json.loads((out / "meta.json").read_text())
  del meta["provenance"]
  (out / "meta.json").write_text(json.dumps(meta))
  with pytest.raises(convert.OutputDirError, match="none recorded"):
    convert.convert(rlds_dir, "demo_targets", "val", str(out))
  assert "provenance" in convert.convert(rlds_dir, "demo_targets", "val", str(out), overwrite=True)


def test_finished_out_is_reused_when_the_source_is_gone(demo_dir, tmp_path):
  rlds_dir = str(tmp_path / "src")
  shutil.copytree(demo.demo_paths(str(demo_dir)).rlds_dir, rlds_dir)
  meta = convert.convert(rlds_dir, "demo_targets", "val", str(tmp_path / "out"))
  shutil.rmtree(rlds_dir)
  assert convert.convert(rlds_dir, "demo_targets", "val", str(tmp_path / "out")) == meta
  with pytest.raises(rlds.DatasetDirError):
    convert.convert(rlds_dir, "demo_targets", "train", str(tmp_path / "out"))


# ------------------------------------------------------------------------ weak: convert_vl names the file


def test_convert_vl_errors_name_the_file_and_the_entry(tmp_path):
  """Old: bad JSON, a non-list, malformed entries and a non-parquet file raised errors naming no file."""
  (tmp_path / "bad.json").write_text("{oops")
  with pytest.raises(convert_vl.VLInputError, match=r"bad.json is not valid JSON"):
    convert_vl.convert_vl(str(tmp_path / "bad.json"), "llava_json", str(tmp_path / "o"))
  (tmp_path / "obj.json").write_text('{"a": 1}')
  with pytest.raises(convert_vl.VLInputError, match=r"obj.json: expected a JSON list"):
    convert_vl.convert_vl(str(tmp_path / "obj.json"), "llava_json", str(tmp_path / "o"))
  with pytest.raises(convert_vl.VLInputError, match=r"VL corpus not found: .*missing.json"):
    convert_vl.convert_vl(str(tmp_path / "missing.json"), "llava_json", str(tmp_path / "o"))
  (tmp_path / "x.parquet").write_bytes(b"not parquet")
  with pytest.raises(convert_vl.VLInputError, match=r"x.parquet is not a readable parquet file"):
    convert_vl.convert_vl(str(tmp_path / "x.parquet"), "parquet", str(tmp_path / "o"))
  assert not os.path.exists(tmp_path / "o")
  from PIL import Image

  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ok.png")
  turns = [{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A"}]
  entries = [
    "just a string",
    {"id": "t", "image": "ok.png", "conversations": "not a list"},
    {"id": "u", "image": "ok.png", "conversations": [{"from": "human"}, {"from": "gpt", "value": "A"}]},
    {"id": "ok", "image": "ok.png", "conversations": turns},
  ]
  (tmp_path / "rows.json").write_text(json.dumps(entries))
  meta = convert_vl.convert_vl(str(tmp_path / "rows.json"), "llava_json", str(tmp_path / "o"))
  assert meta["num_examples"] == 1
  assert [s["source"] for s in meta["skipped"]] == ["rows.json:0", "rows.json:t", "rows.json:u"]
  with pytest.raises(convert_vl.BadVLRecordError, match=r"^rows.json:0: lacks 'image'"):
    convert_vl.convert_vl(str(tmp_path / "rows.json"), "llava_json", str(tmp_path / "strict"), on_bad="fail")
  assert not os.path.exists(tmp_path / "strict")
  with pytest.raises(convert_vl.BadVLRecordError, match=r"rows.json: entry 0 \(None\) lacks"):
    vl.load_llava_json(str(tmp_path / "rows.json"))
  with pytest.raises(convert_vl.VLInputError, match=r"holds the conversion of other input: input"):
    convert_vl.convert_vl(str(tmp_path / "obj.json"), "llava_json", str(tmp_path / "o"))


# -------------------------------------------------------- weak: the training path's data errors, first


def test_prepare_checks_every_source_before_converting_any(demo_dir, tmp_path):
  """Old: the first dataset was converted (heavy) before the second's missing folder raised a
  FileNotFoundError / KeyError traceback."""
  config = tiny_config(demo_dir, tmp_path / "cache")
  good = dict(config.data.robot[0])
  config.data.robot = [good, dict(good, path="no_such_dataset/1.0.0")]
  with pytest.raises(
    prepare.DataConfigError,
    match=r"config.data.robot entry 'demo_targets' \(data.rlds_root="
    r".*path=no_such_dataset/1.0.0\): RLDS dataset directory not found",
  ):
    prepare.prepare(config.data)
  assert not os.path.exists(tmp_path / "cache" / "converted")
  plain = tmp_path / "rlds" / "plain"
  plain.mkdir(parents=True)
  config.data.rlds_root = str(tmp_path / "rlds")
  config.data.robot = [dict(good, path="plain")]
  with pytest.raises(prepare.DataConfigError, match="is not a TFDS prepared dataset"):
    prepare.prepare(config.data)
  config.data.robot = []
  with pytest.raises(prepare.DataConfigError, match="config.data.robot is empty"):
    prepare.prepare(config.data)


# ------------------------------------------------------------------------- one error line from each CLI


def test_data_clis_report_user_errors_in_one_line(tmp_path):
  for module in ("convert", "convert_vl", "inspect", "instruction_aug"):
    with open(os.path.join(ROOT, "genvla_jax", "data", f"{module}.py")) as f:
      source = f.read()
    assert "cli.run(main)" in source and "app.run(" not in source, module
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "keep.txt").write_text("x")
  run = run_cli(
    "genvla_jax.data.convert", f"--rlds_dir={tmp_path}/nowhere", "--dataset=bridge", f"--out={tmp_path}/out"
  )
  assert run.returncode == cli.EXIT_USER_ERROR
  assert run.stderr.strip().splitlines() == [
    f"error: RLDS dataset directory not found: {tmp_path}/nowhere "
    "(give the TFDS version directory, e.g. .../bridge_dataset/1.0.0)"
  ]
  assert os.listdir(tmp_path / "out") == ["keep.txt"]
