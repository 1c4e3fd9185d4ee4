r"""Exports a genvla_jax checkpoint to a Hugging Face PaliGemma directory (safetensors + config.json).

  python -m genvla_jax.tools.export_hf --workdir=RUN --out=DIR [--step=N] [--dtype=bfloat16] \
      [--tower=trained|frozen]

The run's SentencePiece tokenizer goes with it (`tokenizer.model` + `tokenizer_config.json`: transformers'
GemmaTokenizer, whose special ids pad 0 / eos 1 / bos 2 / unk 3 are ours), so a later run starts from the
directory exactly as from a released PaliGemma: `config.pretrained = {format: "hf", path: DIR}` and
`config.tokenizer.path = DIR/tokenizer.model`.

A LoRA run (config.lora) exports its merged kernels W + (alpha / r) A B (the policy's restore merges them;
an adapters-only checkpoint gets its frozen base rebuilt first, training/frozen_base.py): plain PaliGemma weights
that compute what the run's model computes with its adapters (tests/test_lora.py checks the logits in
transformers).

PaliGemma has one image tower. For a dual-encoder run, --tower picks which copy is exported and the
projector's matching half is used; that model differs from the dual one (it sees one tower's features),
so the exported checkpoint is for reuse elsewhere, not for reproducing the policy's outputs.
"""

import json
import os
import shutil

from absl import flags
import jax
import numpy as np

from genvla_jax import cli, config_lib
from genvla_jax.inference import policy as policy_lib
from genvla_jax.pretrained import hf
from genvla_jax.tokenizers import text

FLAGS = flags.FLAGS


def single_tower(params, tower: str = "trained"):
  """Dual-encoder params -> single-tower params using one tower and its half of the projector
  (scaled by 2, the inverse of surgery.make_dual's split). Single-tower params pass through."""
  if "img_frozen" not in params:
    return params
  params = dict(params)
  frozen = params.pop("img_frozen")
  kernel = params["projector"]["kernel"]  # [2W, E]: [frozen half; trained half]
  half = kernel.shape[0] // 2
  part = kernel[:half] if tower == "frozen" else kernel[half:]
  if tower == "frozen":
    params["img"] = frozen
  params["projector"] = dict(params["projector"], kernel=2 * part)
  return params


def export_run(workdir: str, out: str, step: int | None = None, dtype: str | None = None, tower: str = "trained"):
  policy = policy_lib.Policy.from_workdir(workdir, step)
  params = single_tower(jax.device_get(policy.params), tower)
  params = jax.tree.map(lambda x: np.asarray(x, np.float32) if dtype is None else np.asarray(x), params)
  hf.export(params, config_lib.upgrade(policy.config).model, out, dtype=dtype)
  write_tokenizer(os.path.join(workdir, "assets", "tokenizer.model"), out)


def write_tokenizer(sentencepiece_model: str, out: str) -> None:
  """Copies the run's SentencePiece model into an exported directory with the files transformers'
  AutoTokenizer reads for it (GemmaTokenizer: BOS added, as PaliGemma's prompt has it)."""
  if not os.path.isfile(sentencepiece_model):
    raise cli.UserError(f"{sentencepiece_model} is missing: the run directory has no tokenizer to export")
  shutil.copyfile(sentencepiece_model, os.path.join(out, "tokenizer.model"))
  sp = text.TextTokenizer(sentencepiece_model).sp
  pieces = dict(pad_token=sp.pad_id(), eos_token=sp.eos_id(), bos_token=sp.bos_id(), unk_token=sp.unk_id())
  special = {name: sp.id_to_piece(i) for name, i in pieces.items()}
  with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
    json.dump(dict(tokenizer_class="GemmaTokenizer", add_bos_token=True, add_eos_token=False, **special), f, indent=1)
  with open(os.path.join(out, "special_tokens_map.json"), "w") as f:
    json.dump(special, f, indent=1)


def main(argv):
  del argv
  export_run(cli.run_dir(), FLAGS.out, FLAGS.step, FLAGS.dtype, FLAGS.tower)
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  cli.define_run_dir_flag("genvla_jax run directory")
  flags.DEFINE_string("out", None, "output directory", required=True)
  flags.DEFINE_integer("step", None, "checkpoint step (default: latest)")
  flags.DEFINE_string("dtype", None, "cast tensors, e.g. bfloat16 (default: as stored)")
  flags.DEFINE_enum("tower", "trained", ["trained", "frozen"], "dual encoder: which tower to export")
  cli.run(main)
