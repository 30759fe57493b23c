"""The Jinja2 sandbox prompt templates run in: the one environment, the static checks a template
must pass before it is compiled, and the limits every render runs under.

Two layers, so that one gap does not make an escape: `check` rejects what a prompt never needs
(template loading, macros, private or known-dangerous names and attributes, huge constants)
before anything runs, and the `ImmutableSandboxedEnvironment` (with strict undefined variables,
no loader and no helper globals) refuses unsafe attributes and bounds sizes, loop iterations and
time while it runs. Only `keel.prompts.render` uses this module.
"""

from __future__ import annotations

import contextvars
import functools
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

from jinja2 import StrictUndefined, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from keel.prompts.model import RenderError

__all__ = ["MAX_OUTPUT", "Budget", "check", "compile_checked", "environment"]

MAX_OUTPUT = 1 << 20  # characters one render may produce, all messages together
MAX_VALUE = MAX_OUTPUT  # the longest string or list an operator or filter may build
MAX_CONSTANT = 1_000_000  # larger number literals are only ever there to exhaust memory
MAX_INT_ARG = 100_000  # widths, counts and ranges given to functions and filters
MAX_RANGE = 10_000
MAX_STEPS = 1_000_000  # loop iterations, calls, filters and operators per render
MAX_SECONDS = 2.0

# Names a template may not use at all: the helper globals Jinja adds by default (they reach
# Python internals through their methods), the objects that Flask-style SSTI payloads look for,
# and builtins that attackers guess at. `self` is the template reference (its private context).
_BLOCKED_NAMES = frozenset(
    {
        "self", "cycler", "joiner", "namespace", "lipsum",
        "request", "config", "session", "url_for", "get_flashed_messages",
        "os", "sys", "builtins", "subprocess", "importlib",
        "eval", "exec", "open", "compile", "getattr", "setattr", "globals", "locals",
    }
)  # fmt: skip
# Attributes that lead from an ordinary value to code or frames, and `format`/`format_map`,
# whose format specs can read attributes (`'{0.__class__}'.format(x)`); use the `format` filter.
_BLOCKED_ATTRS = frozenset(
    {
        "mro", "format", "format_map", "func_globals", "func_code", "func_closure",
        "gi_frame", "gi_code", "gi_yieldfrom", "cr_frame", "cr_code", "cr_await",
        "ag_frame", "ag_code", "f_globals", "f_locals", "f_builtins", "f_back",
        "tb_frame", "tb_next", "im_func", "im_self", "im_class",
        "subclasses", "popen", "system", "modules", "import_module", "load_module",
    }
)  # fmt: skip
_NOT_ALLOWED: dict[type[nodes.Node], str] = {
    nodes.Include: "{% include %}",
    nodes.Import: "{% import %}",
    nodes.FromImport: "{% from ... import %}",
    nodes.Extends: "{% extends %}",
    nodes.Macro: "{% macro %}",
    nodes.CallBlock: "{% call %}",
    nodes.Pow: "the ** operator",
}
# printf-style conversions whose width or precision is '*' or absurdly large.
_WIDE_FORMAT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d{6,}|\d*\.(?:\*|\d{6,}))")

_BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("keel_budget", default=None)


class Budget:
    """The time and steps one render may still spend."""

    def __init__(self) -> None:
        self.deadline = time.monotonic() + MAX_SECONDS
        self.steps = 0

    def tick(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise SecurityError(
                f"the template takes more than {MAX_STEPS} steps (loop iterations, calls, filters)"
            )
        if self.steps % 256 == 0 and time.monotonic() > self.deadline:
            raise SecurityError(f"the template took longer than {MAX_SECONDS:g} s to render")

    def __enter__(self) -> Budget:
        self._token = _BUDGET.set(self)
        return self

    def __exit__(self, *_exc: object) -> None:
        _BUDGET.reset(self._token)


def _budget() -> Budget:
    return _BUDGET.get() or Budget()


def _fail(node: nodes.Node, message: str) -> RenderError:
    return RenderError(f"line {node.lineno}: {message}")


def check(tree: nodes.Template) -> None:
    """Raise RenderError (with the line) for the first construct a prompt template may not use."""
    for node in tree.find_all(nodes.Node):
        for kind, what in _NOT_ALLOWED.items():
            if isinstance(node, kind):
                raise _fail(node, f"{what} is not allowed in prompt templates")
        _check_node(node)


def _check_node(node: nodes.Node) -> None:
    if isinstance(node, nodes.Name) and (node.name in _BLOCKED_NAMES or node.name[:1] == "_"):
        raise _fail(node, f"the name {node.name!r} is not allowed in prompt templates")
    if isinstance(node, nodes.Getattr):
        _check_attr(node, node.attr)
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        if isinstance(node.arg.value, str):
            _check_attr(node, node.arg.value)
    elif isinstance(node, nodes.Filter | nodes.Test):
        _check_filter(node)
    elif isinstance(node, nodes.Const):
        _check_constant(node)


def _check_attr(node: nodes.Node, attr: str) -> None:
    if attr.startswith("_") or attr in _BLOCKED_ATTRS:
        raise _fail(node, f"access to the attribute {attr!r} is not allowed")


def _check_filter(node: nodes.Filter | nodes.Test) -> None:
    if node.name.startswith("_"):
        raise _fail(node, f"the filter {node.name!r} is not allowed")
    if isinstance(node, nodes.Filter) and node.name == "attr":
        # The only use of `attr` is a computed attribute name; a constant one can be checked.
        arg = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if not isinstance(arg, nodes.Const) or not isinstance(arg.value, str):
            raise _fail(node, "the attr filter needs one constant attribute name")
        _check_attr(node, arg.value)


def _check_constant(node: nodes.Const) -> None:
    value = node.value
    if isinstance(value, str) and "__" in value:
        # Dunder names in strings are how attribute filters and format specs are steered.
        raise _fail(node, f"the string {value!r} contains '__', which is not allowed")
    if isinstance(value, int | float) and not isinstance(value, bool) and abs(value) > MAX_CONSTANT:
        raise _fail(node, f"the number {value} is larger than {MAX_CONSTANT}")


class _Guards(NodeTransformer):
    """Routes every loop and every `~` through the budget and size checks."""

    def __init__(self, env: _Sandbox) -> None:
        self.env = env

    def _filter(self, node: nodes.Node, name: str, lineno: int) -> nodes.Filter:
        assert isinstance(node, nodes.Expr)
        wrapped = nodes.Filter(node, name, [], [], None, None, lineno=lineno)
        wrapped.set_environment(self.env)
        return wrapped

    def visit_For(self, node: nodes.For) -> nodes.For:
        self.generic_visit(node)
        node.iter = self._filter(node.iter, "_keel_iter", node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Filter:
        self.generic_visit(node)
        items = nodes.List(list(node.nodes), lineno=node.lineno)
        items.set_environment(self.env)
        return self._filter(items, "_keel_concat", node.lineno)


def _iterate(value: Any) -> Iterator[Any]:
    budget = _budget()
    for item in value:
        budget.tick()
        yield item


def _concat(values: list[Any]) -> str:
    _budget().tick()
    parts = [str(v) for v in values]
    _check_size(sum(len(p) for p in parts))
    return "".join(parts)


def _check_size(size: int) -> None:
    if size > MAX_VALUE:
        raise SecurityError(f"the template builds a value longer than {MAX_VALUE} characters")


def _check_int_args(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT_ARG:
            raise SecurityError(f"the number {value} is too large for a function argument")


def _check_format(value: Any) -> None:
    if isinstance(value, str) and _WIDE_FORMAT.search(value):
        raise SecurityError("format widths and precisions must be given and below 100000")


def _safe_range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise SecurityError(f"range() is limited to {MAX_RANGE} numbers")
    return numbers


def _guard_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    # Filters are called directly by compiled templates, not through `call`, so the argument and
    # result checks wrap each one. `wraps` keeps `jinja_pass_arg`, which says what Jinja passes.
    skip = 2 if getattr(func, "jinja_pass_arg", None) is not None else 1

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        _budget().tick()
        _check_int_args(args[skip:], kwargs)
        if name == "format" and len(args) >= skip:
            _check_format(args[skip - 1])
        result = func(*args, **kwargs)
        if isinstance(result, str | list | tuple):
            _check_size(len(result))
        return result

    return guarded


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with size checks on the operators that can multiply memory."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        return attr not in _BLOCKED_ATTRS and super().is_safe_attribute(obj, attr, value)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _budget().tick()
        if operator == "**":
            raise SecurityError("the ** operator is not allowed")
        if operator == "*":
            _check_product(left, right)
        elif operator == "+" and hasattr(left, "__len__") and hasattr(right, "__len__"):
            _check_size(len(left) + len(right))
        elif operator == "%":
            _check_format(left)
        return self.binop_table[operator](left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _budget().tick()
        _check_int_args(args, kwargs)
        return super().call(context, obj, *args, **kwargs)


def _check_product(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > 4096:
            raise SecurityError("the product of these numbers is too large")
        return
    for seq, count in ((left, right), (right, left)):
        if isinstance(seq, str | list | tuple) and isinstance(count, int):
            _check_size(len(seq) * max(count, 0))


def _make_environment() -> _Sandbox:
    env = _Sandbox(undefined=StrictUndefined, autoescape=False)
    env.loader = None  # template names never come from users: nothing to include or extend
    env.globals.clear()
    env.globals.update(range=_safe_range, dict=dict)
    env.filters = {name: _guard_filter(name, f) for name, f in env.filters.items()}
    env.filters["_keel_iter"] = _iterate
    env.filters["_keel_concat"] = _concat
    return env


environment = _make_environment()


def compile_checked(tree: nodes.Template) -> Any:
    """Compile a checked tree, with the loop and `~` guards added; returns a jinja2 Template."""
    guarded = _Guards(environment).visit(tree)
    return environment.from_string(guarded)
