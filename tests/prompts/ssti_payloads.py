"""Known Jinja2 server-side template injection and sandbox-escape payloads.

`STATIC` are refused by `keel.prompts.render.validate` before anything runs. `RUNTIME` are valid
templates that try to exhaust memory or time; the sandbox stops them while they render. "MARKER"
stands for a file path the test checks was never created, and `x` for a variable the test passes.
"""

from __future__ import annotations

STATIC: dict[str, str] = {
    "str_mro_subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "cycler_globals_popen": "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "joiner_globals_popen": "{{ joiner.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "namespace_globals": "{{ namespace.__init__.__globals__ }}",
    "lipsum_globals_popen": "{{ lipsum.__globals__['os'].popen('touch MARKER').read() }}",
    "self_private_context": "{{ self._TemplateReference__context }}",
    "self_reference": "{{ self }}",
    "flask_request_globals": (
        "{{ request.application.__globals__.__builtins__.__import__('os')"
        ".popen('touch MARKER').read() }}"
    ),
    "flask_config_items": "{{ config.items() }}",
    "flask_url_for_globals": "{{ url_for.__globals__['current_app'].config }}",
    "flask_flashed_globals": "{{ get_flashed_messages.__globals__ }}",
    "attr_filter_class": "{{ ''|attr('__class__') }}",
    "attr_filter_hex_escaped": r"{{ ()|attr('\x5f\x5fclass\x5f\x5f') }}",
    "attr_filter_concatenated": "{{ ''|attr('_' ~ '_class_' ~ '_') }}",
    "attr_filter_globals": "{{ x|attr('__globals__') }}",
    "attr_filter_format": "{{ x|attr('format') }}",
    "for_over_subclasses": (
        "{% for c in ().__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}"
    ),
    "list_pop_self": "{{ [].pop.__self__ }}",
    "format_filter_attribute": "{{ '%s'|format(x.__class__) }}",
    "str_format_spec_attribute": "{{ '{0.__class__.__mro__}'.format(x) }}",
    "str_format_no_dunder": "{{ '{0.mro}'.format(x) }}",
    "str_format_globals": "{{ ''.format.__globals__ }}",
    "format_map": "{{ '{a}'.format_map(x) }}",
    "variable_dict": "{{ x.__dict__ }}",
    "variable_init_globals": "{{ x.__init__.__globals__['os'].popen('touch MARKER') }}",
    "variable_mro_method": "{{ x.mro() }}",
    "getitem_dunder": "{{ x['__class__'] }}",
    "getitem_concatenated": "{{ ''['__cla' ~ 'ss__'] }}",
    "map_attribute_dunder": "{{ [x]|map(attribute='__class__')|list }}",
    "loop_private": "{% for i in [1] %}{{ loop.__class__ }}{% endfor %}",
    "dict_global_subclasses": "{{ dict.__base__.__subclasses__() }}",
    "generator_frame": "{{ x.gi_frame.f_globals }}",
    "func_globals": "{{ x.func_globals }}",
    "huge_range_power": "{{ range(10**9)|list }}",
    "huge_range_literal": "{{ range(1000000000)|list }}",
    "huge_repeat_power": '{{ "a"*10**9 }}',
    "huge_repeat_literal": '{{ "a"*1000000000 }}',
    "include_passwd": "{% include '/etc/passwd' %}",
    "include_variable_name": "{% include x %}",
    "extends": "{% extends 'x' %}",
    "import_os": "{% import 'os' as os %}",
    "from_import": "{% from 'os' import popen %}",
    "macro_recursion": "{% macro f(s) %}{{ f(s ~ s) }}{% endmacro %}{{ f('a') }}",
    "call_block": "{% macro m() %}{{ caller() }}{% endmacro %}{% call m() %}x{% endcall %}",
    "private_name": "{{ _private }}",
    "builtins_name": "{{ __builtins__ }}",
    "os_name": "{{ os.popen('touch MARKER').read() }}",
}

_DOUBLE = "{% set s = s ~ s %}"

RUNTIME: dict[str, str] = {
    "set_doubling": "{% set s = 'abcdefgh' %}" + _DOUBLE * 30 + "{{ s|length }}",
    "nested_loops": (
        "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}"
    ),
    "center_width": "{{ 'x'|center(999999) }}",
    "str_method_width": "{{ 'x'.ljust(999999) }}",
    "printf_width": "{{ '%999999999s'|format(1) }}",
    "printf_star_width": "{{ '%*s' % (99999, 'x') }}",
    "repeat_variable": "{{ x * 1000000 }}",
    "number_squaring": "{% set n = 999999 %}" + "{% set n = n * n %}" * 20 + "{{ n }}",
    "range_too_long": "{{ range(50000)|list }}",
    "output_too_long": "{% for i in range(10000) %}{{ 'y' * 200 }}{% endfor %}",
}
