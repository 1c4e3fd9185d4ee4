"""Config files by path or by name, from a checkout or from an installed wheel.

The config files live in the repository's top-level `configs/`; the wheel ships them as `genvla_jax/configs`
(pyproject.toml). A `--config=PATH[:ARG]` whose PATH does not exist (relative to the working directory) but
names a shipped file -- `configs/pi0_plus.py`, `pi0_plus.py` or `pi0_plus` -- loads the shipped one, so the
README's commands work from any directory once installed. An existing PATH always wins.

cli.run applies `resolve` to every config-file flag of every command (ml_collections' DEFINE_config_file),
and tools/ablate.py finds its configs here.
"""

import os

from absl import flags

_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def config_dir() -> str | None:
  """The shipped config files: genvla_jax/configs of an installed wheel, else the checkout's configs/."""
  for path in (os.path.join(_PACKAGE, "configs"), os.path.join(os.path.dirname(_PACKAGE), "configs")):
    if os.path.isdir(path):
      return path
  return None


def names() -> list[str]:
  """The shipped config files' names (`pi0_plus.py`, ...)."""
  found = config_dir()
  return sorted(f for f in os.listdir(found) if f.endswith(".py") and not f.startswith("_")) if found else []


def shipped(name: str) -> str | None:
  """The shipped file `name` names (`configs/x.py`, `x.py` or `x`), or None."""
  found = config_dir()
  head, base = os.path.split(os.path.normpath(name))
  if not found or head not in ("", "configs") or not base:
    return None
  path = os.path.join(found, base if base.endswith(".py") else base + ".py")
  return path if os.path.isfile(path) else None


def resolve(spec: str) -> str:
  """'PATH[:ARG]' -> the same with PATH replaced by the shipped file it names when PATH does not exist."""
  path, sep, arg = spec.partition(":")
  if not path or os.path.exists(os.path.expanduser(path)):
    return spec
  found = shipped(path)
  return found + sep + arg if found else spec


class ResolvingParser(flags.ArgumentParser):
  """A config-file flag's parser (ml_collections' ConfigFileFlagParser) that resolves its argument first."""

  def __init__(self, inner):
    self.inner = inner

  def parse(self, argument):
    return self.inner.parse(resolve(argument) if isinstance(argument, str) else argument)

  def flag_type(self):
    return self.inner.flag_type()


def resolve_config_flags(flag_values=flags.FLAGS) -> None:
  """Makes every config-file flag of `flag_values` resolve its value (and a default that names a shipped
  file, parsed again). Called by cli.run before the command line is parsed."""
  from ml_collections.config_flags import config_flags  # the module: its parser class is not re-exported

  for name in list(flag_values):
    flag = flag_values[name]
    if not isinstance(flag.parser, config_flags.ConfigFileFlagParser):
      continue
    flag.parser = ResolvingParser(flag.parser)
    default = getattr(flag, "default_unparsed", None)
    if isinstance(default, str) and resolve(default) != default:
      flag_values.set_default(name, default)
