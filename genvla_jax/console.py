"""The console commands of an installed package (pyproject.toml, [project.scripts]).

Each runs its module exactly as `python -m MODULE` does (runpy, as `__main__`): the module's own flags,
help, error style (cli.run) and exit status; `genvla-train ARGS` == `python -m genvla_jax.train ARGS`.
tests/test_package.py checks that every module with a `cli.run(main)` has a command here and in the wheel.
"""

import runpy


def _command(module: str):
  def main() -> None:
    runpy.run_module(module, run_name="__main__", alter_sys=True)

  main.module = module
  main.__doc__ = f"python -m {module}"
  return main


train = _command("genvla_jax.train")
eval_ = _command("genvla_jax.eval")
serve = _command("genvla_jax.serve")
predict = _command("genvla_jax.predict")
convert = _command("genvla_jax.data.convert")
convert_vl = _command("genvla_jax.data.convert_vl")
convert_lerobot = _command("genvla_jax.data.convert_lerobot")
inspect = _command("genvla_jax.data.inspect")
instruction_aug = _command("genvla_jax.data.instruction_aug")
sim_record = _command("genvla_jax.data.sim_record")
libero_record = _command("genvla_jax.data.libero_record")
vl_corpus = _command("genvla_jax.data.vl_corpus")
eval_vqa = _command("genvla_jax.eval.vqa")
eval_representation = _command("genvla_jax.eval.representation")
ablate = _command("genvla_jax.tools.ablate")
export_hf = _command("genvla_jax.tools.export_hf")
logits = _command("genvla_jax.tools.logits")
param_count = _command("genvla_jax.tools.param_count")
pretrain_tower = _command("genvla_jax.tools.pretrain_tower")
