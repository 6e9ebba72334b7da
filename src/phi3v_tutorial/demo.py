"""Try your own photo: the catalog answer of a model about any picture, in a notebook or a web page.

    python -m phi3v_tutorial.demo                      # the last tiny run's fine-tuned model (make demo)
    python -m phi3v_tutorial.demo --profile full       # the last full run's, on a GPU
    python -m phi3v_tutorial.demo --model runs/tiny/fine-tune/merged --port 0

`answer_picture` asks one picture the training question (*What is shown in this image?*) with the
same greedy generation as notebook 05 and parses the answer with `evaluation.parse_prediction`:
the raw answer next to the product, category and price read from it. Notebook 05's last section
calls it on a file path or a JupyterLab upload; `serve` puts it behind a local web page where a
photo is dropped or picked, and the parsed fields appear beside the raw answer. A file that is no
usable picture gets the reason `data.images.decode_image` gives (not an image, damaged, too many
pixels), never a stack trace.

Why the standard library's `http.server` and not Gradio: the page is one form with a file input
and a drop zone, and one POST. The standard library does that in a couple of hundred lines that
anyone can read, with no new dependency; Gradio pulls in FastAPI, uvicorn, pydantic, httpx and a
frontend bundle (more than a hundred MB), checks the network for updates and analytics unless told
not to, and would grow the environment every CI run installs. The server binds 127.0.0.1 only (it
runs a model on whatever it is sent; use an SSH tunnel to reach it from elsewhere), handles one
question at a time (a lock around generation; the page waits), and stops cleanly on Ctrl-C or
SIGTERM.
"""

import argparse
import base64
import contextlib
import html
import json
import re
import signal
import sys
import threading
import time
from dataclasses import dataclass
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BytesIO
from pathlib import Path

import yaml
from PIL import Image

from phi3v_tutorial.data.images import UnusableImage, decode_image, to_rgb
from phi3v_tutorial.evaluation import parse_prediction
from phi3v_tutorial.generation import generate_answers
from phi3v_tutorial.paths import REPO_ROOT
from phi3v_tutorial.prompts import CATALOG_QUESTION

HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # a product photo is a few MB; bigger uploads are refused unread
MAX_NEW_TOKENS = 64  # as notebook 05: an answer in the catalog format is about 30 tokens
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"  # the profiles' relative paths are relative to it
PARAMS_DIR = REPO_ROOT / "params"

# What a learner reads for each reason `decode_image` gives (data.images.UNUSABLE_REASONS).
PROBLEMS = {
    "not_an_image": "This file is not a picture: it could not be read as an image. "
                    "Upload a photo (JPEG, PNG, WebP, GIF, BMP or TIFF).",
    "corrupt_image": "This picture is damaged or cut short: it could not be decoded to the end. "
                     "Save it again, or try another photo.",
    "too_many_pixels": "This picture has too many pixels to read safely. Scale it down to a few megapixels "
                       "and upload it again.",
    "no_file": "No file came with the request: choose a photo or drop one on the page.",
    "too_large": f"This file is over {MAX_UPLOAD_BYTES // (1024 * 1024)} MB: upload a smaller photo.",
    "bad_request": "The upload could not be read: send the photo as a multipart form field named 'picture'.",
}


# --- one picture, one answer -----------------------------------------------------------------------

def read_picture(picture) -> Image.Image:
    """An RGB picture from a PIL image, the bytes of a file, or a path; UnusableImage if it is none."""
    if isinstance(picture, Image.Image):
        return to_rgb(picture)
    if isinstance(picture, (bytes, bytearray, memoryview)):
        return to_rgb(decode_image(bytes(picture)))
    path = Path(picture).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no picture at {path}")
    return to_rgb(decode_image(path))


def answer_picture(model, processor, picture, num_crops: int | None = None,
                   max_new_tokens: int = MAX_NEW_TOKENS) -> dict:
    """The model's catalog answer about one picture (a PIL image, a file's bytes or a path).

    Greedy decoding of the training question, as `predictions.predict_catalog` asks it. Returns the
    raw `answer`, the fields `parse_prediction` reads from it (`product`, `category`, `price`: None
    when the answer does not name one), its `status` (ok, partial, unparseable, empty), the
    picture's `width` and `height`, and the `seconds` it took. Raises `UnusableImage` (with its
    `reason`) for a file that is no usable picture.
    """
    image = read_picture(picture)
    start = time.perf_counter()
    answer = generate_answers(model, processor, [image], CATALOG_QUESTION, max_new_tokens=max_new_tokens,
                              batch_size=1, num_crops=num_crops, progress=False)[0]
    parsed = parse_prediction(answer)
    return {"answer": answer, "product": parsed.title, "category": parsed.category, "price": parsed.price,
            "status": parsed.status, "width": image.width, "height": image.height,
            "seconds": round(time.perf_counter() - start, 2)}


def problem_message(reason: str) -> str:
    """What a learner reads about an unusable upload (`PROBLEMS`), for any reason."""
    return PROBLEMS.get(reason, f"This file cannot be used ({reason}).")


def thumbnail(picture, size: int = 384) -> Image.Image:
    """The picture (as `read_picture` takes it) scaled to fit `size` x `size`, to show next to its answer."""
    image = read_picture(picture).copy()
    image.thumbnail((size, size))
    return image


# --- in a notebook: a path or an upload widget -------------------------------------------------------

def upload_widget():
    """An ipywidgets file picker for one picture, or None where ipywidgets is not installed."""
    try:
        import ipywidgets
    except ImportError:
        return None
    return ipywidgets.FileUpload(accept="image/*", multiple=False, description="Choose a photo")


def uploaded_file(upload) -> tuple[str, bytes] | None:
    """(name, bytes) of the file picked in an `upload_widget`, or None when nothing was picked.

    ipywidgets 8 holds a tuple of dicts with `name` and `content`; ipywidgets 7 a dict by name.
    """
    value = getattr(upload, "value", None)
    if not value:
        return None
    if isinstance(value, dict):  # ipywidgets 7
        name, entry = next(iter(value.items()))
        return name, bytes(entry["content"])
    return value[0]["name"], bytes(value[0]["content"])


def choose_picture(upload=None, path=None, fallback=None) -> tuple[object, str]:
    """(picture, where it came from): the picture picked in `upload`, else the file at `path`, else `fallback`."""
    picked = uploaded_file(upload) if upload is not None else None
    if picked is not None:
        name, content = picked
        return content, f"upload {name}"
    if path:
        return Path(path).expanduser(), str(path)
    if fallback is None:
        raise ValueError("no picture: pick one in the upload widget or give a path")
    return fallback, f"{fallback} (no picture chosen: a sample one)"


# --- which model ---------------------------------------------------------------------------------

def profile_params(profile: str) -> dict:
    return yaml.safe_load((PARAMS_DIR / f"{profile}.yaml").read_text()) or {}


def resolve_model_path(model: str, relative_to: Path = NOTEBOOKS_DIR) -> str:
    """A path as the notebooks write it (relative to notebooks/) made absolute where it exists there;
    anything else (an absolute path, a hub id) as given."""
    candidate = Path(model).expanduser()
    if not candidate.is_absolute() and (relative_to / candidate).exists():
        return str((relative_to / candidate).resolve())
    return str(candidate) if candidate.exists() else model


def default_model(profile: str = "tiny", run_dir: str | Path | None = None) -> tuple[str, str | None]:
    """(model, note): the fine-tuned model the profile's last run recorded (`trained_model` in
    `<run_dir>/metrics/04_fine_tuning.json`, run_dir `runs/<profile>` by default), else the
    profile's base model with a note saying why."""
    run_dir = Path(run_dir) if run_dir is not None else REPO_ROOT / "runs" / profile
    base = resolve_model_path(profile_params(profile)["base_model"])
    metrics_file = run_dir / "metrics" / "04_fine_tuning.json"
    advice = (f"the base model {base} answers in its own words, not in the catalog format "
              f"(make tutorial PROFILE={profile} fine-tunes one)")
    if not metrics_file.exists():
        return base, f"No fine-tuned model recorded ({metrics_file} is missing): {advice}."
    trained = json.loads(metrics_file.read_text()).get("trained_model")
    if not trained:
        return base, f"{metrics_file} records no trained_model: {advice}."
    resolved = resolve_model_path(trained)
    if not Path(resolved).exists():
        return base, f"The fine-tuned model {trained} recorded in {metrics_file} is gone: {advice}."
    return resolved, None


def model_dtype():
    """bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU (as `training.precision`, which
    this analysis module does not import: it would load the training stack)."""
    import torch

    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_model(model: str):
    """(model, processor) from a folder or a hub id, on the GPU when there is one, ready to answer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoProcessor

    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = AutoModelForCausalLM.from_pretrained(model, dtype=model_dtype()).to(device)
    return loaded.eval(), AutoProcessor.from_pretrained(model)


# --- the web page --------------------------------------------------------------------------------

@dataclass
class DemoApp:
    """What the web page answers with: a loaded model and how to ask it."""

    model: object
    processor: object
    model_name: str
    note: str | None = None
    num_crops: int | None = None
    max_new_tokens: int = MAX_NEW_TOKENS

    def __post_init__(self):
        self.lock = threading.Lock()  # one generation at a time

    def answer(self, content: bytes) -> dict:
        with self.lock:
            return answer_picture(self.model, self.processor, content, num_crops=self.num_crops,
                                  max_new_tokens=self.max_new_tokens)


class UploadProblem(Exception):
    def __init__(self, reason: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST):
        super().__init__(reason)
        self.reason, self.status = reason, status


def header_params(name: str, value: str) -> Message:
    """A header parsed as email does (parameters, quoting, RFC 2231 file names)."""
    message = Message()
    message[name] = value
    return message


def multipart_file(body: bytes, content_type: str, field: str = "picture") -> tuple[str, bytes]:
    """(file name, content) of form field `field` in a multipart/form-data body.

    The body is split on its delimiter lines only (`\\r\\n--boundary`, then `--` or a line end), so
    file content passes through byte for byte. UploadProblem("no_file") when the field is missing or empty, "bad_request" when the body
    is not multipart.
    """
    header = header_params("content-type", content_type)
    boundary = header.get_param("boundary")
    if header.get_content_type() != "multipart/form-data" or not boundary:
        raise UploadProblem("bad_request")
    # a delimiter line: CRLF, --boundary, then -- (the last one) or optional blanks and CRLF (RFC 2046)
    delimiter = re.compile(rb"\r\n--" + re.escape(boundary.encode("latin-1")) + rb"(--|[ \t]*\r\n)")
    pieces = delimiter.split(b"\r\n" + body)  # preamble, then each delimiter's ending and the part after it
    for ending, part in zip(pieces[1::2], pieces[2::2]):
        if ending == b"--":  # the closing delimiter
            break
        head, separator, content = part.partition(b"\r\n\r\n")
        if not separator:
            raise UploadProblem("bad_request")
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            key, colon, value = line.partition(":")
            if colon:
                headers[key.strip().lower()] = value.strip()
        disposition = header_params("content-disposition", headers.get("content-disposition", ""))
        if disposition.get_param("name", header="content-disposition") == field:
            if not content:
                raise UploadProblem("no_file")
            return disposition.get_filename() or "upload", content
    raise UploadProblem("no_file")


def make_handler(app: DemoApp):
    class Handler(BaseHTTPRequestHandler):
        server_version = "phi3v-demo"

        def do_GET(self):
            if self.path.split("?")[0] not in ("/", "/index.html"):
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            self.reply(HTTPStatus.OK, page(app))

        def do_POST(self):
            wants_json = self.path.split("?")[0] == "/api/answer"
            if self.path.split("?")[0] not in ("/", "/answer", "/api/answer"):
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            name, content = None, None
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_UPLOAD_BYTES:
                    self.discard(length)  # read, so that the client gets the answer rather than a reset
                    raise UploadProblem("too_large", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
                body = self.rfile.read(length)
                name, content = multipart_file(body, self.headers.get("Content-Type", ""))
                result = {"ok": True, "file": name, **app.answer(content)}
                status = HTTPStatus.OK
            except UploadProblem as problem:
                result, status = failure(problem.reason, name), problem.status
            except UnusableImage as error:
                detail = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(error))
                result, status = failure(error.reason, name, detail), HTTPStatus.BAD_REQUEST
            except ValueError:  # a Content-Length that is no number
                result, status = failure("bad_request", name), HTTPStatus.BAD_REQUEST
            if wants_json:
                self.reply(status, json.dumps(result), "application/json")
            else:
                self.reply(status, page(app, result, content if result["ok"] else None))

        def discard(self, length: int, chunk: int = 1 << 20):
            while length > 0:
                read = len(self.rfile.read(min(chunk, length)))
                if not read:
                    break
                length -= read

        def reply(self, status: HTTPStatus, text: str, content_type: str = "text/html; charset=utf-8"):
            data = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format, *args):  # noqa: A002 (the base class's name)
            sys.stderr.write(f"demo: {self.address_string()} {format % args}\n")

    return Handler


def failure(reason: str, name: str | None, detail: str | None = None) -> dict:
    return {"ok": False, "file": name, "reason": reason, "message": problem_message(reason), "detail": detail}


def make_server(app: DemoApp, port: int = DEFAULT_PORT) -> ThreadingHTTPServer:
    """The web page's server on 127.0.0.1:`port` (0: a free port, see `server.server_port`), not yet serving."""
    server = ThreadingHTTPServer((HOST, port), make_handler(app))
    server.daemon_threads = True
    return server


@contextlib.contextmanager
def running(app: DemoApp, port: int = 0):
    """Serve `app` in a background thread for the `with` block; yields the page's URL."""
    server = make_server(app, port)
    thread = threading.Thread(target=server.serve_forever, name="phi3v-demo", daemon=True)
    thread.start()
    try:
        yield f"http://{HOST}:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def serve(app: DemoApp, port: int = DEFAULT_PORT) -> None:
    """Serve `app` until Ctrl-C or SIGTERM, then close the socket and return."""
    server = make_server(app, port)

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    print(f"Demo running on http://{HOST}:{server.server_port}/  (Ctrl-C stops it)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        signal.signal(signal.SIGTERM, previous)
        print("Demo stopped.", flush=True)


# --- the HTML --------------------------------------------------------------------------------------

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; }
.model { color: #555; font-size: .9rem; margin-top: 0; }
.note { background: #fff7d6; border-left: 4px solid #e0b000; padding: .5rem .8rem; }
#drop-zone { border: 2px dashed #888; border-radius: .6rem; padding: 1.5rem; text-align: center; background: #fafafa; }
#drop-zone.over { border-color: #2a6fdb; background: #eef4ff; }
#result { display: flex; gap: 1.5rem; margin-top: 1.5rem; align-items: flex-start; flex-wrap: wrap; }
#result > div { flex: 1 1 22rem; min-width: 0; }
#result img { max-width: 320px; max-height: 320px; border: 1px solid #ddd; }
table { border-collapse: collapse; }
th, td { text-align: left; padding: .35rem .8rem; border-bottom: 1px solid #e4e4e4; vertical-align: top; }
th { color: #555; font-weight: 600; }
.missing { color: #999; font-style: italic; }
#raw-answer { font-family: ui-monospace, monospace; white-space: pre-wrap; background: #f4f4f4; padding: .5rem; margin: 0; }
#error { background: #fdecea; border-left: 4px solid #d93025; padding: .6rem .9rem; margin-top: 1.5rem; }
#working { display: none; color: #2a6fdb; }
"""

SCRIPT = """
const form = document.getElementById('upload-form');
const input = document.getElementById('picture');
const zone = document.getElementById('drop-zone');
function send() { document.getElementById('working').style.display = 'block'; form.submit(); }
input.addEventListener('change', () => { if (input.files.length) send(); });
['dragenter', 'dragover'].forEach(type => zone.addEventListener(type, event => {
  event.preventDefault(); zone.classList.add('over'); }));
['dragleave', 'drop'].forEach(type => zone.addEventListener(type, () => zone.classList.remove('over')));
zone.addEventListener('drop', event => {
  event.preventDefault();
  if (event.dataTransfer.files.length) { input.files = event.dataTransfer.files; send(); }
});
"""


def _value_cell(value, element_id: str) -> str:
    if value is None:
        return f'<td id="{element_id}" class="missing">not in the answer</td>'
    text = f"{value:,.2f}" if isinstance(value, float) else str(value)
    return f'<td id="{element_id}">{html.escape(text)}</td>'


def result_html(result: dict, content: bytes | None) -> str:
    if not result["ok"]:
        detail = f"<br><small>{html.escape(result['detail'])}</small>" if result.get("detail") else ""
        name = f"<strong>{html.escape(result['file'])}</strong>: " if result.get("file") else ""
        return (f'<div id="error" data-reason="{html.escape(result["reason"])}">{name}'
                f'{html.escape(result["message"])}{detail}</div>')
    picture = ""
    if content is not None:
        buffer = BytesIO()
        thumbnail(content, 320).save(buffer, format="JPEG", quality=85)
        picture = f'<img id="uploaded" alt="the uploaded photo" src="data:image/jpeg;base64,' \
                  f'{base64.b64encode(buffer.getvalue()).decode()}">'
    return f"""<div id="result" data-status="{html.escape(result['status'])}">{picture}
<div><table>
<tr><th>Product</th>{_value_cell(result['product'], 'product')}</tr>
<tr><th>Category</th>{_value_cell(result['category'], 'category')}</tr>
<tr><th>Full price</th>{_value_cell(result['price'], 'price')}</tr>
<tr><th>Parse</th><td id="status">{html.escape(result['status'])}</td></tr>
<tr><th>Raw answer</th><td><pre id="raw-answer">{html.escape(result['answer']) or '(empty)'}</pre></td></tr>
</table>
<p class="model">{html.escape(result['file'])}: {result['width']}x{result['height']} pixels, answered in \
{result['seconds']:.1f} s</p></div></div>"""


def page(app: DemoApp, result: dict | None = None, content: bytes | None = None) -> str:
    note = f'<p class="note" id="note">{html.escape(app.note)}</p>' if app.note else ""
    answer = result_html(result, content) if result is not None else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Phi-3-Vision catalog demo</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>
<body>
<h1>What does the model say about your photo?</h1>
<p class="model" id="model">Model: {html.escape(app.model_name)} · question: <em>{html.escape(CATALOG_QUESTION)}</em>
 · greedy decoding</p>
{note}
<form id="upload-form" method="post" action="/answer" enctype="multipart/form-data">
<div id="drop-zone"><p>Drop a product photo here, or choose one:</p>
<input type="file" id="picture" name="picture" accept="image/*">
<noscript><button type="submit">Ask the model</button></noscript>
<p id="working">Asking the model…</p></div>
</form>
{answer}
<script>{SCRIPT}</script>
</body></html>
"""


# --- command line ----------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m phi3v_tutorial.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="tiny", choices=sorted(path.stem for path in PARAMS_DIR.glob("*.yaml")),
                        help="whose run, base model and num_crops to default to (params/<profile>.yaml)")
    parser.add_argument("--model", help="a model folder or hub id (default: the profile's last fine-tuned model, "
                                        "recorded in runs/<profile>/metrics/04_fine_tuning.json, else its base model)")
    parser.add_argument("--run-dir", help="the run whose fine-tuned model is the default (default: runs/<profile>)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on {HOST} (0: a free one)")
    parser.add_argument("--num-crops", type=int, help="HD crops per picture (default: the profile's num_crops)")
    parser.add_argument("--max-new-tokens", type=int, default=MAX_NEW_TOKENS)
    args = parser.parse_args(argv)

    note = None
    model_name = args.model or None
    if model_name is None:
        model_name, note = default_model(args.profile, args.run_dir)
    else:
        model_name = resolve_model_path(model_name, Path.cwd())
    num_crops = args.num_crops or profile_params(args.profile).get("num_crops")
    if note:
        print(note, flush=True)
    print(f"Loading {model_name} ...", flush=True)
    model, processor = load_model(model_name)
    app = DemoApp(model, processor, model_name, note, num_crops=num_crops, max_new_tokens=args.max_new_tokens)
    try:
        serve(app, args.port)
    except OSError as error:  # the port is taken, most often
        print(f"Cannot serve on {HOST}:{args.port}: {error}. Try another --port (0 picks a free one).",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
