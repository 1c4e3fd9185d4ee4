"""VL corpora in their published layouts -> ArrayRecord shards: LLaVA JSON + image folder, parquet with
embedded images (LLaVA-OneVision conversations, VQASynth-style messages), bad rows reported or fatal."""

import io
import json

import numpy as np
from PIL import Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from genvla_jax.data import convert_vl, preprocess


def png(seed, size=16):
  buffer = io.BytesIO()
  Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(
    buffer, format="PNG"
  )
  return buffer.getvalue()


def records(out):
  source = convert_vl.VLSource(str(out))
  return [source[i] for i in range(len(source))]


def test_llava_json_multi_turn_and_missing_image(tmp_path):
  (tmp_path / "img").mkdir()
  (tmp_path / "img" / "a.png").write_bytes(png(0))
  entries = [
    {
      "id": "a",
      "image": "img/a.png",
      "conversations": [
        {"from": "human", "value": "<image>\nWhere is the cup?"},
        {"from": "gpt", "value": "[(0.31, 0.75)]"},
        {"from": "human", "value": "And the plate?"},
        {"from": "gpt", "value": "<point>12 40</point>"},
      ],
    },
    {
      "id": "b",
      "image": "img/missing.png",
      "conversations": [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}],
    },
  ]
  (tmp_path / "d.json").write_text(json.dumps(entries))
  meta = convert_vl.convert_vl(str(tmp_path / "d.json"), "llava_json", str(tmp_path / "out"), records_per_shard=1)
  assert (meta["num_examples"], meta["num_conversations"], len(meta["shards"])) == (2, 1, 2)
  assert meta["skipped"] == [{"source": "d.json:b", "reason": f"image file missing: {tmp_path}/img/missing.png"}]
  got = records(tmp_path / "out")
  assert [(r["question"], r["answer"]) for r in got] == [
    ("Where is the cup?", "[(0.31, 0.75)]"),
    ("And the plate?", "<point>12 40</point>"),
  ]
  assert got[0]["image"] == png(0) and got[1]["source"] == "d.json:a#1"
  with pytest.raises(convert_vl.BadVLRecordError, match="d.json:b: image file missing"):
    convert_vl.convert_vl(str(tmp_path / "d.json"), "llava_json", str(tmp_path / "strict"), on_bad="fail")


def test_parquet_conversations_and_messages_styles(tmp_path):
  onevision = pa.table(
    {
      "id": ["ov0", "ov1", "ov2"],
      "image": [
        {"bytes": png(1), "path": "x.png"},
        {"bytes": b"not an image", "path": "y.png"},
        {"bytes": png(2), "path": "z.png"},
      ],
      "conversations": [
        [{"from": "human", "value": "<image>\nHow many?"}, {"from": "gpt", "value": "3"}],
        [{"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}],
        [{"from": "human", "value": "only a question"}],
      ],
    }
  )
  pq.write_table(onevision, tmp_path / "ov-00000.parquet")
  pq.write_table(onevision.slice(0, 1), tmp_path / "ov-00001.parquet")
  meta = convert_vl.convert_vl(str(tmp_path / "ov-*.parquet"), "parquet", str(tmp_path / "ov"))
  assert meta["num_examples"] == 2 and [s["source"] for s in meta["skipped"]] == [
    "ov-00000.parquet:ov1",
    "ov-00000.parquet:ov2",
  ]
  assert meta["skipped"][0]["reason"].startswith("undecodable image")
  assert [r["answer"] for r in records(tmp_path / "ov")] == ["3", "3"]

  spatial = pa.table(
    {
      "images": [[{"bytes": png(3), "path": None}]],
      "messages": [
        [
          {
            "role": "user",
            "content": [{"type": "image", "text": None}, {"type": "text", "text": "How far is the mug from the bowl?"}],
          },
          {"role": "assistant", "content": [{"type": "text", "text": "About 0.42 meters."}]},
        ]
      ],
    }
  )
  pq.write_table(spatial, tmp_path / "spatial.parquet")
  meta = convert_vl.convert_vl(str(tmp_path / "spatial.parquet"), "parquet", str(tmp_path / "sp"))
  (record,) = records(tmp_path / "sp")
  assert (record["question"], record["answer"]) == ("How far is the mug from the bowl?", "About 0.42 meters.")
  assert preprocess.decode_image(record["image"]).shape == (16, 16, 3)


def test_unknown_format_and_empty_corpus(tmp_path):
  with pytest.raises(ValueError, match="unknown VL format"):
    convert_vl.convert_vl("x", "csv", str(tmp_path / "o"))
  (tmp_path / "e.json").write_text("[]")
  with pytest.raises(ValueError, match="no usable examples"):
    convert_vl.convert_vl(str(tmp_path / "e.json"), "llava_json", str(tmp_path / "o2"))


def test_inspect_converted_vl(tmp_path):
  from genvla_jax.data import inspect

  pq.write_table(
    pa.table(
      {
        "image": [{"bytes": png(5), "path": "a"}],
        "conversations": [[{"from": "human", "value": "Q?"}, {"from": "gpt", "value": "A"}]],
      }
    ),
    tmp_path / "c.parquet",
  )
  convert_vl.convert_vl(str(tmp_path / "c.parquet"), "parquet", str(tmp_path / "o"))
  summary = inspect.inspect(str(tmp_path / "o"))
  assert (summary["examples"], summary["format"], summary["image"]["shape"]) == (1, "parquet", [16, 16, 3])
  assert summary["first_examples"] == [{"question": "Q?", "answer": "A"}]
