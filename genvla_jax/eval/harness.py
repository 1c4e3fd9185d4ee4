"""Closed-loop evaluation: several environments stepped together, one batched policy call per re-plan.

For each protocol and task, episodes with seeds seed, seed+1, ... run in groups of `num_envs`
environments. Every re-plan, the still-running environments' observations go to the policy in one
batch; each gets an action chunk [H,D] of which the first `execute_steps` actions are executed (then
the policy is asked again: receding horizon). An episode ends on success or after the environment's
`max_steps`. Frames of the first `video_episodes` episodes of each (protocol, task) are kept for
videos (eval/report.py writes them).

The policy is an `inference.protocol.Policy` acting in the environment's action units
(`inference.policy.Policy`, `ExpertPolicy` below): `reset()` before each group (speculative drafts must
not leak between episodes); act() gets `states` [B,S] from the observations' "state" when
`metadata.uses_state`, and `full_width=metadata.fixed_shapes` (prompts padded to one width, so a batch
size compiles once instead of once per instruction length). Nothing else of the policy is read.
"""

import dataclasses
import time

import numpy as np

from genvla_jax.inference import protocol as policy_protocol


@dataclasses.dataclass
class EpisodeResult:
  protocol: str
  task: str
  seed: int
  instruction: str
  success: bool
  steps: int
  variant: str = ""
  invalid_fields: int = 0  # action fields the policy could not parse (executed as fallback)
  frames: list | None = None  # uint8 [S,S,3] per step, for videos (not serialised)


def run(
  policy: policy_protocol.Policy,
  make_env,
  *,
  tasks,
  protocols,
  episodes_per_task: int,
  num_envs: int = 4,
  execute_steps: int = 1,
  seed: int = 0,
  video_episodes: int = 1,
  printer=print,
) -> list[EpisodeResult]:
  """-> one EpisodeResult per episode (protocols x tasks x episodes_per_task)."""
  envs = [make_env() for _ in range(num_envs)]
  results, started, notices = [], time.perf_counter(), set()
  total = len(protocols) * len(tasks) * episodes_per_task
  try:
    for protocol in protocols:
      for task in tasks:
        seeds = [seed + i for i in range(episodes_per_task)]
        for group_start in range(0, len(seeds), num_envs):
          group = seeds[group_start : group_start + num_envs]
          keep_video = [group_start + i < video_episodes for i in range(len(group))]
          results += _run_group(
            policy, envs[: len(group)], task, protocol, group, execute_steps, keep_video, notices, printer
          )
          done = len(results)
          rate = np.mean([r.success for r in results if r.protocol == protocol and r.task == task])
          elapsed = time.perf_counter() - started
          printer(
            f"[eval] {done}/{total} episodes | {protocol}/{task}: success {rate:.2f} so far | "
            f"{elapsed:.0f}s, ETA {elapsed / done * (total - done):.0f}s",
            flush=True,
          )
  finally:
    for env in envs:
      env.close()
  return results


def _run_group(
  policy: policy_protocol.Policy, envs, task, protocol, seeds, execute_steps, keep_video, notices=None, printer=print
) -> list[EpisodeResult]:
  """One batch of episodes. `notices`: the set of things already said once (a chunk shorter than execute_steps)."""
  policy.reset()
  metadata = policy.metadata
  observations = [env.reset(task, s, protocol) for env, s in zip(envs, seeds)]
  frames = [[_video_frame(o["image"])] if keep else None for o, keep in zip(observations, keep_video)]
  done = [False] * len(envs)
  invalid = [0] * len(envs)
  while not all(done):
    # every environment stays in the batch until all are done, so the policy's rows (and its per-row
    # drafts) keep their meaning; finished ones are simply not stepped
    states = np.stack([o["state"] for o in observations]) if metadata.uses_state else None
    actions, valid = policy.act(
      np.stack([o["image"] for o in observations]),
      [o["instruction"] for o in observations],
      states=states,
      full_width=metadata.fixed_shapes,
    )
    actions = np.asarray(actions)
    if actions.ndim != 3 or actions.shape[0] != len(envs):
      raise ValueError(f"policy returned actions of shape {actions.shape}; expected [{len(envs)},H,D]")
    for i in range(len(envs)):
      if not done[i]:
        invalid[i] += int((~np.asarray(valid[i], bool)).sum())
    if actions.shape[1] < execute_steps and notices is not None and "short_chunk" not in notices:
      notices.add("short_chunk")
      printer(
        f"[eval] the policy returns chunks of {actions.shape[1]} action(s), fewer than execute_steps={execute_steps}: "
        f"{actions.shape[1]} executed per plan (it re-plans more often than the protocol says)",
        flush=True,
      )
    for j in range(min(execute_steps, actions.shape[1])):
      stepping = [i for i in range(len(envs)) if not done[i]]
      for i, result in zip(stepping, _step_together([envs[i] for i in stepping], [actions[i, j] for i in stepping])):
        observations[i], _, done[i] = result
        if frames[i] is not None:
          frames[i].append(_video_frame(observations[i]["image"]))
  return [
    EpisodeResult(
      protocol,
      task,
      s,
      env.episode.instruction,
      bool(env.episode.success),
      env.episode.steps,
      env.episode.variant,
      invalid[i],
      frames[i],
    )
    for i, (env, s) in enumerate(zip(envs, seeds))
  ]


def _step_together(envs, actions) -> list:
  """env.step(action) for each pair -> their results, in order. Environments that split a step (step_async /
  step_wait: simulators in worker processes, eval/envs/libero.py) are all sent their action before any result
  is awaited, so they simulate in parallel; the others step one after another. Same results either way."""
  results = [None] * len(envs)
  waiting = []
  for k, (env, action) in enumerate(zip(envs, actions)):
    if hasattr(env, "step_async"):
      env.step_async(action)
      waiting.append(k)
    else:
      results[k] = env.step(action)
  for k in waiting:
    results[k] = envs[k].step_wait()
  return results


def _video_frame(image):
  """An observation's image as one video frame: [S,S,3] as it is, several cameras [C,S,S,3] side by side."""
  image = np.asarray(image)
  return image if image.ndim == 3 else np.concatenate(list(image), axis=1)


class ExpertPolicy:
  """The environment's scripted expert behind the policy protocol (for checking the harness and the
  protocols: it must reach ~100%). `envs` are the harness's environments, in batch order (row i of a
  batch is envs[i]); the expert reads their privileged state, not the frames."""

  def __init__(self, envs, expert_cls, action_dim: int, horizon: int = 1):
    self.envs, self.expert_cls = envs, expert_cls
    self.metadata = policy_protocol.PolicyMetadata(horizon=horizon, action_dim=action_dim)
    self._experts = {}

  def reset(self):
    self._experts = {}

  def prompt_spec(self) -> None:
    return None  # no text prompt

  def act(self, images, instructions, *, states=None, full_width: bool = False):
    """-> (actions [B,H,D] float32: each row's expert action repeated H times, valid all True)."""
    del instructions, states, full_width
    out = []
    for i in range(len(images)):
      env = self.envs[i]
      key = (i, env.episode.seed, env.episode.task, env.episode.protocol)
      expert = self._experts.setdefault(key, self.expert_cls(env))
      out.append([expert.act()] * self.metadata.horizon)
    actions = np.asarray(out, np.float32)
    return actions, np.ones(actions.shape, bool)
