"""Config validation: a dataclass config built from a YAML mapping, checked before any work starts.

:func:`build` turns a mapping into dataclass ``cls``, field by field, against the field's type
annotation (``int``, ``float``, ``str``, ``bool``, ``Optional[...]``, ``Tuple[...]``,
``Dict[str, ...]`` and nested dataclasses) and the class's declared limits, then runs the class's
``check()`` for rules that span fields. Every refusal is a :class:`ConfigError` (a ``ValueError``)
of one line naming the dotted key, the value and what is allowed::

    model.encoders.rgb.patch_size = 0: allowed: an integer >= 1

Limits live beside the fields, as a class attribute ``LIMITS = {'epochs': at_least(1), ...}``
(a ``ClassVar``, so not a field). :func:`read_yaml` is the one safe YAML reader of config files
(:func:`safe_load` for text): syntax errors, ``!!python`` tags, duplicate keys and aliases that
expand beyond :data:`MAX_ALIAS_EXPANSION` nodes become one line too.

It lives in the bottom layer of the core because datasets, models and the controller all read
configs (``admn_ros.fusion.validate`` re-exports it under its older name).
"""
from __future__ import annotations

import dataclasses
import math
import reprlib
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple

import yaml


class ConfigError(ValueError):
    """A config value that is refused: ``key = value: allowed: ...`` in one line."""

    def __init__(self, key: str, value: Any, allowed: str, *, unknown: bool = False):
        self.key, self.value, self.allowed, self.unknown = key, value, allowed, unknown
        if unknown:
            super().__init__(f'unknown key {key} (= {_show(value)}); allowed keys: {allowed}')
        else:
            super().__init__(f'{key or "(top level)"} = {_show(value)}: allowed: {allowed}')


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 80, 80
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8


def _show(value: Any) -> str:
    """``repr(value)`` cut to 80 characters, built from a bounded walk: a huge or deeply nested
    value (an alias bomb) costs no more than a small one."""
    text = _REPR.repr(value)
    return text if len(text) <= 80 else text[:77] + '...'


# --------------------------------------------------------------------------- limits
@dataclass(frozen=True)
class Range:
    """A number within bounds; ``None`` = unbounded, ``*_open`` excludes the bound itself."""

    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False

    def ok(self, value) -> bool:
        if value is None:
            return True          # an Optional left empty
        if isinstance(value, (int, float)) and math.isnan(value):
            return False
        if self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo):
            return False
        if self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi):
            return False
        return True

    def describe(self) -> str:
        lo = None if self.lo is None else f'{"(" if self.lo_open else "["}{self.lo:g}'
        hi = None if self.hi is None else f'{self.hi:g}{")" if self.hi_open else "]"}'
        if lo and hi:
            return f'in {lo}, {hi}'
        if lo:
            return f'{">" if self.lo_open else ">="} {self.lo:g}'
        return f'{"<" if self.hi_open else "<="} {self.hi:g}'


@dataclass(frozen=True)
class OneOf:
    choices: Tuple[Any, ...]

    def ok(self, value) -> bool:
        return value is None or value in self.choices

    def describe(self) -> str:
        return 'one of ' + ', '.join(map(str, self.choices))


@dataclass(frozen=True)
class Each:
    """Every element of a sequence meets ``limit``; ``min_len`` elements at least."""

    limit: Any = None
    min_len: int = 0

    def ok(self, value) -> bool:
        if value is None:
            return True
        return len(value) >= self.min_len and (self.limit is None
                                               or all(self.limit.ok(v) for v in value))

    def describe(self) -> str:
        parts = [f'at least {self.min_len} element(s)'] if self.min_len else []
        if self.limit is not None:
            parts.append(f'each {self.limit.describe()}')
        return ', '.join(parts)


def at_least(lo: float) -> Range:
    return Range(lo=lo)


def positive() -> Range:
    return Range(lo=0, lo_open=True)


def fraction(open_low: bool = False) -> Range:
    """A probability or share: [0, 1] (or (0, 1])."""
    return Range(0.0, 1.0, lo_open=open_low)


def one_of(*choices) -> OneOf:
    return OneOf(tuple(choices))


# --------------------------------------------------------------------------- types
_TYPE_NAMES = {int: 'an integer', float: 'a number', str: 'a string', bool: 'true or false'}


def _describe_type(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        inner = [a for a in args if a is not type(None)]
        return ' or '.join(_describe_type(a) for a in inner) + ' or null'
    if origin is tuple or tp is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f'a list of {_plural(args[0])}'
        if args:
            return f'a list of {len(args)} ({", ".join(_describe_type(a) for a in args)})'
        return 'a list'
    if origin is dict or tp is dict:
        return 'a mapping'
    if dataclasses.is_dataclass(tp):
        return f'a mapping of {tp.__name__} keys'
    return _TYPE_NAMES.get(tp, getattr(tp, '__name__', str(tp)))


def _plural(tp) -> str:
    name = _describe_type(tp)
    return {'an integer': 'integers', 'a number': 'numbers', 'a string': 'strings'}.get(name, name)


def coerce(tp, value, key: str):
    """``value`` as type ``tp`` (lists -> tuples, ints -> floats, nested dataclasses built),
    or ConfigError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            try:
                return coerce(inner[0], value, key)
            except ConfigError:
                raise ConfigError(key, value, _describe_type(tp)) from None
        for option in inner:
            try:
                return coerce(option, value, key)
            except ConfigError:
                continue
        raise ConfigError(key, value, _describe_type(tp))
    if dataclasses.is_dataclass(tp):
        if dataclasses.is_dataclass(value) and isinstance(value, tp):
            return value
        return build(tp, value, prefix=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, value, 'true or false')
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, value, 'an integer')
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads '1e-3' (no dot) as a string: a number written so is still a number.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(key, value, 'a number')
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, value, 'a string')
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(key, value, _describe_type(tp))
        if not args:
            return tuple(value)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(args[0], v, f'{key}[{i}]') for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(key, value, _describe_type(tp))
        return tuple(coerce(a, v, f'{key}[{i}]') for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, value, 'a mapping')
        if not args:
            return dict(value)
        return {coerce(args[0], k, key): coerce(args[1], v, f'{key}.{k}') for k, v in value.items()}
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(key, value, _describe_type(tp))


# --------------------------------------------------------------------------- build
def build(cls, data, *, prefix: str = ''):
    """Dataclass ``cls`` from mapping ``data`` (None = defaults), every key checked (module
    docstring); raises :class:`ConfigError`."""
    if data is None:
        data = {}
    if dataclasses.is_dataclass(data) and isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(prefix, data, f'a mapping of {cls.__name__} keys')
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for name in data:
        if name not in known:
            raise ConfigError(_join(prefix, str(name)), data[name], ', '.join(sorted(known)),
                              unknown=True)
    limits = getattr(cls, 'LIMITS', {})
    kwargs = {}
    for name, value in data.items():
        key = _join(prefix, name)
        value = coerce(hints[name], value, key)
        limit = limits.get(name)
        if limit is not None and not limit.ok(value):
            raise ConfigError(key, value, limit.describe())
        kwargs[name] = value
    try:
        cfg = cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:   # a __post_init__ refusal
        raise ConfigError(prefix, data, str(exc)) from None
    check = getattr(cfg, 'check', None)
    if callable(check):
        try:
            check()
        except ConfigError as exc:
            if prefix:
                raise ConfigError(_join(prefix, exc.key), exc.value, exc.allowed,
                                  unknown=exc.unknown) from None
            raise
    return cfg


def _join(prefix: str, name: str) -> str:
    return f'{prefix}.{name}' if prefix else name


def check_limits(cfg, prefix: str = '') -> None:
    """Re-check a built config's limits (after code or a command-line flag changed a field)."""
    for name, limit in getattr(type(cfg), 'LIMITS', {}).items():
        value = getattr(cfg, name)
        if not limit.ok(value):
            raise ConfigError(_join(prefix, name), value, limit.describe())
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_limits(value, _join(prefix, f.name))
        elif isinstance(value, dict):
            for k, v in value.items():
                if dataclasses.is_dataclass(v):
                    check_limits(v, _join(prefix, f'{f.name}.{k}'))
    check = getattr(cfg, 'check', None)
    if callable(check):
        check()


def from_yaml(cls, path):
    """Dataclass ``cls`` from YAML file ``path`` (None = defaults): :func:`read_yaml` then
    :func:`build`; errors in one line starting with the path."""
    if path is None:
        return build(cls, {})
    data = read_yaml(path)
    try:
        return build(cls, data)
    except ConfigError as exc:
        raise ValueError(f'{path}: {exc}') from None


# --------------------------------------------------------------------------- YAML
# Nodes that aliases may add to a document when expanded. Nine nested levels of nine aliases
# each ("billion laughs") stay a few hundred nodes when loaded but expand to ~10^9 for anything
# that walks the value (validation, repr); hand-written configs use a handful of aliases.
MAX_ALIAS_EXPANSION = 10_000


class _ConfigLoader(yaml.SafeLoader):
    """The safe loader, refusing duplicate keys (``batch_size: 0`` ... ``batch_size: 8`` would
    silently keep the last) and alias expansion beyond :data:`MAX_ALIAS_EXPANSION` nodes."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(':merge'):
                    continue
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f'duplicate key {key_node.value!r} (first on line '
                        f'{seen[key].line + 1})', key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def _expanded_size(root, limit: int) -> int:
    """Nodes in the document once every alias is expanded (memoised per node; stops past
    ``limit``)."""
    sizes = {}

    def size(node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        sizes[key] = limit + 1     # a cycle (a recursive alias) counts as over the limit
        if isinstance(node, yaml.SequenceNode):
            total = 1 + sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            total = 1
        sizes[key] = total = min(total, limit + 1)
        return total
    return size(root)


def safe_load(stream):
    """``yaml.safe_load`` of a config text or file, plus :class:`_ConfigLoader`'s refusals
    (``yaml.YAMLError`` subclasses, like every other YAML problem)."""
    loader = _ConfigLoader(stream)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        composed = len({id(n) for n in _walk(node)})
        limit = composed + MAX_ALIAS_EXPANSION
        if _expanded_size(node, limit) > limit:
            raise yaml.composer.ComposerError(
                None, None, f'aliases expand to more than {MAX_ALIAS_EXPANSION} extra nodes '
                '(refused: an alias bomb?)', node.start_mark)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _walk(root):
    """Every distinct node of a composed document (aliases visited once)."""
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(n for pair in node.value for n in pair)

def read_yaml(path, *, allow_empty: bool = False, mapping: bool = True):
    """The content of YAML file ``path`` with the safe loader; ValueError in one line for a
    missing or empty file (unless ``allow_empty``), a syntax error, a tag that is not plain data
    (``!!python/...``) or, with ``mapping``, a top level that is not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'{path}: no such file')
    text = path.read_text(encoding='utf-8')
    try:
        data = safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f'{path}: {yaml_problem(exc)}') from None
    if data is None:
        if allow_empty:
            return {} if mapping else None
        raise ValueError(f'{path}: the file is empty (give at least one key, or leave the option '
                         'out to use the defaults)')
    if mapping and not isinstance(data, dict):
        raise ValueError(f'{path}: the top level must be a mapping of keys, got '
                         f'{type(data).__name__}')
    return data


def yaml_problem(exc) -> str:
    """A YAML error as one line: what and where (line, column)."""
    mark = getattr(exc, 'problem_mark', None) or getattr(exc, 'context_mark', None)
    where = f'line {mark.line + 1}, column {mark.column + 1}: ' if mark is not None else ''
    problem = getattr(exc, 'problem', None) or str(exc).splitlines()[0]
    if 'tag' in str(problem) and ('python' in str(problem) or 'constructor' in str(problem)):
        problem = f'{problem} (only plain YAML data is read: no !!python tags)'
    return f'not valid YAML ({where}{" ".join(str(problem).split())})'


def parse_list(text: str, what: str, convert=float, *, limit=None) -> Tuple[Any, ...]:
    """A comma-separated command-line list (``0.25,0.5``) -> a non-empty tuple; ValueError naming
    ``what`` for an empty list or an element that is not a ``convert`` value within ``limit``."""
    items = [t.strip() for t in str(text).split(',')]
    if not any(items):
        raise ValueError(f'{what} = {text!r}: allowed: a comma-separated, non-empty list')
    out = []
    for item in items:
        if not item:
            raise ValueError(f'{what} = {text!r}: allowed: a comma-separated list without empty '
                             'elements')
        try:
            value = convert(item)
        except ValueError:
            raise ValueError(f'{what} = {text!r}: {item!r} is not {_describe_type(convert)}') from None
        if limit is not None and not limit.ok(value):
            raise ValueError(f'{what} = {text!r}: {item!r} is not {limit.describe()}')
        out.append(value)
    return tuple(out)


__all__ = ['ConfigError', 'Range', 'OneOf', 'Each', 'at_least', 'positive', 'fraction', 'one_of',
           'build', 'from_yaml', 'coerce', 'check_limits', 'read_yaml', 'yaml_problem', 'parse_list']
