"""The optional C extension of Keel: everything else about the package is in pyproject.toml.

`keel.traces._otlp_wire` decodes OTLP protobuf trace exports fast; where it cannot be compiled
(no C compiler, no Python headers) it is skipped and Keel decodes with the reference decoder.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "keel.traces._otlp_wire",
            sources=["src/keel/traces/_otlp_wire.c", "src/keel/traces/_span_map.c"],
            depends=["src/keel/traces/_span_map.h"],
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
            optional=True,
        )
    ]
)
