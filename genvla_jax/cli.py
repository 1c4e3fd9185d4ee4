"""One error style for every command-line tool.

A mistake the user can fix (a mistyped flag or config key, a missing file, a run directory that belongs to
another config, a corrupt input) is printed as ONE line, `error: <culprit and fix>`, and the tool exits
with status 2; `--verbose` adds the traceback. Anything else is a bug and keeps its traceback (exit 1).

  if __name__ == "__main__":
    cli.run(main)          # instead of absl.app.run(main)

Library code raises `UserError` (or a subclass, e.g. `RunDirError`, `CheckpointError`) with a message
that names the culprit (path, key, record) and, where there is one, the fix.
"""

import os
import re
import sys
import traceback

from absl import app, flags

from genvla_jax import config_files

EXIT_USER_ERROR = 2

flags.DEFINE_bool("verbose", False, "print the full traceback of an error (default: one line)")
flags.disclaim_key_flags()  # flags defined below (define_run_dir_flag) belong to the CLI that calls it (--helpshort)


class UserError(Exception):
  """An error the user can fix; its message names the culprit and the fix (printed without traceback)."""


# Errors that are the user's even when raised by libraries: they name the path or the flag themselves.
_USER_ERRORS = (
  UserError,
  app.UsageError,
  FileNotFoundError,
  NotADirectoryError,
  IsADirectoryError,
  PermissionError,
  FileExistsError,
)


def one_line(error: BaseException) -> str:
  """`error: <message>` on one line (long multi-line messages keep their lines; no traceback)."""
  text = str(error).strip() or type(error).__name__
  if isinstance(error, OSError) and error.filename and str(error.filename) not in text:
    text = f"{text}: {error.filename}"
  if isinstance(error, (KeyError,)) and text.startswith(("'", '"')):
    text = text.strip("'\"").replace("\\n", " ")
  return f"error: {text}"


RUN_DIR_FLAG, RUN_DIR_ALIAS = "workdir", "checkpoint"  # one name for a run directory on every command line


def define_run_dir_flag(help_text: str, required: bool = True, flag_values=flags.FLAGS) -> None:
  """--workdir, a run directory (what genvla_jax.train wrote), and --checkpoint, its older spelling (an absl
  alias: both set the same value). Called by each CLI that reads a run, in its `__main__` block."""
  flags.DEFINE_string(
    RUN_DIR_FLAG,
    None if required else "",
    f"{help_text} (canonical name; --{RUN_DIR_ALIAS} is an alias)",
    required=required,
    flag_values=flag_values,
  )
  flags.DEFINE_alias(RUN_DIR_ALIAS, RUN_DIR_FLAG, flag_values=flag_values)


def run_dir(flag_values=flags.FLAGS) -> str:
  """The run directory given (--workdir or --checkpoint), checked before anything is loaded or created:
  UserError naming the flag as it was spelled when it is not a directory."""
  path = flag_values[RUN_DIR_FLAG].value
  if not os.path.isdir(os.path.expanduser(path)):
    spelled = RUN_DIR_ALIAS if flag_values[RUN_DIR_ALIAS].present else RUN_DIR_FLAG
    raise UserError(f"--{spelled}={path}: no such run directory")
  return path


def _verbose(argv) -> bool:
  return any(a in ("--verbose", "--verbose=true", "--verbose=True", "--verbose=1") for a in argv)


def fail(error: BaseException, argv) -> None:
  """Prints `error` in the project's style and exits with EXIT_USER_ERROR."""
  if _verbose(argv):
    traceback.print_exception(error)
  print(one_line(error), file=sys.stderr, flush=True)
  sys.exit(EXIT_USER_ERROR)


def _parse_flags(argv):
  """absl's parser, with every parsing failure (unknown flag, unknown config key -- ml_collections says
  which key and suggests the near miss --, a config file or variant that does not exist) as one line."""
  try:
    args = flags.FLAGS(argv)
    for name in list(flags.FLAGS):  # a config file that failed to load reports only when first read
      report = getattr(flags.FLAGS[name].value, "_ReportError", None)
      if report is not None:
        report()
    return args
  except flags.Error as e:
    fail(UserError(f"{_last_line(str(e))} (--helpshort lists the flags)"), argv)
  except (AttributeError, KeyError, ValueError, TypeError, ImportError, OSError) as e:
    missing = re.search(r"No such file or directory: '([^']+)'", str(e))
    if missing:
      shipped = ", ".join(config_files.names()) or "none"
      fail(
        UserError(f"config file not found: {missing.group(1)} (give --config=PATH.py[:ARG]; shipped: {shipped})"),
        argv,
      )
    message = str(e).strip().strip("'\"").replace("\\n", " ").replace("\n", " ").replace("\\'", "'")
    key = re.match(r"'?([A-Za-z_][\w]*)'?", message)
    culprits = [
      a
      for a in argv[1:]
      if key and a.startswith("--") and re.search(rf"[.]{re.escape(key.group(1))}(=|$)", a.split("=")[0] + "=")
    ]
    where = f" in {culprits[0]}" if culprits else ""
    fail(UserError(f"bad config override{where}: {message}"), argv)
  return None


def _last_line(text: str) -> str:
  """An error message that embeds a traceback (config files raising while loaded) -> its last line."""
  lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
  if len(lines) > 1 and any(line.startswith("Traceback") for line in lines):
    return f"{lines[0]} {lines[-1]}"
  return " ".join(lines)


def run(main) -> None:
  """absl.app.run(main) with the error style above."""
  argv = list(sys.argv)

  def guarded(args):
    try:
      return main(args)
    except _USER_ERRORS as e:
      fail(e, argv)
    return None

  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  config_files.resolve_config_flags()  # --config=pi0_plus.py:demo finds the shipped file from any directory
  app.run(guarded, flags_parser=_parse_flags)
