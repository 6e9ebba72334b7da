"""Try your own photo (`phi3v_tutorial.demo`): one picture's answer, the web page over HTTP, its command
line, and the page in a real browser (headless Chromium driven by playwright).

The browser tests (tests/browser.py's headless Chromium) skip only when Chromium is missing and
PHI3V_REQUIRE_BROWSER is unset (CI sets it, so there they fail instead). Their screenshots land in
runs/test-artifacts/: demo-base-model-answer.png, demo-parsed-fields.png, demo-not-a-picture.png.
"""

import datetime
import json
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from browser import browser_page, require_browser, screenshot
from PIL import Image

from phi3v_tutorial import demo
from phi3v_tutorial.data.images import UNUSABLE_REASONS, UnusableImage
from phi3v_tutorial.data.rendering import Look, render_product, sample_look

REPO = Path(__file__).resolve().parents[1]
BASE_MODEL = REPO / "models" / "tiny-phi3v-base"
ARTIFACTS = REPO / "runs" / "test-artifacts"
CANNED_ANSWER = "Product: Check Leather Belt in Black, Category: BELTS, Full Price: 380.00"
BELT = Look("belt", "Black", pattern="check", material="leather")  # the picture the canned answer describes


def product_photo(seed: int = 0, size: tuple[int, int] = (300, 360), look: Look | None = None) -> bytes:
    """A catalog-style product picture (a random look unless given), as a JPEG file's bytes."""
    picture = render_product(look or sample_look(np.random.default_rng(seed)), seed, size=size)
    buffer = BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def multipart(fields: dict[str, tuple[str, bytes]], boundary: str | None = None) -> tuple[bytes, str]:
    """(body, content type) of a multipart/form-data upload of `fields`: name -> (file name, content)."""
    boundary = boundary or uuid.uuid4().hex
    body = b""
    for name, (filename, content) in fields.items():
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n").encode() + content + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(url: str, body: bytes, content_type: str) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def upload(url: str, filename: str, content: bytes) -> tuple[int, dict]:
    return post(url + "api/answer", *multipart({"picture": (filename, content)}))


# --- without a model ----------------------------------------------------------------------------


def test_multipart_content_passes_byte_for_byte():
    content = bytes(range(256)) * 4 + b"\r\n--almost-the-boundary\r\n\r\n" + b"\n\r"
    body, content_type = multipart({"note": ("a.txt", b"first"), "picture": ("photo.jpg", content)}, "almost")
    assert demo.multipart_file(body, content_type) == ("photo.jpg", content)


def test_multipart_without_the_picture_or_not_multipart_is_a_clear_problem():
    body, content_type = multipart({"note": ("a.txt", b"text")})
    with pytest.raises(demo.UploadProblem) as missing:
        demo.multipart_file(body, content_type)
    assert missing.value.reason == "no_file"
    body, content_type = multipart({"picture": ("empty.jpg", b"")})
    with pytest.raises(demo.UploadProblem, match="no_file"):
        demo.multipart_file(body, content_type)
    with pytest.raises(demo.UploadProblem, match="bad_request"):
        demo.multipart_file(b"picture=abc", "application/x-www-form-urlencoded")


def test_every_reason_a_picture_is_unusable_has_a_message():
    assert set(UNUSABLE_REASONS) <= set(demo.PROBLEMS)
    assert "not a picture" in demo.problem_message("not_an_image")
    assert "unknown_reason" in demo.problem_message("unknown_reason")


def write_fine_tune_metrics(run_dir: Path, trained_model) -> None:
    (run_dir / "metrics").mkdir(parents=True)
    (run_dir / "metrics" / "04_fine_tuning.json").write_text(json.dumps({"trained_model": trained_model}))


def test_the_default_model_is_the_last_run_s_fine_tuned_one(tmp_path):
    trained = tmp_path / "fine-tune" / "merged"
    trained.mkdir(parents=True)
    write_fine_tune_metrics(tmp_path / "run", str(trained))
    assert demo.default_model("tiny", tmp_path / "run") == (str(trained), None)


@pytest.mark.parametrize("recorded", ["missing file", None, "/no/such/model"])
def test_without_a_fine_tuned_model_the_default_is_the_base_model_with_a_note(tmp_path, recorded):
    if recorded != "missing file":
        write_fine_tune_metrics(tmp_path, recorded)
    model, note = demo.default_model("tiny", tmp_path)
    assert model == str(BASE_MODEL)
    assert "make tutorial" in note and "not in the catalog format" in note
    if recorded == "/no/such/model":
        assert "/no/such/model" in note


def test_a_notebook_relative_model_path_resolves_from_notebooks():
    assert demo.resolve_model_path("../models/tiny-phi3v-base") == str(BASE_MODEL)
    assert demo.resolve_model_path("microsoft/Phi-3-vision-128k-instruct") == "microsoft/Phi-3-vision-128k-instruct"


def test_the_picture_comes_from_the_upload_then_the_path_then_the_fallback(tmp_path):
    widgets = pytest.importorskip("ipywidgets")
    picker = demo.upload_widget()
    assert isinstance(picker, widgets.FileUpload)
    assert demo.choose_picture(picker, None, "sample.jpg") == ("sample.jpg", "sample.jpg (no picture chosen: a sample one)")
    assert demo.choose_picture(picker, tmp_path / "mine.png", "sample.jpg") == (tmp_path / "mine.png", str(tmp_path / "mine.png"))
    picker.value = ({"name": "bag.jpg", "type": "image/jpeg", "size": 3, "content": memoryview(b"abc"),
                     "last_modified": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)},)
    assert demo.choose_picture(picker, tmp_path / "mine.png", "sample.jpg") == (b"abc", "upload bag.jpg")
    with pytest.raises(ValueError, match="no picture"):
        demo.choose_picture(None, None, None)


def test_an_ipywidgets_7_upload_is_read_too():
    class Picker:  # ipywidgets 7 keeps a dict by file name
        value = {"bag.jpg": {"metadata": {"name": "bag.jpg"}, "content": b"abc"}}

    assert demo.uploaded_file(Picker()) == ("bag.jpg", b"abc")


# --- with the shipped tiny base model --------------------------------------------------------------


@pytest.fixture(scope="module")
def base_app():
    model, processor = demo.load_model(str(BASE_MODEL))
    return demo.DemoApp(model, processor, str(BASE_MODEL), note="the base model: a test", num_crops=4)


@pytest.fixture(scope="module")
def base_url(base_app):
    with demo.running(base_app) as url:
        yield url


def test_answer_picture_gives_the_raw_answer_and_its_parsed_fields(base_app, monkeypatch):
    photo = product_photo()
    result = demo.answer_picture(base_app.model, base_app.processor, photo, num_crops=4)
    assert set(result) == {"answer", "product", "category", "price", "status", "width", "height", "seconds"}
    assert result["answer"].strip() and (result["width"], result["height"]) == (300, 360)
    # greedy: the same picture as a PIL image, or as a file, gets the same answer
    picture = Image.open(BytesIO(photo))
    assert demo.answer_picture(base_app.model, base_app.processor, picture, num_crops=4)["answer"] == result["answer"]
    # an answer in the catalog format is read into its fields
    monkeypatch.setattr(demo, "generate_answers", lambda *args, **kwargs: [CANNED_ANSWER])
    parsed = demo.answer_picture(base_app.model, base_app.processor, photo)
    assert (parsed["answer"], parsed["product"], parsed["category"], parsed["price"], parsed["status"]) == (
        CANNED_ANSWER, "Check Leather Belt in Black", "BELTS", 380.0, "ok")


def test_answer_picture_refuses_what_is_no_picture(base_app, tmp_path):
    with pytest.raises(UnusableImage) as error:
        demo.answer_picture(base_app.model, base_app.processor, b"just some text, saved as .jpg")
    assert error.value.reason == "not_an_image"
    with pytest.raises(UnusableImage) as error:
        demo.answer_picture(base_app.model, base_app.processor, product_photo()[:600])
    assert error.value.reason == "corrupt_image"
    with pytest.raises(FileNotFoundError):
        demo.answer_picture(base_app.model, base_app.processor, tmp_path / "nothing.jpg")


def test_the_page_answers_a_photo_as_json(base_url, base_app):
    photo = product_photo(1)
    status, result = upload(base_url, "bag.jpg", photo)
    assert status == 200 and result["ok"] and result["file"] == "bag.jpg"
    expected = demo.answer_picture(base_app.model, base_app.processor, photo, num_crops=4)
    assert result["answer"] == expected["answer"] and result["status"] == expected["status"]


@pytest.mark.parametrize("filename, content, reason, status", [
    ("notes.jpg", b"a text file renamed .jpg\n", "not_an_image", 400),
    ("cut.jpg", product_photo(2)[:700], "corrupt_image", 400),
    ("empty.jpg", b"", "no_file", 400),
])
def test_an_unusable_upload_gets_its_reason_and_a_message(base_url, filename, content, reason, status):
    got_status, result = upload(base_url, filename, content)
    assert got_status == status
    assert result["ok"] is False and result["reason"] == reason and result["message"] == demo.problem_message(reason)


def test_a_too_large_upload_is_refused_with_413(base_url, monkeypatch):
    monkeypatch.setattr(demo, "MAX_UPLOAD_BYTES", 1000)
    status, result = upload(base_url, "big.jpg", product_photo())
    assert status == 413 and result["reason"] == "too_large"


def test_a_request_that_is_not_multipart_is_a_bad_request(base_url):
    status, result = post(base_url + "api/answer", b'{"picture": 1}', "application/json")
    assert status == 400 and result["reason"] == "bad_request"


def test_the_page_has_a_file_input_and_a_drop_zone_and_nothing_else_is_served(base_url):
    with urllib.request.urlopen(base_url, timeout=30) as response:
        page = response.read().decode()
    assert 'type="file"' in page and 'id="drop-zone"' in page and 'enctype="multipart/form-data"' in page
    assert "the base model: a test" in page  # the note on which model answers
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(base_url + "secrets", timeout=30)
    assert missing.value.code == 404


def test_the_html_answer_shows_the_parsed_fields_and_escapes_the_raw_answer(base_app, monkeypatch):
    monkeypatch.setattr(demo, "generate_answers", lambda *args, **kwargs: [CANNED_ANSWER + " <b>&</b>"])
    result = {"ok": True, "file": "belt.jpg", **base_app.answer(product_photo())}
    page = demo.page(base_app, result, product_photo())
    assert '<td id="product">Check Leather Belt in Black</td>' in page
    assert '<td id="category">BELTS</td>' in page and '<td id="price">380.00</td>' in page
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in page and 'src="data:image/jpeg;base64,' in page


def test_the_command_line_serves_on_a_free_port_and_stops_cleanly_on_sigterm():
    process = subprocess.Popen([sys.executable, "-m", "phi3v_tutorial.demo", "--model", str(BASE_MODEL), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        lines = []
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            if found:
                break
        assert found, "".join(lines)
        url = found.group(0)
        status, result = upload(url, "notes.jpg", b"not a picture")
        assert status == 400 and result["reason"] == "not_an_image"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, output
        assert "Demo stopped." in output
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# --- in a browser (tests/browser.py: headless Debian Chromium, only 127.0.0.1 reachable) ----------------


@pytest.fixture(scope="module")
def browser_tab():
    """One headless Chromium tab for the browser tests (skipped without chromium unless PHI3V_REQUIRE_BROWSER)."""
    require_browser()
    with browser_page(width=1100, height=900) as tab:
        yield tab
        assert tab.blocked_requests == [], "the page asked for something off this machine"


@pytest.fixture
def page(browser_tab):
    yield browser_tab


def save_screenshot(page, name: str) -> None:
    screenshot(page, ARTIFACTS, name, full_page=True)


def test_in_a_browser_a_chosen_photo_gets_the_model_s_answer(page, base_url, base_app, tmp_path):
    photo_path = tmp_path / "product.jpg"
    photo_path.write_bytes(product_photo(3))
    expected = demo.answer_picture(base_app.model, base_app.processor, photo_path, num_crops=4)
    page.goto(base_url)
    with page.expect_navigation():
        page.set_input_files("#picture", str(photo_path))  # choosing a file sends it
    page.wait_for_selector("#result")
    assert page.inner_text("#raw-answer") == expected["answer"]
    for field in ("product", "category", "price"):
        shown = page.inner_text(f"#{field}")
        assert shown == ("not in the answer" if expected[field] is None else
                         f"{expected[field]:,.2f}" if field == "price" else expected[field])
    assert page.inner_text("#status") == expected["status"]
    assert page.locator("#uploaded").evaluate("image => image.naturalWidth") > 0
    assert page.locator("#error").count() == 0
    save_screenshot(page, "demo-base-model-answer")


def test_in_a_browser_a_catalog_answer_is_shown_field_by_field(page, base_url, tmp_path, monkeypatch):
    """The page's rendering of an answer in the catalog format, whatever the tiny base model would say
    (it never answers so): generation is replaced by the answer a fine-tuned model gives a belt."""
    monkeypatch.setattr(demo, "generate_answers", lambda *args, **kwargs: [CANNED_ANSWER])
    photo_path = tmp_path / "belt.jpg"
    photo_path.write_bytes(product_photo(4, look=BELT))
    page.goto(base_url)
    with page.expect_navigation():
        page.set_input_files("#picture", str(photo_path))
    page.wait_for_selector("#result")
    assert page.inner_text("#product") == "Check Leather Belt in Black"
    assert page.inner_text("#category") == "BELTS"
    assert page.inner_text("#price") == "380.00"
    assert page.inner_text("#raw-answer") == CANNED_ANSWER
    assert page.inner_text("#status") == "ok"
    save_screenshot(page, "demo-parsed-fields")


def test_in_a_browser_a_dropped_text_file_gets_a_clear_message(page, base_url):
    page.goto(base_url)
    with page.expect_navigation():  # drop a text file renamed .jpg on the drop zone
        page.evaluate("""() => {
            const data = new DataTransfer();
            data.items.add(new File(['just some notes, not a photo'], 'notes.jpg', {type: 'image/jpeg'}));
            document.getElementById('drop-zone').dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true}));
        }""")
    page.wait_for_selector("#error")
    assert page.get_attribute("#error", "data-reason") == "not_an_image"
    message = page.inner_text("#error")
    assert "notes.jpg" in message and "This file is not a picture" in message
    assert page.locator("#result").count() == 0
    save_screenshot(page, "demo-not-a-picture")
