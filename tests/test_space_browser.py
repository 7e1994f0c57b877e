"""The Space in a real browser: Debian Chromium driven by Playwright for Python, against the app on
localhost with a tiny random model. Screenshots go to $HF_MIDI_ARTIFACTS/space (default
artifacts/space at the repository root)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import symusic
from conftest import EDGE_FIXTURES, POP909_FIXTURES, ROOT
from test_space import free_port, load_app, write_tiny_model

CHROMIUM = Path("/usr/bin/chromium")
# The options that work in containers without a GPU or a user namespace (ENVIRONMENT.md).
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("HF_MIDI_ARTIFACTS", ROOT / "artifacts")) / "space"
TIMEOUT_MS = 90_000  # a generation on 2 busy shared cores

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"needs Debian Chromium at {CHROMIUM} (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    app = load_app()
    pipe = app.load_pipeline(str(write_tiny_model(tmp_path_factory.mktemp("tiny-gpt2"))))
    demo = app.build_demo(pipe=pipe)
    port = free_port()
    app.launch(demo, port=port, prevent_thread_lock=True, quiet=True)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server)
    yield page
    context.close()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def set_number(page, elem_id: str, value: float) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def set_slider(page, elem_id: str, value: float) -> None:
    """Type ``value`` into a slider's box until the slider shows it: a group that has just opened may
    render its sliders again and drop a value typed too early."""
    from playwright.sync_api import expect

    for _ in range(5):
        set_number(page, elem_id, value)
        try:
            expect(page.locator(f"#{elem_id} input[type=range]")).to_have_value(str(value), timeout=2000)
            return
        except AssertionError:
            continue
    raise AssertionError(f"#{elem_id} did not take {value}")


def wait_for_variation(page, n: int = 1, longer_than: float = 0.0) -> float:
    """Wait until variation n has playable audio (longer than ``longer_than`` s), a piano roll and a
    MIDI link; return the audio's duration as the browser decoded it."""
    from playwright.sync_api import expect

    audio = page.locator(f"#audio-{n} audio[src]").first
    expect(audio).to_have_attribute("src", re.compile(".+"))
    page.wait_for_function(
        "([el, t]) => el.duration > t && isFinite(el.duration)", arg=[audio.element_handle(), longer_than]
    )
    expect(page.locator(f"#roll-{n} img")).to_have_attribute("src", re.compile(".+"))
    expect(page.locator(f"#midi-{n} a[download]")).to_have_attribute("download", re.compile(r"\.mid$"))
    return audio.evaluate("el => el.duration")


def download_midi(page, n: int = 1) -> symusic.Score:
    href = page.locator(f"#midi-{n} a[download]").get_attribute("href")
    body = page.request.get(href).body()
    assert body[:4] == b"MThd"
    return symusic.Score.from_midi(body, ttype="second")


def test_before_the_first_piece_the_page_shows_where_it_will_come(page):
    """The output column is not empty before the first click: the hint, and the first variation's player,
    roll and MIDI places, empty."""
    page.get_by_role("button", name="Generate").wait_for()  # the page has loaded
    shot(page, "before-the-first-piece")
    assert "Press Generate" in page.locator("#status").inner_text()
    assert page.locator("#variation-1").first.is_visible() and not page.locator("#variation-2").first.is_visible()
    for place in ("#audio-1", "#roll-1", "#midi-1"):
        assert page.locator(place).first.is_visible(), place
    assert page.locator("#audio-1 audio[src]").count() == 0  # nothing composed yet


def test_compose_then_continue_the_result(page):
    set_number(page, "seconds", 5)
    page.get_by_role("button", name="Generate").click()
    first = wait_for_variation(page)
    assert 5.0 <= first <= 10.0  # 5 s of music, plus the piano's release
    score = download_midi(page)
    assert 4.5 <= max(n.end for t in score.tracks for n in t.notes) <= 7.0
    assert page.locator("#status").inner_text().startswith("Seed ")
    assert not page.locator("#variation-2").is_visible()  # one variation asked
    shot(page, "compose")

    page.get_by_label("Continue the last result").check()
    status = page.locator("#status").inner_text()
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function("s => document.querySelector('#status').innerText != s", arg=status)
    second = wait_for_variation(page, longer_than=first + 3.0)  # the piece and 5 s more
    assert second <= first + 8.0
    shot(page, "continue-last")


def test_one_variation_plays_while_it_is_composed(page):
    """The player gets audio chunks and starts sounding before the piece is finished; the piano roll
    shows while composing; the whole piece is offered at the end."""
    set_number(page, "seconds", 8)
    page.get_by_role("button", name="Generate").click()
    page.wait_for_function("() => window.hfMidiLive && window.hfMidiLive.firstSoundAt != null")
    live = page.evaluate("() => ({first: hfMidiLive.firstSoundAt - hfMidiLive.clickedAt, "
                         "state: hfMidiLive.ctx.state, chunks: hfMidiLive.chunks})")
    assert live["state"] == "running" and 0 < live["first"] < 60_000
    duration = wait_for_variation(page)
    assert 8.0 <= duration <= 13.0
    info = page.evaluate("() => ({chunks: hfMidiLive.chunks, seconds: hfMidiLive.seconds})")
    assert info["chunks"] >= 4  # 8 s of music in chunks of about a second
    assert info["seconds"] == pytest.approx(8.0, abs=0.02)  # every decided moment, once
    assert page.locator("#status").inner_text().startswith("Seed ")
    shot(page, "live")


def test_upload_a_midi_and_continue_it(page):
    page.get_by_label("Continue a MIDI file").check()
    page.locator("#upload input[type=file]").set_input_files(str(POP909_FIXTURES[0]))
    info = page.locator("#upload-info")
    page.wait_for_function("el => /notes/.test(el.innerText)", arg=info.element_handle())
    assert re.search(rf"{POP909_FIXTURES[0].name}: \d+ notes, \d:\d\d long", info.inner_text())
    set_number(page, "keep", 4)
    set_number(page, "seconds", 3)
    set_number(page, "variations", 2)
    page.get_by_role("button", name="Generate").click()
    for n in (1, 2):
        assert 6.5 <= wait_for_variation(page, n) <= 12.0  # 4 s kept + 3 s new, plus the release
    prompt = symusic.Score.from_midi(POP909_FIXTURES[0].read_bytes(), ttype="second")
    first_note = min(n.start for t in prompt.tracks for n in t.notes)
    score = download_midi(page, 2)
    assert abs(min(n.start for t in score.tracks for n in t.notes) - first_note) < 0.011
    shot(page, "continue-upload")


def test_fill_a_gap_in_an_upload(page):
    """Choose "Fill a gap", upload, set the span: the piece comes back whole, the notes outside the span kept, its
    roll marked; the length slider (the upload sets the length) is hidden meanwhile."""
    from playwright.sync_api import expect

    page.get_by_label("Fill a gap in a MIDI file").check()
    expect(page.locator("#seconds").first).to_be_hidden()
    expect(page.locator("#fill-start").first).to_be_visible()
    page.locator("#upload input[type=file]").set_input_files(str(POP909_FIXTURES[0]))
    page.wait_for_function("el => /notes/.test(el.innerText)", arg=page.locator("#upload-info").element_handle())
    set_number(page, "fill-start", 2)
    set_number(page, "fill-end", 4)
    page.get_by_label("Quick (1)").check()
    page.get_by_role("button", name="Generate").click()
    prompt = symusic.Score.from_midi(POP909_FIXTURES[0].read_bytes(), ttype="second")
    assert wait_for_variation(page) >= prompt.end() - 5  # the whole piece, not 2 s of it
    score = download_midi(page)
    before = {(round(n.start, 2), n.pitch) for t in prompt.tracks for n in t.notes if n.start < 1.99}
    got = {(round(n.start, 2), n.pitch) for t in score.tracks for n in t.notes}
    assert len(before - got) <= len(before) // 50  # the notes before the gap kept (to the 10-ms grid)
    shot(page, "fill-a-gap")


def test_bad_uploads_show_a_message_not_a_traceback(page):
    page.get_by_label("Continue a MIDI file").check()
    upload = page.locator("#upload input[type=file]")
    info = page.locator("#upload-info")
    upload.set_input_files(str(EDGE_FIXTURES / "test-not-a-midi-file.mid"))
    page.wait_for_function("el => /not a MIDI file/.test(el.innerText)", arg=info.element_handle())
    assert "test-not-a-midi-file.mid: not a MIDI file" in info.inner_text()
    page.get_by_role("button", name="Generate").click()
    toast = page.get_by_test_id("toast-body").filter(has_text="Error")
    toast.wait_for()
    assert toast.get_by_test_id("toast-text").inner_text().strip() == (
        "test-not-a-midi-file.mid: not a MIDI file (it does not start with 'MThd')")
    assert page.locator("#audio-1 audio[src]").count() == 0  # nothing was made (the empty slot stays)
    page.wait_for_timeout(800)  # the toast slides in
    shot(page, "bad-upload")
    assert "Traceback" not in page.content()

    page.locator("#upload button[aria-label='Clear']").first.click()
    upload.set_input_files(str(EDGE_FIXTURES / "test-empty.mid"))
    page.wait_for_function("el => /no notes/.test(el.innerText)", arg=info.element_handle())
    assert "test-empty.mid has no notes to continue" in info.inner_text()


def test_an_example_fills_the_form(page):
    page.get_by_role("button", name="Continue POP909 #720").click()
    info = page.locator("#upload-info")
    page.wait_for_function("el => /notes/.test(el.innerText)", arg=info.element_handle())
    assert "pop909-720.mid: 895 notes, 3:32 long." in info.inner_text()
    assert page.get_by_label("Continue a MIDI file").is_checked()
    assert page.locator("#seconds input[type=number]").input_value() == "20"


def test_style_steers_the_piece(page):
    """Open *Style*, keep the music between C4 and C5 without pedal, at about 6 notes a second: the MIDI the
    page offers keeps to it."""
    from playwright.sync_api import expect

    set_number(page, "seconds", 5)
    page.locator("#style").get_by_text("Style").first.click()
    expect(page.locator("#pitch-low input[type=number]")).to_be_visible()  # the group has rendered
    for elem_id, value in (("pitch-low", 60), ("pitch-high", 72), ("density", 6)):
        set_slider(page, elem_id, value)  # the page has taken it before Generate reads it
    page.locator("#pedal input[type=checkbox]").uncheck()
    expect(page.locator("#pedal input[type=checkbox]")).not_to_be_checked()
    page.get_by_role("button", name="Generate").click()
    wait_for_variation(page)
    score = download_midi(page)
    notes = [n for t in score.tracks for n in t.notes]
    assert len(notes) > 5 and all(60 <= n.pitch <= 72 for n in notes)
    assert not any(c.number == 64 and c.value >= 64 for t in score.tracks for c in t.controls)
    shot(page, "style")


def test_a_bad_style_through_the_page_is_shown(page):
    from playwright.sync_api import expect

    page.locator("#style").get_by_text("Style").first.click()
    expect(page.locator("#pitch-low input[type=number]")).to_be_visible()
    for elem_id, value in (("pitch-low", 90), ("pitch-high", 40)):
        set_slider(page, elem_id, value)
    page.get_by_role("button", name="Generate").click()

    expect(page.get_by_text("Pitch range: low 90 is above high 40")).to_be_visible()
    assert page.locator("#audio-1 audio[src]").count() == 0  # nothing was made
