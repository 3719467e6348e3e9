import pandas as pd

from kdlab.tables import diff, published, to_markdown


def test_published_numbers():
    p = published("reffakd")
    assert p["table4_fashion_mnist"]["reffakd"]["value"] == 92.37
    assert p["table6"]["fashion_mnist"] == {"flops": 154, "macs": 155, "params": 239, "memory": 237}
    assert p["table8"]["cifar100"]["reffakd"] == 77.03


def test_markdown_and_missing_values():
    df = pd.DataFrame([{"a": "x", "b": 1.234, "c": None}])
    assert to_markdown(df) == "| a | b | c |\n|---|---|---|\n| x | 1.23 | — |\n"
    assert diff(91.0, 92.14) == -1.1400000000000006 and diff(None, 1.0) is None
