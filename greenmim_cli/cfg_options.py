"""``--cfg-options KEY=VALUE``: mmengine's overrides, checked before they are merged.

mmengine merges any key, so a typo (``model.backbone.dept=12``) is silently added and
ignored, and a string where a number belongs (``optim_wrapper.optimizer.lr=abc``) fails
much later inside the optimizer. Here every key is checked first, level by level:

* an existing key may be set to what the component takes: the kinds its argument's
  annotation names (``RandomResizedCrop``'s ``scale: Union[Sequence, int]`` takes a
  number or a tuple, ``(128,96)``; an argument that defaults to None or is ``Optional``
  takes None); where the annotation does not say (none, or a class such as a tensor),
  a number stays a number and a bool a bool;
* a **new** key is allowed where mmengine would use it: a top-level key that mmengine's
  ``Runner`` reads (``compile``, ``randomness``, ...), an argument of the class a dict
  builds (``type`` looked up in the registries of the config's scope, following
  ``**kwargs`` on to the parent classes: ``model.backbone.pad_small_map``,
  ``optim_wrapper.dtype`` under ``AmpOptimWrapper``,
  ``default_hooks.checkpoint.max_keep_ckpts``), any key of a dict whose reader is not
  known (``model.train_cfg`` of a detector, ...);
* a new key that is not accepted there, or that is a close match of a key that exists
  at the same level (a likely typo), is a :class:`UsageError` with the suggestion.
"""
import collections.abc
import difflib
import inspect
import types
import typing
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from mmengine.config import Config

from greenmim_mm.errors import UsageError

_EMPTY = inspect.Parameter.empty
Accepted = Optional[Dict[str, Any]]  # argument name -> default; None: unknown (open)

# Read by mmengine's Runner (0.10.7) from the config besides its __init__ arguments.
RUNNER_EXTRA_KEYS = ('compile', 'sync_bn', 'find_unused_parameters', 'model_wrapper_cfg',
                     'activation_checkpointing', 'efficient_conv_bn_eval', 'runner_type',
                     'custom_imports', 'gpu_ids', 'dist_params')
ENV_CFG_KEYS = ('cudnn_benchmark', 'mp_cfg', 'dist_cfg', 'resource_limit')
# keys popped by mmengine before the rest reaches the class
OPTIM_WRAPPER_EXTRA_KEYS = ('constructor', 'paramwise_cfg')
DATALOADER_EXTRA_KEYS = ('num_batch_per_epoch', )


def _arguments(fn: Any) -> Dict[str, Any]:
    """Named arguments of a callable with their defaults; ``'**'`` marks ``**kwargs``."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return {'**': None}
    named = {p.name: p.default for p in params
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != 'self'}
    if any(p.kind == p.VAR_KEYWORD for p in params):
        named['**'] = None
    return named


def accepted_arguments(obj: Any) -> Accepted:
    """What ``obj(**cfg)`` accepts, following ``**kwargs`` up the class hierarchy.

    A class's ``**kwargs`` are taken to be passed on to its parent (the rule of this
    project and of OpenMMLab's models), so the arguments of every ``__init__`` up the
    MRO count until one without ``**kwargs``; ``object``, ``torch.nn.Module`` (which
    refuses keyword arguments) and mmengine's ``BaseModule`` end the chain. None when
    the chain ends open (a function with ``**kwargs``, a class whose last ``__init__``
    takes ``**kwargs`` of its own).
    """
    import torch
    if not inspect.isclass(obj):
        named = _arguments(obj)
        return None if '**' in named else named
    accepted: Dict[str, Any] = {}
    for cls in obj.__mro__:
        if cls in (object, torch.nn.Module):
            return accepted
        if '__init__' not in vars(cls):
            continue
        named = _arguments(cls.__init__)
        open_ = named.pop('**', 'closed') != 'closed'
        for name, default in named.items():
            accepted.setdefault(name, default)
        if not open_:
            return accepted
    return accepted


def _registries() -> List[Any]:
    from mmengine import registry
    return [r for r in vars(registry).values() if isinstance(r, registry.Registry)]


def _scoped(root: Any, scope: Optional[str]) -> Any:
    """The registry of ``scope`` in ``root``'s tree (``root`` itself if none)."""
    stack = [root]
    while stack and scope:
        node = stack.pop()
        if node.scope == scope:
            return node
        stack.extend(node.children.values())
    return root


def registered(type_name: Any, scope: Optional[str]) -> Iterator[Any]:
    """Every object registered as ``type_name`` in some registry of ``scope``."""
    if callable(type_name):
        yield type_name
        return
    if not isinstance(type_name, str):
        return
    for root in _registries():
        try:
            obj = _scoped(root, scope).get(type_name)
        except (KeyError, ImportError, AttributeError):  # an unknown scope prefix
            obj = None
        if obj is not None:
            yield obj


def _union(objects: List[Any]) -> Accepted:
    accepted: Dict[str, Any] = {}
    for obj in objects:
        args = accepted_arguments(obj)
        if args is None:
            return None
        accepted.update(args)
    return accepted


def _runner_keys() -> Dict[str, Any]:
    from mmengine.runner import Runner
    keys = dict(accepted_arguments(Runner) or {})
    keys.pop('cfg', None)
    keys.update(dict.fromkeys(RUNNER_EXTRA_KEYS))
    return keys


def _typeless(path: List[str]) -> Accepted:
    """What mmengine does with a dict without ``type`` at ``path`` (None: not known)."""
    from mmengine.optim import OptimWrapper
    from mmengine.runner import (EpochBasedTrainLoop, IterBasedTrainLoop, LogProcessor,
                                 Runner, TestLoop, ValLoop)
    from torch.utils.data import DataLoader
    key = '.'.join(path)
    if key == 'optim_wrapper':
        return {**_union([OptimWrapper]), **dict.fromkeys(OPTIM_WRAPPER_EXTRA_KEYS)}
    if key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        return {**_union([DataLoader]), **dict.fromkeys(DATALOADER_EXTRA_KEYS)}
    if key == 'train_cfg':
        return {**_union([EpochBasedTrainLoop, IterBasedTrainLoop]), 'by_epoch': None}
    simple = {'val_cfg': [ValLoop], 'test_cfg': [TestLoop], 'log_processor': [LogProcessor],
              'randomness': [Runner.set_randomness]}
    if key in simple:
        return _union(simple[key])
    if key == 'env_cfg':
        return dict.fromkeys(ENV_CFG_KEYS)
    if key == 'auto_scale_lr':
        return dict.fromkeys(('enable', 'base_batch_size'))
    return None


def accepted_keys(cfg: Config, path: List[str], node: dict) -> Accepted:
    """The keys the dict ``node`` at ``path`` may hold (None: any)."""
    if not path:
        return _runner_keys()
    if 'type' not in node:
        return _typeless(path)
    objects = list(registered(node['type'], cfg.get('default_scope')))
    accepted = _union(objects) if objects else None
    if accepted is None:
        return None
    accepted.update(type=None, _scope_=None)
    if path == ['optim_wrapper']:
        accepted.update(dict.fromkeys(OPTIM_WRAPPER_EXTRA_KEYS))
    return accepted


def _where(path: List[str], node: dict) -> str:
    if not path:
        return "the top level (keys mmengine's Runner reads)"
    type_name = node.get('type')
    name = type_name if isinstance(type_name, str) else getattr(type_name, '__name__', '')
    return '.'.join(path) + (f' ({name})' if name else '')


def argument_annotation(objects: List[Any], name: str) -> Tuple[Any, Any]:
    """``(annotation, default)`` of the argument ``name`` of the first of ``objects``
    (registered classes or functions) that has it, following ``**kwargs`` up the MRO;
    ``(_EMPTY, _EMPTY)`` when none does."""
    for obj in objects:
        functions = ([vars(cls)['__init__'] for cls in obj.__mro__
                      if '__init__' in vars(cls)] if inspect.isclass(obj) else [obj])
        for fn in functions:
            try:
                parameter = inspect.signature(fn).parameters.get(name)
            except (TypeError, ValueError):
                continue
            if parameter is not None:
                annotation = parameter.annotation
                if isinstance(annotation, str):  # postponed: resolve or give up
                    try:
                        annotation = typing.get_type_hints(fn).get(name, _EMPTY)
                    except Exception:  # noqa: B902  (any failure: not known)
                        annotation = _EMPTY
                return annotation, parameter.default
    return _EMPTY, _EMPTY


_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)
_KIND_NAMES = {'number': 'a number', 'bool': 'True or False', 'str': 'a text',
               'sequence': 'a tuple or list', 'dict': 'a dict', 'none': 'None'}


def annotation_kinds(annotation: Any) -> Optional[Set[str]]:
    """The kinds of command-line values an annotation admits (``'number'``, ``'bool'``,
    ``'str'``, ``'sequence'``, ``'dict'``, ``'none'``); None when it does not say
    (no annotation, ``Any``, a class such as ``torch.Tensor``)."""
    if annotation is _EMPTY or annotation is Any:
        return None
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        kinds: Set[str] = set()
        for member in typing.get_args(annotation):
            member_kinds = annotation_kinds(member)
            if member_kinds is None:
                return None
            kinds |= member_kinds
        return kinds
    simple = {type(None): 'none', None: 'none', bool: 'bool', int: 'number',
              float: 'number', str: 'str', dict: 'dict'}
    if annotation in simple:
        return {simple[annotation]}
    base = origin or annotation
    if base in _SEQUENCES:
        return {'sequence'}
    if base in (dict, collections.abc.Mapping):
        return {'dict'}
    return None


def value_kind(value: Any) -> str:
    if value is None:
        return 'none'
    if isinstance(value, bool):
        return 'bool'
    if isinstance(value, (int, float)):
        return 'number'
    if isinstance(value, (list, tuple)):
        return 'sequence'
    return 'dict' if isinstance(value, dict) else 'str' if isinstance(value, str) else '?'


def _items_fit(annotation: Any, value: Any) -> bool:
    """The items of a tuple/list fit ``Sequence[int]``/``Tuple[float, float]``."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    for member in typing.get_args(annotation) if union else (annotation, ):
        base = typing.get_origin(member) or member
        if base not in _SEQUENCES:
            continue
        args = [a for a in typing.get_args(member) if a is not Ellipsis]
        if args and all(annotation_kinds(a) == {'number'} for a in args):
            return all(value_kind(item) == 'number' for item in value)
        return True
    return True


def _check_accepted(key: str, component: str, annotation: Any, default: Any,
                    new: Any) -> bool:
    """Check ``new`` against the argument's annotation; False when it does not say."""
    kinds = annotation_kinds(annotation)
    if kinds is None:
        return False
    if default is None:
        kinds = kinds | {'none'}
    kind = value_kind(new)
    if kind in kinds and (kind != 'sequence' or _items_fit(annotation, new)):
        return True
    shown = ' or '.join(_KIND_NAMES[k] for k in sorted(kinds))
    if kind == 'sequence' and kind in kinds:  # of the wrong items
        shown = 'a tuple or list of numbers'

    text = inspect.formatannotation(annotation)
    raise UsageError(f'--cfg-options {key}={new!r}: expects {shown} ({component} takes '
                     f'{text}); write a value of that kind')


def _check_type(key: str, old: Any, new: Any) -> None:
    """A number stays a number and a bool a bool (None always allowed)."""
    if old is _EMPTY or old is None or new is None:
        return
    if isinstance(old, bool):
        if not isinstance(new, bool):
            raise UsageError(f'--cfg-options {key}={new!r}: expects True or False; '
                             f'write {key}=True or {key}=False')
    elif isinstance(old, (int, float)):
        if isinstance(new, bool) or not isinstance(new, (int, float)):
            raise UsageError(f'--cfg-options {key}={new!r}: expects a number (the config '
                             f'has {old!r}); write a number, e.g. {key}={old!r}')


def _registered_names(scope: Optional[str]) -> List[str]:
    names = set()
    for root in _registries():
        registry = _scoped(root, scope)
        while registry is not None:
            names.update(registry.module_dict)
            registry = registry.parent
    return sorted(names)


def _check_type_name(cfg: Config, key: str, value: Any) -> None:
    """A ``type`` set from the command line names a registered class or function."""
    if not isinstance(value, str) or list(registered(value, cfg.get('default_scope'))):
        return
    close = difflib.get_close_matches(value, _registered_names(cfg.get('default_scope')),
                                      n=3, cutoff=0.7)
    fix = (f'did you mean {" or ".join(close)}?' if close else
           'check the spelling, or import the module that registers it '
           '(custom_imports)')
    raise UsageError(f'--cfg-options {key}={value}: nothing is registered as {value!r}; '
                     f'{fix}')


def check_option(cfg: Config, key: str, value: Any) -> None:
    """Raise :class:`UsageError` unless ``--cfg-options key=value`` is safe to merge."""
    if key.split('.')[-1] == 'type':
        _check_type_name(cfg, key, value)
    node: Any = cfg
    path: List[str] = []
    for part in key.split('.'):
        if isinstance(node, (list, tuple)):
            if part.isdigit() and int(part) < len(node):
                node, path = node[int(part)], path + [part]
                continue
            raise UsageError(
                f'--cfg-options key "{key}" does not exist: no "{part}" in '
                f'{".".join(path)} (a list of {len(node)}); use an index from 0 to '
                f'{len(node) - 1}')
        if not isinstance(node, (dict, Config)):  # a ConfigDict is a dict, a Config not
            shown = repr(node) if len(repr(node)) < 60 else type(node).__name__
            raise UsageError(
                f'--cfg-options key "{key}": {".".join(path)} is {shown}, not a dict, so '
                f'it has no "{part}"; set {".".join(path)} itself')
        if part not in node:
            _check_new_key(cfg, key, path, node, part, value)
            return
        if not path and part not in _runner_keys():
            raise UsageError(
                f'--cfg-options key "{key}": the top-level "{part}" is a variable of the '
                'config file, used when the file was read, so setting it now changes '
                'nothing; set the keys that use it instead, or write a config that '
                'inherits this one')
        parent, node, path = node, node[part], path + [part]
    if not _check_component_type(cfg, key, path[:-1], parent, value):
        _check_type(key, node, value)


def _check_component_type(cfg: Config, key: str, path: List[str], parent: Any,
                          value: Any) -> bool:
    """Check ``value`` against what the component built from ``parent`` (the dict that
    holds the key) accepts for it; False when that is not known."""
    if not isinstance(parent, dict) or 'type' not in parent:
        return False
    objects = list(registered(parent['type'], cfg.get('default_scope')))
    name = key.split('.')[-1]
    annotation, default = argument_annotation(objects, name)
    component = f"{getattr(objects[0], '__name__', parent['type'])}'s {name}" \
        if objects else name
    return _check_accepted(key, component, annotation, default, value)


def _check_new_key(cfg: Config, key: str, path: List[str], node: dict, part: str,
                   value: Any) -> None:
    accepted = accepted_keys(cfg, path, node)
    if accepted is not None and part in accepted:
        if path + [part] == key.split('.') and not _check_component_type(
                cfg, key, path, node, value):
            _check_type(key, accepted[part], value)
        return
    existing = [k for k in node.keys() if isinstance(k, str)]
    choices = sorted(set(existing) | set(accepted or {}))
    close = difflib.get_close_matches(part, choices, n=3,
                                      cutoff=0.7 if accepted is not None else 0.75)
    if accepted is None and not close:
        return  # a new key where any key may go, as in mmengine
    where = _where(path, node)
    if path == ['optim_wrapper'] and part in ('dtype', 'loss_scale'):
        fix = 'mixed precision is --amp (or --amp-dtype float16|bfloat16)'
    elif close:
        fix = f'did you mean {" or ".join(close)}?'
    else:
        names = sorted(k for k in accepted if not k.startswith('_'))  # type: ignore
        shown = ', '.join(names[:16]) + (', ...' if len(names) > 16 else '')
        fix = f'it takes {shown}'
    raise UsageError(f'--cfg-options key "{key}" does not exist: no "{part}" in {where}; '
                     f'{fix}')


def merge_cfg_options(cfg: Config, options: Optional[Dict[str, Any]]) -> None:
    """Check and merge the ``--cfg-options`` items one by one, in their order (so
    ``optim_wrapper.type=AmpOptimWrapper optim_wrapper.dtype=bfloat16`` checks the
    second against the first); the result is mmengine's merge of them all."""
    for key, value in (options or {}).items():
        check_option(cfg, key, value)
        cfg.merge_from_dict({key: value})
