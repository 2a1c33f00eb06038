"""The accuracy-vs-IPC plot: one panel per dataset, whole-dataset rows left out, a real PNG written."""

from __future__ import annotations

import pytest
from PIL import Image

from datadistill.viz import method_styles, plot_acc_vs_ipc


def _rec(method: str, dataset: str, ipc: int, acc: float) -> dict:
    return {"method": method, "dataset": dataset, "ipc": ipc, "acc_mean": acc, "acc_std": 0.5}


def test_acc_vs_ipc_one_panel_per_dataset(tmp_path):
    records = [_rec("dm", "mnist", 1, 80.0), _rec("dm", "mnist", 10, 90.0), _rec("mtt", "mnist", 1, 70.0),
               _rec("dm", "fashion_mnist", 1, 70.0), _rec("full", "mnist", 0, 99.0)]
    one = plot_acc_vs_ipc(records[:3], tmp_path / "one.png")
    two = plot_acc_vs_ipc(records, tmp_path / "two.png", title="t")
    w1, h1 = Image.open(one).size
    w2, h2 = Image.open(two).size
    # two datasets -> two panels side by side (one legend beside them); the ipc-0 row adds none
    assert abs(h1 - h2) < 0.1 * h1 and w2 > 1.6 * w1


def test_every_method_has_its_own_series_style():
    """Every series stays distinguishable: a colour of its own, and marker with line style never repeated."""
    methods = ["random", "herding", "kcenter", "dd", "dc", "dsa", "dm", "mtt", "haba", "datm", "rded", "frepo"]
    styles = method_styles(methods)
    assert len({s["color"] for s in styles.values()}) == len(methods)
    assert len({(s["marker"], s["linestyle"]) for s in styles.values()}) == len(methods)


@pytest.mark.parametrize("drop_dd", [False, True])  # the results plot has no dd series
def test_methods_drawn_in_one_line_style_differ_clearly_in_colour(drop_dd):
    from datadistill.viz import _METHOD_ORDER

    methods = [m for m in _METHOD_ORDER if not (drop_dd and m == "dd")]
    styles = method_styles(methods)
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            if styles[a]["linestyle"] == styles[b]["linestyle"]:
                distance = sum((x - y) ** 2 for x, y in zip(styles[a]["color"], styles[b]["color"])) ** 0.5
                assert distance > 0.4, (a, b, distance)


def test_acc_vs_ipc_without_records_still_writes(tmp_path):
    out = plot_acc_vs_ipc([_rec("full", "mnist", 0, 99.0)], tmp_path / "empty.png")
    one = plot_acc_vs_ipc([_rec("dm", "mnist", 1, 80.0)], tmp_path / "one.png")
    (w0, h0), (w1, h1) = Image.open(out).size, Image.open(one).size
    assert abs(h0 - h1) < 0.1 * h1 and w0 < w1  # one empty panel, as tall as one with a series, no legend
    grey = Image.open(out).convert("L")
    assert grey.getextrema()[0] < 64  # drawn: its axes and their labels, not a blank image
