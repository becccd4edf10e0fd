"""
nanoGPT-style configuration: defaults live at the top of each script as a dict, a config file in
config/ (plain Python assignments) overrides them, and --key=value overrides both.

    python train.py config/train_teacher.py --max_iters=500 --device=cpu

Unknown keys and values of the wrong type are refused with a message naming them.
"""
import ast
import os


class ConfigError(SystemExit):
    """Raised for bad configuration; a SystemExit so scripts print one line, no traceback."""

    def __init__(self, msg):
        super().__init__(f"config error: {msg}")


def _coerce(key, value, default):
    if default is None or isinstance(value, type(default)):
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    raise ConfigError(f"{key} must be {type(default).__name__} (default {default!r}), "
                      f"got {type(value).__name__} {value!r}")


def configure(defaults, argv):
    """Return a copy of defaults updated by config files and --key=value arguments in argv."""
    cfg = dict(defaults)
    for arg in argv:
        if not arg.startswith("--"):
            if not os.path.isfile(arg):
                raise ConfigError(f"config file {arg!r} not found")
            scope = {}
            try:
                with open(arg) as f:
                    exec(compile(f.read(), arg, "exec"), {}, scope)
            except Exception as e:  # a config file is user code: report where it broke
                raise ConfigError(f"{arg}: {type(e).__name__}: {e}")
            for key, value in scope.items():
                if key.startswith("_") or callable(value) or type(value).__name__ == "module":
                    continue
                if key not in cfg:
                    raise ConfigError(f"unknown key {key!r} in {arg}")
                cfg[key] = _coerce(key, value, cfg[key])
        else:
            key, eq, raw = arg[2:].partition("=")
            if key not in cfg:
                raise ConfigError(f"unknown key {key!r} (known: {', '.join(sorted(cfg))})")
            if not eq:
                if not (isinstance(cfg[key], bool) or cfg[key] is None):
                    raise ConfigError(f"expected --{key}=value, got {arg!r}")
                raw = "True"  # a bare --flag switches a boolean on
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw  # a bare string such as --device=cpu
            if isinstance(cfg[key], str) and not isinstance(value, str):
                value = raw  # --out_dir=123 is still a path
            cfg[key] = _coerce(key, value, cfg[key])
    return cfg
