"""
nanoGPT-style configuration with every option typed and range-checked.

Each script declares its options at the top, one line each: the default, the type and the allowed
values. A config file in config/ (plain Python assignments) overrides the defaults, and
--key=value overrides both, wherever it stands among the files (each option once):

    python train.py config/train_teacher.py --max_iters=500 --device=cpu

Every value is checked before any work starts, options whose default is None included:
`--early_stop=no` is refused, never read as truthy. The repo's own errors (bad options, bad files,
impossible settings) are one class, CDLMError, which each script's entry prints as one line and
turns into exit status 2; any other exception keeps its traceback, because it is a bug.
An option typed on the command line that the run would ignore is refused too (`refuse_unused`);
a config file's settings are a preset's, which may serve several kinds of run (a bench preset
names every checkpoint folder, whichever methods a run times).
"""
import ast
import math
import os
import sys


class CDLMError(Exception):
    """A bad option, file or setting: reported in one line that names it, never as a traceback."""


def run_main(main):
    """A script's entry: main(argv), with the repo's own errors as one line and exit status 2; what it
    prints must reach standard output and its progress standard error (a closed one, or a full disk
    under it, is an error too)."""
    try:
        if sys.stdout is None:  # started with stdout closed (>&-): every answer would vanish
            raise CDLMError("standard output is closed: the results would go nowhere; give the run an output")
        if sys.stderr is None:  # 2>&-: the progress bars would fail mid-run, and any error vanish (said on stdout)
            raise CDLMError("standard error is closed: the progress and any error would go nowhere; give the run "
                            "one (2>/dev/null discards them)")
        sys.stdout, sys.stderr = Stream(sys.stdout, "output"), Stream(sys.stderr, "error")
        main(sys.argv[1:])
        sys.stdout.flush()
    except CDLMError as e:
        print(f"error: {e}", file=sys.__stdout__ if sys.stderr is None or getattr(sys.stderr, "failed", False) else sys.stderr)
        sys.exit(2)
    except BrokenPipeError:  # output piped into `head` and closed early: the run stops quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.__stdout__.fileno())  # no second error at exit
        sys.exit(141)  # SIGPIPE's status, as any command whose reader left: a run cut short is no finished run


class Stream:
    """sys.stdout or sys.stderr whose failed writes (a full disk, an I/O error) are the repo's one-line
    error (one about standard error said on standard output)."""

    def __init__(self, f, name):
        self.f, self.name, self.failed = f, name, False

    def __getattr__(self, name):
        return getattr(self.f, name)

    def write(self, s):
        return self.guard(self.f.write, s)

    def flush(self):
        return self.guard(self.f.flush)

    def guard(self, fn, *a):
        try:
            return fn(*a)
        except BrokenPipeError:
            raise
        except OSError as e:
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.f.fileno())  # what is left in the buffer goes nowhere
            self.failed = True
            raise CDLMError(f"cannot write to standard {self.name}: {e.strerror or e}") from None


class Option:
    """An option's default and allowed values; None is allowed only where it is the default."""
    kind = "value"

    def __init__(self, default):
        self.default = default

    def parse(self, raw):
        """The value of a --key=raw argument (before check)."""
        try:
            return ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            return raw

    def valid(self, value):
        return True

    def describe(self):
        return self.kind

    def check(self, key, value):
        if value is None and self.default is None:
            return None
        v = self.coerce(value)
        if v is None or not self.valid(v):
            allowed = self.describe() + (" or None" if self.default is None else "")
            raise CDLMError(f"option {key}={value!r}: expected {allowed}")
        return v

    def coerce(self, value):
        return value

    def accepts(self, value):
        """Whether check would take value (a setting read from a file, named there by its reader)."""
        return (value is None and self.default is None) or (self.coerce(value) is not None and self.valid(self.coerce(value)))


# every seed: seed + rank and seed + row offsets (collect.py) stay below 2**64, torch's limit
SEED = "[0, 2**63)"


def number(text):
    """A range's bound: 1e-3, inf, or a power written 2**63 (exact, whatever its size)."""
    base, _, exp = text.strip().partition("**")
    return float(int(base) ** int(exp)) if exp else float(base)


class Interval:
    """'[1, inf)', '(0, 1]', '[0, 2**63)', '0 or [1e-3, inf)': a range in the usual notation, or a
    union of ranges and single values joined by 'or', printed back as written."""

    def __init__(self, text):
        self.text, self.parts = text.strip(), []
        for part in self.text.split(" or "):
            part = part.strip()
            if part[0] in "[(":
                lo, hi = part[1:-1].split(",")
                self.parts.append((number(lo), number(hi), part[0] == "[", part[-1] == "]"))
            else:
                self.parts.append((number(part), number(part), True, True))

    def __contains__(self, v):
        return any((v >= lo if lo_closed else v > lo) and (v <= hi if hi_closed else v < hi)
                   for lo, hi, lo_closed, hi_closed in self.parts)


class Int(Option):
    kind = "int"

    def __init__(self, default, within="(-inf, inf)"):
        super().__init__(default)
        self.within = Interval(within)

    def coerce(self, value):
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def valid(self, value):
        return value in self.within

    def describe(self):
        return f"{self.kind} in {self.within.text}"


class Float(Int):
    kind = "float"

    def coerce(self, value):
        if isinstance(value, str) and value.strip().lower() in ("inf", "-inf"):
            value = float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
            return float(value)
        return None


class Bool(Option):
    kind = "True or False"

    def coerce(self, value):
        return value if isinstance(value, bool) else None


class Str(Option):
    """Any non-empty string, such as a path; --out_dir=123 stays the string '123'."""
    kind = "a non-empty string"

    def parse(self, raw):
        return None if raw == "None" else raw

    def coerce(self, value):
        return value if isinstance(value, str) and value else None


class Choice(Str):
    def __init__(self, default, *choices):
        super().__init__(default)
        self.choices = choices

    def valid(self, value):
        return value in self.choices

    def describe(self):
        return "one of " + ", ".join(repr(c) for c in self.choices)


class List(Option):
    """A list of items each checked by `item`; on the command line a Python list, a,b,c or [a,b,c]."""

    def __init__(self, default, item, min_len=1, unique=False):
        super().__init__(default)
        self.item, self.min_len, self.unique = item, min_len, unique  # unique: no item twice (seeds, runs)

    def parse(self, raw):
        value = super().parse(raw)
        if isinstance(value, (list, tuple)):
            return list(value)
        if raw.startswith("[") and raw.endswith("]"):  # a list of paths without quotes: the shell ate them
            raw = raw[1:-1]
        return [self.item.parse(part.strip()) for part in raw.split(",")] if raw else []

    def coerce(self, value):
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list) or len(value) < self.min_len:
            return None
        items = [self.item.coerce(v) for v in value]
        if self.unique and len({repr(v) for v in items}) < len(items):
            return None
        return None if any(v is None or not self.item.valid(v) for v in items) else items

    def describe(self):
        return f"a list of at least {self.min_len} item(s), each {self.item.describe()}" + \
            (", none twice" if self.unique else "")


class Config(dict):
    """A script's options; `given` holds the keys a config file or --key=value set, `typed` those
    of --key=value alone (a dict built in code, as tests and demo.py do, gives none: its keys are
    not refused as unused)."""

    def __init__(self, values, given=(), typed=()):
        super().__init__(values)
        self.given, self.typed = frozenset(given), frozenset(typed)


def refuse_unused(cfg, ignored):
    """Refuse an option typed on the command line that this run would ignore. ignored: {key: why it
    would have no effect}, for the keys this run ignores; a key at its default, or set by a config
    file (a preset, which may serve other runs), is not refused."""
    for key, why in ignored.items():
        if key in getattr(cfg, "typed", ()):
            raise CDLMError(f"option {key}={cfg[key]!r} has no effect {why}")


def gave(cfg, key):
    return key in getattr(cfg, "given", ())


def fit_sizes(cfg, n, where, within=("batch_size",)):
    """
    The sizes a run measures on the n problems of `where`: num_eval, typed, must fit them, and each
    size of `within` (batch_size, latency_n), typed, the problems evaluated; a default or a
    preset's size shrinks to them. Returns cfg with the sizes fitted.
    """
    sizes = {}
    for key in ("num_eval", *within):
        if key in getattr(cfg, "typed", ()) and cfg[key] > n:
            raise CDLMError(f"option {key}={cfg[key]}: more than the {n} problems " +
                            (f"of {where}" if key == "num_eval" else "evaluated (num_eval)"))
        sizes[key] = min(cfg[key], n)
        n = sizes["num_eval"]
    return Config({**cfg, **sizes}, getattr(cfg, "given", ()), getattr(cfg, "typed", ()))


def defaults(spec):
    """The plain default values of a script's options."""
    return {k: opt.default for k, opt in spec.items()}


def check(spec, cfg):
    """Every key known and every value of its type and range; missing keys take their default."""
    unknown = sorted(set(cfg) - set(spec))
    if unknown:
        raise CDLMError(f"unknown option(s) {', '.join(map(repr, unknown))} (known: {', '.join(sorted(spec))})")
    return Config({k: opt.check(k, cfg.get(k, opt.default)) for k, opt in spec.items()}, getattr(cfg, "given", ()),
                  getattr(cfg, "typed", ()))


def configure(spec, argv):
    """
    The checked options of a script: its defaults, updated by the config files in argv (in their
    order), then by its --key=value options, wherever they stand: an option typed always takes
    effect, before a config file or after it. An option typed twice is refused.
    """
    cfg, given, typed = defaults(spec), set(), {}
    for i, arg in enumerate(argv):
        if arg.startswith("--"):
            continue
        before = argv[i - 1] if i else ""
        if not os.path.exists(arg) and before.startswith("--") and "=" not in before and before[2:] in spec:
            raise CDLMError(f"expected {before}={arg}, got {before} {arg} (an option takes its value after '=')")
        if not os.path.isfile(arg):
            raise CDLMError(f"config file {arg!r} " + ("is not a regular file" if os.path.exists(arg) else "not found"))
        scope = {}  # one namespace, as a module has: comprehensions and functions see its names
        try:
            with open(arg) as f:
                code = f.read()
            tree = ast.parse(code, arg)
            exec(compile(tree, arg, "exec"), scope)
        except Exception as e:  # a config file is user code: say where it broke, in one line
            raise CDLMError(f"config file {arg}: {type(e).__name__}: {e}")
        for node in ast.walk(tree):  # `max_iters: 2` (YAML's form) is a Python annotation: it sets nothing
            if isinstance(node, ast.AnnAssign) and node.value is None:
                raise CDLMError(f"config file {arg} line {node.lineno}: '{ast.unparse(node)}' sets nothing "
                                f"(an annotation): write {ast.unparse(node.target)} = {ast.unparse(node.annotation)}")
        for key, value in scope.items():
            if key.startswith("_") or callable(value) or type(value).__name__ == "module":
                continue
            if key not in spec:
                raise CDLMError(f"unknown option {key!r} in {arg}")
            cfg[key] = spec[key].check(key, value)
            given.add(key)
    for arg in (a for a in argv if a.startswith("--")):
        key, eq, raw = arg[2:].partition("=")
        if key not in spec:
            raise CDLMError(f"unknown option {key!r} (known: {', '.join(sorted(spec))})")
        if key in typed:
            raise CDLMError(f"option {key} is given twice ({typed[key]}, {arg}): give it once")
        if not eq:
            if not isinstance(spec[key], Bool):
                raise CDLMError(f"expected --{key}=value, got {arg!r}")
            raw = "True"  # a bare --flag switches a boolean on
        value = spec[key].parse(raw)
        if isinstance(spec[key], Int) and isinstance(value, float) and value in (0.0, math.inf, -math.inf) and \
                any(c in "123456789" for c in raw.lower().split("e")[0]):  # 1e-400, 1e400 (Int and Float): no float holds it
            raise CDLMError(f"option {key}={raw}: reads as {value} (beyond what a float holds); give a value "
                            f"within {spec[key].describe()}")
        cfg[key] = spec[key].check(key, value)
        given.add(key)
        typed[key] = arg
    return Config(cfg, given, typed)


def with_options(argv, *options):
    """argv with the --key=value options put in place of its own for those keys (a stage's variant,
    as demo.py builds it from a task's options)."""
    keys = {o.partition("=")[0] for o in options}
    return [a for a in argv if a.partition("=")[0] not in keys] + list(options)
