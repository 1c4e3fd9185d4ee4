"""Typed contracts (issue 19, item 6): the policy protocol (inference/protocol.py) that the trained policy and
the scripted experts implement and that the harness and the server use without probing for attributes;
the action-tokenizer protocol, built complete by one registry, each tokenizer with its own grammar."""

import dataclasses

import ml_collections
import numpy as np
import pytest

from genvla_jax.eval import envs as envs_lib, harness
from genvla_jax.inference import protocol
from genvla_jax.serving import server as server_lib
from genvla_jax.tokenizers import actions, bin_actions, fast_actions, grammar, string_actions, text


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, demo_dir, cache_dir):
  """A tiny demo run (string actions, H=1, D=2), trained for 2 steps."""
  from conftest import tiny_config
  from genvla_jax import train

  config = tiny_config(demo_dir, cache_dir)
  config.train.update(steps=2, checkpoint_every=2)
  out = str(tmp_path_factory.mktemp("contracts") / "run")
  train.train(config, out, printer=lambda *a, **k: None)
  return out


@pytest.fixture(scope="module")
def trained(workdir):
  from genvla_jax.inference import policy as policy_lib

  return policy_lib.Policy.from_workdir(workdir)


def test_the_trained_policy_implements_the_protocol(trained):
  assert isinstance(trained, protocol.Policy)
  metadata = trained.metadata
  assert metadata == protocol.PolicyMetadata(
    horizon=1, action_dim=2, state_dim=0, fixed_shapes=True, image_size=32, action_tokenizer="string"
  )
  assert not metadata.uses_state
  with pytest.raises(dataclasses.FrozenInstanceError):
    metadata.horizon = 2
  spec = trained.prompt_spec()
  assert spec.template == trained.config.data.prompt and spec.separator == "\n" and spec.max_text_len == 40
  assert spec.tokenizer is trained.text and spec.state_stats is None  # the demo prompt writes no state


def test_a_prompt_that_writes_the_state_shows_in_metadata_and_prompt_spec(trained):
  import copy

  clone = copy.copy(trained)
  clone.config = ml_collections.ConfigDict(trained.config.to_dict())
  clone.config.data.prompt = "What action should the robot take to {instruction}? State: {state}"
  assert clone.metadata.uses_state and clone.metadata.state_dim == len(trained.state_stats["mean"]) == 2
  assert clone.prompt_spec().state_stats is trained.state_stats


def test_drafts_are_a_constructor_option(workdir, trained):
  from genvla_jax.data import demo
  from genvla_jax.inference import policy as policy_lib

  image = demo.render(demo.random_scene(np.random.default_rng(4)))
  plain = policy_lib.Policy.from_workdir(workdir, draft_previous=False)
  first, _ = plain.act(image, "move to the red square")
  again, _ = plain.act(image, "move to the red square")
  assert plain.draft_stats["drafted"] == 0  # the previous action is never a draft
  np.testing.assert_array_equal(again, first)
  np.testing.assert_array_equal(trained.act(image, "move to the red square")[0], first)  # drafts: same output


def test_the_scripted_expert_implements_the_protocol():
  from genvla_jax.eval.envs import tabletop

  expert = harness.ExpertPolicy([], tabletop.Expert, tabletop.ACTION_DIM)
  assert isinstance(expert, protocol.Policy)
  assert expert.metadata == protocol.PolicyMetadata(horizon=1, action_dim=tabletop.ACTION_DIM)
  assert expert.prompt_spec() is None and not expert.metadata.uses_state


class _Env:
  """The environment protocol (eval/envs): a 4-value state, success after 3 steps."""

  def reset(self, task, seed, protocol_name):
    self.episode = envs_lib.Episode(task, seed, protocol_name, "reach the goal")
    return self._observation()

  def step(self, action):
    assert action.shape == (3,)
    self.episode.steps += 1
    self.episode.success = self.episode.steps >= 3
    return self._observation(), self.episode.success, self.episode.success

  def close(self):
    pass

  def _observation(self):
    state = np.full(4, self.episode.steps, np.float32)
    return {"image": np.zeros((8, 8, 3), np.uint8), "state": state, "instruction": self.episode.instruction}


def _stub_policy(log: list):
  """A policy with the protocol's members and nothing else: it takes a 4-value state and fixed shapes,
  and, like the trained policy, refuses to act without the state it needs."""

  class Stub:
    metadata = protocol.PolicyMetadata(horizon=2, action_dim=3, state_dim=4, fixed_shapes=True)

    def act(self, images, instructions, *, states=None, full_width=False):
      if states is None:
        raise ValueError("this policy takes the robot state: pass act(..., states=[B,S])")
      log.append(("act", np.asarray(states).shape, full_width))
      return np.zeros((len(images), 2, 3), np.float32), np.ones((len(images), 2, 3), bool)

    def reset(self):
      log.append(("reset",))

    def prompt_spec(self):
      return None

  return Stub()


def test_the_harness_needs_only_the_protocol():
  """The old harness probed `uses_state` / `fixed_shapes` attributes: a protocol-only policy got no
  states (it raised) and no full_width."""
  log = []
  policy = _stub_policy(log)
  assert isinstance(policy, protocol.Policy)
  results = harness.run(
    policy,
    _Env,
    tasks=["reach"],
    protocols=["visual_matching"],
    episodes_per_task=3,
    num_envs=2,
    execute_steps=2,
    printer=lambda *a, **k: None,
  )
  assert [(r.seed, r.success, r.steps) for r in results] == [(0, True, 3), (1, True, 3), (2, True, 3)]
  acts = [entry for entry in log if entry[0] == "act"]
  assert acts and all(full_width for _, _, full_width in acts)
  assert [shape for _, shape, _ in acts] == [(2, 4), (2, 4), (1, 4), (1, 4)]  # 2 re-plans per group
  assert [entry[0] for entry in log].count("reset") == 2  # once per group


def test_the_harness_says_when_a_chunk_is_shorter_than_execute_steps():
  """A policy whose chunks (2 actions) are shorter than execute_steps (3) re-plans after 2: said once."""
  lines = []
  kwargs = dict(tasks=["reach"], protocols=["visual_matching"], episodes_per_task=2, num_envs=1)
  harness.run(_stub_policy([]), _Env, execute_steps=3, printer=lambda line, **k: lines.append(line), **kwargs)
  short = [line for line in lines if "fewer than execute_steps=3" in line]
  assert short == [
    "[eval] the policy returns chunks of 2 action(s), fewer than execute_steps=3: 2 executed per plan "
    "(it re-plans more often than the protocol says)"
  ]
  lines.clear()
  harness.run(_stub_policy([]), _Env, execute_steps=2, printer=lambda line, **k: lines.append(line), **kwargs)
  assert not [line for line in lines if "execute_steps" in line]


def test_the_server_needs_only_the_protocol():
  """The server takes the state size from the metadata and resets the policy before every batch."""
  from genvla_jax.serving import msgpack_numpy
  from test_serve import _Running

  log = []
  srv = server_lib.PolicyServer(_stub_policy(log), {"action_horizon": 2})
  assert srv.state_dim == 4 and srv.check_prompt is None
  running = _Running(srv)
  try:
    with running.client() as c:
      reply = c.infer({"image": np.zeros((8, 8, 3), np.uint8), "prompt": "go", "state": np.arange(4.0)})
      assert reply["actions"].shape == (2, 3)
      bad = c.send_raw(msgpack_numpy.packb({"image": np.zeros((8, 8, 3), np.uint8), "prompt": "go"}))
      assert isinstance(bad, str) and "takes the robot state" in bad
  finally:
    running.close()
  assert log == [("reset",), ("act", (1, 4), True)]


# ---- action tokenizers


@pytest.fixture(scope="module")
def vocabulary(demo_dir, cache_dir, tmp_path_factory):
  """(config.tokenizer of the demo config with H=4, its text tokenizer, model vocab size, a FAST BPE)."""
  from conftest import tiny_config
  from genvla_jax.data import demo

  config = tiny_config(demo_dir, cache_dir)
  config.tokenizer.action_horizon = 4
  bpe = str(tmp_path_factory.mktemp("fast") / "bpe.model")
  fast_actions.train_bpe(_smooth_chunks(500, 0), bpe, 4, vocab_size=200)  # the demo vocabulary has 256 spare ids
  text_tokenizer = text.TextTokenizer(demo.demo_paths(str(demo_dir)).tokenizer)
  return config.tokenizer, text_tokenizer, config.model.llm.vocab_size, bpe


def _smooth_chunks(n: int, seed: int) -> np.ndarray:
  """[n,4,3] in [-1,1]: a start value per dimension plus a small drift (robot-like chunks)."""
  rng = np.random.default_rng(seed)
  return np.clip(rng.uniform(-0.8, 0.8, (n, 1, 3)) + rng.normal(0, 0.06, (n, 4, 3)), -1, 1)


def _old_grammar(tok, tok_config, text_tokenizer, vocab_size, bpe):
  """What the old `actions.make_grammar` gave (its isinstance chain; FAST with first_id patched after
  construction, as the old make_action_tokenizer did)."""
  if isinstance(tok, string_actions.StringActionTokenizer):
    c = tok.codec
    return grammar.string_action_grammar(tok.text, c.horizon, c.dim, c.decimals)
  if isinstance(tok, bin_actions.BinActionTokenizer):
    return grammar.bin_action_grammar(tok.first_id, tok.num_bins, tok.horizon * tok.dim, tok.eos_id)
  old = fast_actions.FastActionTokenizer(bpe, 4, 3, 0, text_tokenizer.eos_id, tok_config.fast_scale)
  old.first_id = vocab_size - old.num_pieces
  return old.grammar()


@pytest.mark.parametrize("name", sorted(actions.TOKENIZERS))
def test_the_registry_builds_each_tokenizer_complete_with_its_grammar(vocabulary, name):
  tok_config, text_tokenizer, vocab_size, bpe = vocabulary
  tok_config = ml_collections.ConfigDict(tok_config.to_dict())
  tok_config.action = name
  tok = actions.make_action_tokenizer(tok_config, text_tokenizer, vocab_size, 3, bpe)
  assert isinstance(tok, actions.ActionTokenizer)
  g, old = tok.grammar(), _old_grammar(tok, tok_config, text_tokenizer, vocab_size, bpe)
  np.testing.assert_array_equal(g.token_ids, old.token_ids)
  np.testing.assert_array_equal(g.next_state, old.next_state)
  np.testing.assert_array_equal(g.accepting, old.accepting)
  assert g.eos_id == old.eos_id == text_tokenizer.eos_id
  assert actions.make_grammar(tok).token_ids.tolist() == g.token_ids.tolist()  # the alias
  for chunk in _smooth_chunks(5, 1):  # not the BPE's training chunks
    ids, clipped = tok.encode(chunk)
    assert clipped == 0 and g.accepts(ids + [g.eos_id]) and old.accepts(ids + [g.eos_id])
    assert len(ids) < tok.max_decode_len()
    decoded, valid = tok.decode(ids + [g.eos_id])
    assert decoded.shape == valid.shape == (4, 3) and valid.all()
  if name == "fast":  # the id block is resolved before construction (it was patched in afterwards)
    assert tok.first_id == vocab_size - fast_actions.bpe_size(bpe)
    assert all(tok.first_id < i < vocab_size for i in tok.encode(np.zeros((4, 3)))[0])


def test_the_registry_names_every_action_kind(vocabulary):
  tok_config, text_tokenizer, vocab_size, _ = vocabulary
  tok_config = ml_collections.ConfigDict(tok_config.to_dict())
  assert actions.ACTIONS == ("string", "bins", "fast", "flow")
  tok_config.action = "flow"
  assert actions.make_action_tokenizer(tok_config, text_tokenizer, vocab_size, 3) is None  # π0: no tokens
  tok_config.action = "digits"
  with pytest.raises(ValueError, match="unknown tokenizer.action 'digits'"):
    actions.make_action_tokenizer(tok_config, text_tokenizer, vocab_size, 3)
  tok_config.action = "fast"
  with pytest.raises(ValueError, match="needs the BPE"):
    actions.make_action_tokenizer(tok_config, text_tokenizer, vocab_size, 3)
