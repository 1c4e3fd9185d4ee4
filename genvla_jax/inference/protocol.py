"""The policy interface: all that the closed-loop harness, the offline metrics and the server rely on.

A policy maps camera frames + instructions (+ robot states) to action chunks in the robot's units.
Implementations: `inference/policy.Policy` (a trained run), `eval/harness.ExpertPolicy` (a simulator's
scripted expert), and test stand-ins. Callers read `metadata` and call `act`, `reset` and `prompt_spec`;
they never look for other attributes. Imports nothing heavy (eval and serving import it).
"""

import dataclasses
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
  from genvla_jax.tokenizers import text


@dataclasses.dataclass(frozen=True)
class PolicyMetadata:
  """What a policy takes and returns, fixed for its lifetime."""

  horizon: int  # H: actions per chunk
  action_dim: int  # D: values per action
  state_dim: int = 0  # S: robot-state values act() needs per row; 0: it takes no state
  fixed_shapes: bool = False  # act(full_width=True) pads prompts to one width: one compile per batch size
  image_size: int = 0  # side the policy resizes frames to; 0: not a fixed size
  action_tokenizer: str = ""  # a trained run's config.tokenizer.action ("string", "bins", "fast", "flow"); else ""
  # the cameras act() takes per row, in order, by name ("" where unnamed); () or one: images [B,H,W,3];
  # several: images [B,C,H,W,3] and image_mask [B,C]
  cameras: tuple[str, ...] = ()

  @property
  def num_cameras(self) -> int:
    """Frames per row act() takes (1: images [B,H,W,3]; more: [B,C,H,W,3] + image_mask)."""
    return max(1, len(self.cameras))

  @property
  def uses_state(self) -> bool:
    """True when act() needs `states` [B,S]."""
    return self.state_dim > 0


@dataclasses.dataclass(frozen=True)
class PromptSpec:
  """How act() turns one instruction (+ state) into the model's prompt, so that a server can refuse a
  request before it joins a batch: `preprocess.robot_prompt(template, instruction, normalized state)`,
  tokenized by `prompt.encode_prefix(tokenizer, text, separator)`, at most `max_text_len` tokens."""

  template: str  # config.data.prompt
  separator: str  # config.tokenizer.prompt_separator
  max_text_len: int  # config.tokenizer.max_text_len
  tokenizer: "text.TextTokenizer"  # the policy's own; copy it to use it beside a running act()
  state_stats: dict | None = None  # normalizes the state for templates that write it; None otherwise


@runtime_checkable
class Policy(Protocol):
  """Frames + instructions -> action chunks. `isinstance(x, Policy)` checks the members are present."""

  @property
  def metadata(self) -> PolicyMetadata: ...

  def act(self, images, instructions, *, states=None, full_width: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """images uint8 [B,H,W,3] (with several cameras, `metadata.cameras`: [B,C,H,W,3] and the keyword
    image_mask [B,C] bool, False where a row lacks a camera), B instructions, states [B,S] in the robot's
    units (required iff `metadata.uses_state`) -> (actions [B,H,D] float32 in the robot's units, valid
    [B,H,D] bool: False where a value is a fallback, not the policy's output). `full_width`: pad prompts to one width
    (honoured when `metadata.fixed_shapes`)."""
    ...

  def reset(self) -> None:
    """Forget per-episode state (e.g. the previous action used as a draft): call before a new episode,
    and before any call whose rows are unrelated to the previous call's."""
    ...

  def prompt_spec(self) -> PromptSpec | None:
    """The text prompt act() builds, or None for policies without one (scripted experts)."""
    ...
