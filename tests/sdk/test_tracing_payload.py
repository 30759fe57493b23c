"""keel.sdk.payload: any value becomes bounded JSON text, and nothing in it can raise."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pydantic

from keel.sdk.payload import jsonable, to_json


@dataclass
class Point:
    x: int
    label: str


class Model(pydantic.BaseModel):
    name: str
    tags: list[str]


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class BadModel:
    def model_dump(self, mode: str) -> Any:
        raise RuntimeError("no dump")

    def __repr__(self) -> str:
        return "BadModel()"


def test_values_become_json() -> None:
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    value = {
        "point": Point(1, "a"),
        "model": Model(name="m", tags=["t"]),
        "blob": b"\x00\x01\x02",
        "set": {3},
        "nan": float("nan"),
        "bad": BadRepr(),
        "bad_model": BadModel(),
        "cyclic": cyclic,
        7: None,
    }
    assert jsonable(value) == {
        "point": {"x": 1, "label": "a"},
        "model": {"name": "m", "tags": ["t"]},
        "blob": "<3 bytes>",
        "set": [3],
        "nan": "nan",
        "bad": "<BadRepr>",
        "bad_model": "BadModel()",
        "cyclic": [1, [1, [1, [1, [1, [1, [1, "<list: too deep>"]]]]]]],
        "7": None,
    }


def test_work_is_bounded_by_the_budget() -> None:
    huge = [["x" * 1000] * 200] * 200  # 40 MB of text if walked in full
    walked = jsonable(huge, budget=3000)
    assert walked[:2] == [["x" * 1000, "x" * 1000, "x" * 996 + "…", "… 197 more"], "… 199 more"]
    assert to_json(huge, limit=100) == '[["' + "x" * 97 + "…[truncated]"
    assert to_json(["y" * 10], limit=12) == '["yyyyyyyyyy…[truncated 2 chars]'  # nothing walked off


def test_containers_and_text_are_capped() -> None:
    assert jsonable(list(range(250)))[-2:] == [199, "… 50 more"]
    assert jsonable({str(i): i for i in range(201)})["…"] == "1 more"
    assert to_json("x" * 20, limit=5) == "xxxxx…[truncated 15 chars]"
    assert to_json("short", limit=5) == "short"  # strings are not re-quoted
    assert json.loads(to_json({"a": "é"})) == {"a": "é"}
    assert to_json(["é"]) == '["é"]'
