"""A run directory written by the code before the issue-18/19 redesign (commit f0e9a2a; made by
tests/fixtures/make_run_f0e9a2a.py) restores with today's code and computes what that code computed: the same
model inputs (pixel for pixel, token for token), the same logits (within float32 rounding), the same actions.
Parameter names, checkpoint layout, config upgrade and preprocessing all have to stay compatible for this."""

import os
import shutil

import numpy as np

from conftest import ROOT
from genvla_jax.inference import policy as policy_lib
import tolerances

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "run_f0e9a2a")


def test_a_run_written_before_the_redesign_restores_and_acts_identically(tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(FIXTURE, workdir)  # readers must not write, but a test never risks the fixture
  expected = dict(np.load(FIXTURE + "_expected.npz"))
  policy = policy_lib.Policy.from_workdir(str(workdir))
  assert policy.step == 2
  instructions = [str(s) for s in expected["instructions"]]
  pixels, tokens, mask = policy.prepare_inputs(expected["images"], instructions)
  np.testing.assert_array_equal(pixels, expected["pixels"])
  np.testing.assert_array_equal(tokens, expected["tokens"])
  np.testing.assert_array_equal(mask, expected["input_mask"])
  logits = np.asarray(policy.model.apply({"params": policy.params}, pixels, tokens, mask, np.zeros_like(mask)))
  llm = dict(policy.config.model.llm)
  terms = tolerances.transformer_terms(llm, logits.shape[1] + 16) + llm["width"]  # + the vocabulary projection
  _, atol = tolerances.float_tol(np.float32, terms, scale=float(np.abs(expected["logits"]).max()))
  np.testing.assert_allclose(logits, expected["logits"], rtol=0, atol=atol)
  actions, valid = policy.act(expected["images"], instructions)
  np.testing.assert_array_equal(actions, expected["actions"])
  np.testing.assert_array_equal(valid, expected["valid"])
