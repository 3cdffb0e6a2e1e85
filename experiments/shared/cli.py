"""The command line shared by the launchers: ``--config`` (an ml_collections config file, any field
overridable as ``--config.FIELD=VALUE``), ``--workdir``, ``--distributed``; config and data mistakes end in
one line naming the field or file, not a traceback."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from collections.abc import Callable
from typing import NoReturn

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from experiments.shared.config import ConfigError
from metadial.data.babi_dialog import DialogFormatError

# Mistakes in what the user gave (a config value, a data file, a workdir of another config): one line.
USER_ERRORS = (ConfigError, DialogFormatError, FileNotFoundError)


def load_config_file(path: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """``get_config()`` (or ``get_config(arg)``) of a config file."""
    spec = importlib.util.spec_from_file_location("_metadial_config", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path}: not a Python config file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if arg is None else module.get_config(arg)


def describe_fields(config: ml_collections.ConfigDict) -> str:
    """``name=default`` of every field, for ``--help``."""
    return ", ".join(f"{k}={v!r}" for k, v in sorted(config.items()))


def _given_config(default_config: str) -> ml_collections.ConfigDict | None:
    """The config that ``--config=PATH[:ARG]`` on the command line (or the default) names, if it loads."""
    given = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--config=")]
    path, _, arg = (given[-1] if given else default_config).partition(":")
    try:
        return load_config_file(path, arg or None)
    except Exception:  # only used to list the fields in an error message
        return None


def _exit_unknown_field(error: AttributeError, default_config: str) -> NoReturn:
    """ml_collections' error for ``--config.FIELD`` naming no field, as one line; exits with status 2."""
    inner = error.args[0] if error.args else error  # ml_collections wraps a KeyError
    text = str(inner.args[0]) if isinstance(inner, KeyError) and inner.args else str(inner)
    first, _, hint = text.partition("\n")
    name = first.strip("'\"")
    overrides = [a[len("--config.") :].split("=", 1)[0] for a in sys.argv[1:] if a.startswith("--config.")]
    path = next((o for o in overrides if o == name or o.endswith("." + name)), name)
    suggestion = re.search(r'Did you mean "([^"]+)"', hint)
    if suggestion:
        detail = f"did you mean {suggestion.group(1)}?"
    else:
        config = _given_config(default_config)
        detail = f"(fields: {', '.join(sorted(config.keys()))})" if config is not None else ""
    separator = "; " if suggestion else " "
    print(f"error: --config.{path}: no such config field{separator}{detail}".rstrip(), file=sys.stderr)
    sys.exit(2)


def _flags_parser(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad flag value reported in one line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:  # one line: a config file's error comes with its traceback, keep its last line
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        print(f"error: {lines[0]}" + (f" {lines[-1]}" if len(lines) > 1 else ""), file=sys.stderr)
        sys.exit(2)


def run_launcher(run_fn: Callable[[ml_collections.ConfigDict, str], object], default_config: str, outputs: str) -> None:
    """Defines the flags and runs ``run_fn(config, workdir)`` under ``absl.app``."""
    try:
        fields = describe_fields(load_config_file(default_config))
    except Exception:
        fields = "(see the config file)"
    try:  # ml_collections applies the --config.FIELD overrides here already
        config_flags.DEFINE_config_file(
            "config",
            default_config,
            f"Config file (default {os.path.relpath(default_config)}); override any field with --config.FIELD=VALUE. "
            f"Fields and defaults: {fields}",
        )
    except AttributeError as e:
        _exit_unknown_field(e, default_config)
    flags.DEFINE_string("workdir", None, f"Output folder ({outputs}); re-running with it resumes.")
    flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() first (multi-host runs).")
    for name in ("config", "workdir", "distributed"):  # listed by --help (absl names the main module by argv[0])
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])

    def main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        if not flags.FLAGS.workdir:
            raise app.UsageError("--workdir is required")
        if flags.FLAGS.distributed:
            import jax

            jax.distributed.initialize()  # multi-host GPU/TPU: coordinator and process ids from the cluster env
        try:
            config = flags.FLAGS.config
            config.keys()  # a --config file that failed to load raises here
        except Exception as e:  # a missing file, or get_config() refusing its argument
            given = next((a for a in sys.argv[1:] if a.startswith("--config=")), "--config")
            print(f"error: {given}: cannot load it ({str(e).strip().splitlines()[-1].strip()})", file=sys.stderr)
            sys.exit(2)
        try:
            run_fn(config, flags.FLAGS.workdir)
        except USER_ERRORS as e:
            logging.flush()
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)

    app.run(main, flags_parser=_flags_parser)


def report(written: list[str], summary: str) -> None:
    """Says what the launcher wrote where, then prints the summary table."""
    if written:
        folder = os.path.dirname(written[0])
        logging.info("wrote %s in %s", ", ".join(os.path.basename(p) for p in written), folder)
    print(summary, flush=True)
