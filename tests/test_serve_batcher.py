"""The serve batcher and pixel budget without HTTP: real photos through a real Recognizer."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import PHOTOS, need

pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e \".[serve]\"")

NAMES = ["face_recognition__obama.jpg", "face_recognition__two_people.jpg", "dlib__2008_001322.jpg",
         "face_recognition__biden.jpg", "face_recognition__kit_with_rose.jpg", "dlib__2008_002079.jpg"]


@pytest.fixture(scope="module")
def recognizer():
    from ferkit.recognizer import Recognizer

    return Recognizer()


def test_concurrent_submits_share_model_calls_and_keep_their_own_results(recognizer):
    from ferkit.io import read_image
    from ferkit.serve.batcher import Batcher

    folder = need(PHOTOS)
    images = [read_image(folder / n) for n in NAMES]
    expected = [recognizer.analyze(img) for img in images]
    batches: list[int] = []

    async def run():
        batcher = Batcher(recognizer, max_batch=4, wait_ms=20, on_batch=lambda n, faces, s: batches.append(n))
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(img, name) for img, name in zip(images, NAMES)))
        finally:
            await batcher.stop()

    results = asyncio.run(run())
    assert [r.source for r in results] == NAMES
    for got, want in zip(results, expected):
        assert [f.box for f in got.faces] == [f.box for f in want.faces]
        for g, w in zip(got.faces, want.faces):
            assert g.scores == pytest.approx(w.scores, abs=1e-5)
    assert sum(batches) == len(NAMES) and max(batches) == 4  # 6 images at once: a full batch of 4, then the rest


def test_a_request_that_gives_up_does_not_stop_the_batcher(recognizer):
    from ferkit.io import read_image
    from ferkit.serve.batcher import Batcher

    image = read_image(need(PHOTOS) / NAMES[0])

    async def run():
        batcher = Batcher(recognizer)
        batcher.start()
        try:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(batcher.submit(image, "gave-up"), 0.001)
            return await batcher.submit(image, "next")
        finally:
            await batcher.stop()

    result = asyncio.run(run())
    assert result.source == "next" and len(result.faces) == 1


def test_pixel_budget_bounds_what_is_held_at_once():
    from ferkit.serve.service import PixelBudget

    async def run():
        budget = PixelBudget(100)
        peak, order = 0, []

        async def hold(name: str, pixels: int, seconds: float):
            nonlocal peak
            async with budget.hold(pixels):
                peak = max(peak, budget.used)
                order.append(name)
                await asyncio.sleep(seconds)

        await asyncio.gather(hold("a", 60, 0.05), hold("b", 60, 0.01), hold("huge", 10_000, 0.01))
        return peak, order, budget.used

    peak, order, left = asyncio.run(run())
    assert peak <= 100 and left == 0
    assert order[0] == "a" and set(order) == {"a", "b", "huge"}  # b and huge waited for room; huge ran alone
