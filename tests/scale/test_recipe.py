"""A result by its recipe (`scale.backend.by_recipe` / `unship`): what an explanation sends to the model tier in
place of the result, made again on the other side; a file task's recipe carries the file's bytes."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from demos.explain import tasks
from demos.runtime import cache
from scale import backend
from ui import session

CAT = str(Path(__file__).resolve().parents[2] / "assets" / "images" / "chelsea_cat.jpg")


def test_a_result_travels_as_its_recipe_and_is_made_again_where_it_is_unshipped(tmp_path):
    result = session.remember(tasks.module("image").analyse(CAT), "image", "answer", (CAT,), {})
    ref = backend.by_recipe(result)
    assert isinstance(ref, backend.ResultRef) and (ref.task, ref.fn) == ("image", "answer")
    shipped = ref.args[0]
    assert isinstance(shipped, backend.Shipped) and shipped.data == Path(CAT).read_bytes()
    (again, note), kwargs = backend.unship((ref, "kept"), {"x": 1}, tmp_path)
    assert (note, kwargs) == ("kept", {"x": 1})
    assert again is result  # the answer's memo still held it
    cache.clear_all()  # evicted: the same computation again, from the shipped bytes
    (again,), _ = backend.unship((ref,), {}, tmp_path)
    assert again is not result and again.predicted == result.predicted
    np.testing.assert_array_equal(again.pixel_values, result.pixel_values)
    np.testing.assert_allclose(again.probs, result.probs, rtol=0, atol=1e-6)


def test_a_value_without_a_recipe_travels_as_it_is():
    plain = tasks.module("sentiment").analyse("Fine.")  # not remembered: no recipe noted on it
    assert backend.by_recipe(plain) is plain and backend.by_recipe("text") == "text"
