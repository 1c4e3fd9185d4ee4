"""Instruction augmentation: training instructions replaced by paraphrases from a per-task table.

The paper trains its π0 baseline with it (config.data.instruction_aug = dict(path, prob)). The table
is a JSON object {instruction: [paraphrase, ...]} (exact instruction text as in the dataset, after
stripping whitespace). Each robot example keeps its instruction with probability 1 - prob, else gets
one of its paraphrases, chosen by the example's own random generator (so a resumed run replays the same
choices). Instructions absent from the table stay as they are; the batch field `paraphrased` says
which rows were changed, and training logs the fraction (metric `paraphrased_fraction`), so a table
that does not match the data shows up as 0 rather than passing silently.

Tables for the project's own tasks come with their data (demo.py, sim_record.py write
`paraphrases.json`, wordings distinct from the tabletop's held-out evaluation paraphrases); for OXE
data, `python -m genvla_jax.data.instruction_aug --data=CONVERTED_DIR --out=table.json` lists every
instruction of a converted dataset with empty paraphrase lists to fill in (by hand or with a language
model).
"""

import json
import os

from absl import flags
import numpy as np

from genvla_jax import cli


class TableError(cli.UserError, ValueError):
  """A paraphrase table, its config or its dataset cannot be used: names the file / key and the fix."""


def load_table(path: str) -> dict[str, list[str]]:
  """-> {instruction: [paraphrases]}; errors name the file and the offending entry."""
  path = os.path.expanduser(path)
  try:
    with open(path) as f:
      table = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise TableError(f"instruction paraphrase table {path}: cannot read it as JSON ({e})") from e
  if not isinstance(table, dict):
    raise TableError(
      f"instruction paraphrase table {path}: expected a JSON object "
      "{instruction: [paraphrases]}, got " + type(table).__name__
    )
  clean = {}
  for instruction, paraphrases in table.items():
    if not isinstance(paraphrases, list) or not all(isinstance(p, str) and p.strip() for p in paraphrases):
      raise TableError(
        f"instruction paraphrase table {path}: entry {instruction!r} must be a list of "
        f"non-empty strings, got {paraphrases!r}"
      )
    if paraphrases:
      clean[instruction.strip()] = [p.strip() for p in paraphrases]
  return clean


class InstructionAugmenter:
  """instruction, np.random.Generator -> (instruction or a paraphrase, whether it was replaced)."""

  def __init__(self, table: dict[str, list[str]], prob: float):
    if not 0.0 <= prob <= 1.0:
      raise TableError(f"data.instruction_aug.prob must be in [0, 1], got {prob}")
    self.table, self.prob = table, prob

  def __call__(self, instruction: str, rng: np.random.Generator) -> tuple[str, bool]:
    options = self.table.get(instruction.strip())
    if not options or rng.random() >= self.prob:
      return instruction, False
    return options[int(rng.integers(len(options)))], True


def from_config(data_config) -> InstructionAugmenter | None:
  """config.data.instruction_aug -> augmenter, or None when off (prob 0)."""
  aug = data_config.instruction_aug
  if not aug.prob:
    return None
  if not aug.path:
    raise TableError("data.instruction_aug.prob > 0 needs data.instruction_aug.path (a JSON paraphrase table)")
  return InstructionAugmenter(load_table(aug.path), aug.prob)


def expand(templates: dict[str, list[str]], **values: list[str]) -> dict[str, list[str]]:
  """Templated table ({"pick up the {a} cube": ["grab the {a} cube"]}, a=[...]) -> every filled-in
  instruction with its filled-in paraphrases (placeholders absent from a template are ignored)."""
  import itertools

  keys = sorted(values)
  table = {}
  for combo in itertools.product(*(values[k] for k in keys)):
    fill = dict(zip(keys, combo))
    for template, paraphrases in templates.items():
      table[template.format(**fill)] = sorted({p.format(**fill) for p in paraphrases})
  return table


def ensure_table(path: str, table: dict[str, list[str]]) -> str:
  """Writes `table` as JSON at `path` unless the file exists (atomic: temp file + rename)."""
  if not os.path.exists(path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump(table, f, indent=1)
    os.replace(tmp, path)
  return path


def dataset_instructions(converted_dir: str) -> list[str]:
  """Distinct instructions of a converted robot dataset (data/convert.py output), sorted."""
  import grain
  from genvla_jax.data import convert

  meta = convert._read_json(os.path.join(converted_dir, "meta.json"))
  if meta is None or "num_steps" not in meta:
    raise TableError(
      f"{converted_dir} is not a converted robot dataset (no meta.json of data/convert.py): "
      "give --data=CONVERTED_DIR, the output of `python -m genvla_jax.data.convert`"
    )
  episodes = np.load(os.path.join(converted_dir, "episodes.npz"))
  source = grain.sources.ArrayRecordDataSource([os.path.join(converted_dir, s["file"]) for s in meta["shards"]])
  return sorted({convert.decode_step(source[int(i)])["instruction"].strip() for i in episodes["start"]})


FLAGS = flags.FLAGS


def main(argv):
  del argv
  instructions = dataset_instructions(os.path.expanduser(FLAGS.data))
  existing = load_table(FLAGS.out) if os.path.exists(FLAGS.out) else {}
  table = {i: existing.get(i, []) for i in instructions}
  with open(FLAGS.out, "w") as f:
    json.dump(table, f, indent=1)
  print(f"{len(instructions)} instructions -> {FLAGS.out} ({sum(bool(v) for v in table.values())} with paraphrases)")


if __name__ == "__main__":
  flags.DEFINE_string("data", None, "converted robot dataset directory (data/convert.py output)", required=True)
  flags.DEFINE_string("out", None, "paraphrase table JSON to write (existing entries are kept)", required=True)
  cli.run(main)
