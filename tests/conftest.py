"""Test setup: 8 simulated CPU devices, absl flags parsed (grain), a persistent XLA cache, and shared
fixtures (a tiny demo dataset and config generated once per session)."""

import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from absl import flags
import jax
import pytest

flags.FLAGS.mark_as_parsed()
jax.config.update("jax_compilation_cache_dir", os.environ.get("GENVLA_TEST_XLA_CACHE", "/tmp/genvla_xla_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

BRIDGE_SAMPLE = os.path.join(ROOT, "..", "shared", "data", "oxe_samples", "bridge_dataset", "1.0.0")


def tiny_config(demo_dir, cache_dir, arg="demo", config_file="pi0_plus"):
  """The demo config (configs/<config_file>.py:<arg>) at test size: batch 8, a few steps, paths in
  the test's directories."""
  import importlib

  config = importlib.import_module(f"configs.{config_file}").get_config(arg)
  config.data.demo_dir = str(demo_dir)
  config.data.cache_dir = str(cache_dir)
  config.data.batch_size = 8
  config.train.steps = 6
  config.train.log_every = 2
  config.train.checkpoint_every = 3
  config.optimizer.warmup_steps = 2
  return config


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
  from genvla_jax.data import demo

  path = tmp_path_factory.mktemp("demo")
  demo.ensure(str(path), train_episodes=24, val_episodes=6, vl_train=40, vl_val=8)
  return path


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("cache")


@pytest.fixture
def config(demo_dir, cache_dir):
  return tiny_config(demo_dir, cache_dir)


@pytest.fixture(scope="session")
def prepared(demo_dir, cache_dir):
  from genvla_jax.data import prepare

  return prepare.prepare(tiny_config(demo_dir, cache_dir).data)


TABLETOP_RECORD = dict(
  env="tabletop", train_episodes=8, val_episodes=4, vl_train=12, vl_val=4, image_size=48, execution_noise=1.0
)


@pytest.fixture(scope="session")
def recorded(tmp_path_factory):
  """A small tabletop recording (expert demos as RLDS + VL set + tokenizer), shared by the tests."""
  from genvla_jax.data import sim_record

  out = tmp_path_factory.mktemp("tabletop")
  settings = dict(TABLETOP_RECORD)
  sim_record.ensure(str(out), settings.pop("env"), **settings)
  return out


def use_recording(config, recorded, cache_dir):
  """Points a `tabletop` config at the `recorded` fixture, at test sizes (48 px, batch 8)."""
  config.data.sim_dir = str(recorded)
  config.data.sim_record = dict(TABLETOP_RECORD)
  config.model.image_size = 48
  config.data.cache_dir = str(cache_dir)
  config.data.batch_size = 8
