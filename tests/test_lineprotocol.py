"""InfluxDB line protocol encoding: escaping and the type of every field value."""

from __future__ import annotations

from kansoku.lineprotocol import encode, encode_many
from kansoku.metric import Metric


def test_types_escape_and_time() -> None:
    metric = Metric(
        "my room,1",
        {"temp c": 25.0, "count": 3, "on": True, "note": 'say "hi" \\ back\nline two'},
        {"host": "pi 4", "a=b": "c,d", "empty": ""},
        1_700_000_000_123_456_789,
    )
    assert encode(metric) == (
        "my\\ room\\,1,a\\=b=c\\,d,host=pi\\ 4 "
        'temp\\ c=25.0,count=3i,on=true,note="say \\"hi\\" \\\\ back\nline two" '
        "1700000000123456789"
    )


def test_precision_and_many() -> None:
    points = [Metric("m", {"v": 1.5}, {}, 2_000_000_000), Metric("m", {"v": -2}, {}, 3_999_999_999)]
    assert encode_many(points, 10**9) == "m v=1.5 2\nm v=-2i 3\n"


def test_float_forms_stay_floats() -> None:
    line = encode(Metric("m", {"a": 1e-7, "b": 1e22, "c": -0.0}, {}, 0))
    assert line == "m a=1e-07,b=1e+22,c=-0.0 0"
