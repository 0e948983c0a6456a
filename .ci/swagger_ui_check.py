"""Swagger UI (/docs) as a browser renders it: headless Chromium, fresh
profile, no network beyond the service.

Usage: swagger_ui_check.py SERVICE_URL OUT_DIR

Checks, against the service's own /openapi.json:
  - /docs loads no asset from another host (poem-openapi embeds Swagger UI's
    script and style, and the document, in the page);
  - the page renders with no error box, and lists every /v1 operation with
    its method, path and summary;
  - each operation, opened through its deep link (#/{tag}/{operation_id}),
    shows a description, a description for every parameter, every response
    code of the document with its description, and every field of its
    request body (for multipart, the file field as binary).
Saves the rendered DOMs and screenshots (docs.png, upload_local.png) in
OUT_DIR. Standard library only.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from urllib.parse import urlparse
from urllib.request import urlopen

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    # Virtual time runs the page's scripts to quiescence, with no wall-clock sleep.
    "--virtual-time-budget=10000",
]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link",
        "meta", "source", "track", "wbr"}

problems = []


def problem(message):
    problems.append(message)
    print(f"FAIL {message}")


class Node:
    def __init__(self, tag, attrs, parent):
        self.tag, self.attrs, self.parent = tag, dict(attrs), parent
        self.children, self.texts = [], []

    def classes(self):
        return (self.attrs.get("class") or "").split()

    def text(self):
        parts = list(self.texts)
        for child in self.children:
            parts.append(child.text())
        return " ".join(" ".join(parts).split())

    def walk(self):
        yield self
        for child in self.children:
            yield from child.walk()

    def find_all(self, cls=None, **attrs):
        return [
            n for n in self.walk()
            if (cls is None or cls in n.classes())
            and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def find(self, cls=None, **attrs):
        found = self.find_all(cls, **attrs)
        return found[0] if found else None


class Dom(HTMLParser):
    """A tree of the DOM Chromium serializes (well formed, void tags bare)."""

    def __init__(self, html):
        super().__init__()
        self.root = Node("#root", [], None)
        self.current = self.root
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_endtag(self, tag):
        node = self.current
        while node is not self.root and node.tag != tag:
            node = node.parent
        if node is not self.root:
            self.current = node.parent

    def handle_data(self, data):
        if self.current.tag not in ("script", "style"):
            self.current.texts.append(data)


def chromium(*args):
    profile = tempfile.mkdtemp(prefix="vectorize-chromium-")
    try:
        run = subprocess.run(
            ["chromium", *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True, text=True, timeout=120,
        )
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    if run.returncode != 0:
        sys.exit(f"chromium failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return run.stdout


def operations(spec):
    for path, item in spec["paths"].items():
        if not path.startswith("/v1"):
            continue
        for method, op in item.items():
            yield path, method.upper(), op


def check_assets(url):
    """Every script, style and image of /docs comes from the page itself."""
    html = urlopen(f"{url}/docs").read().decode()
    page = Dom(html).root
    external = []
    for node in page.walk():
        for attr in ("src", "href"):
            link = node.attrs.get(attr)
            if link and urlparse(link).netloc not in ("", urlparse(url).netloc):
                external.append(link)
    inline = [n for n in page.walk() if n.tag in ("script", "style") and "src" not in n.attrs]
    if external:
        problem(f"/docs loads assets from elsewhere: {external}")
    else:
        print(f"ok   /docs ({len(html) // 1024} KiB) embeds its {len(inline)} scripts and "
              "styles; no asset from another host")


def check_overview(url, spec, out):
    dom_html = chromium("--dump-dom", f"{url}/docs")
    with open(os.path.join(out, "docs.html"), "w") as file:
        file.write(dom_html)
    dom = Dom(dom_html).root
    if dom.find("errors-wrapper") or "Failed to load API definition" in dom.text():
        problem("Swagger UI shows an error box")
    listed = 0
    for path, method, op in operations(spec):
        block = dom.find(id=f"operations-{op['tags'][0]}-{op['operationId']}")
        name = f"{method} {path}"
        if block is None:
            problem(f"{name} is not listed")
            continue
        shown_method = block.find("opblock-summary-method")
        shown_path = block.find("opblock-summary-path")
        summary = block.find("opblock-summary-description")
        if shown_method is None or shown_method.text() != method:
            problem(f"{name}: the method shown is not {method}")
        if shown_path is None or shown_path.attrs.get("data-path") != path:
            problem(f"{name}: the path shown is not {path}")
        if summary is None or not summary.text():
            problem(f"{name}: no summary shown")
        listed += 1
    print(f"ok   /docs lists {listed} /v1 operations with method, path and summary")


def check_operation(url, spec, path, method, op, out):
    tag, op_id = op["tags"][0], op["operationId"]
    name = f"{method} {path}"
    found_before = len(problems)
    dom = Dom(chromium("--dump-dom", f"{url}/docs#/{tag}/{op_id}")).root
    block = dom.find(id=f"operations-{tag}-{op_id}")
    body = block.find("opblock-body") if block else None
    if body is None:
        problem(f"{name}: its deep link does not open it")
        return
    description = body.find("opblock-description")
    if description is None or not description.text():
        problem(f"{name}: no description")
    for param in op.get("parameters", []):
        row = body.find(data_param_name=param["name"])
        shown = row.find("parameters-col_description") if row else None
        # An enum's "Available values" line is Swagger UI's, not a description.
        markdown = [
            n for n in (shown.find_all("renderedMarkdown") if shown else [])
            if "parameter__enum" not in n.classes()
        ]
        if not any(n.text() for n in markdown):
            problem(f"{name}: parameter '{param['name']}' has no description")
    for code, response in op["responses"].items():
        row = body.find("response", data_code=code)
        shown = row.find("response-col_description") if row else None
        if shown is None or not shown.text():
            problem(f"{name}: response {code} is not shown with a description")
    request = op.get("requestBody")
    if request:
        section = body.find("opblock-section-request-body")
        shown = section.text() if section else ""
        for media, content in request["content"].items():
            schema = content["schema"]
            if "$ref" in schema:
                schema = spec["components"]["schemas"][schema["$ref"].split("/")[-1]]
            for field, prop in schema.get("properties", {}).items():
                if field not in shown:
                    problem(f"{name}: the {media} body does not show its field '{field}'")
                if media.startswith("multipart/") and prop.get("format") == "binary":
                    row = section.find(data_property_name=field) if section else None
                    if row is None or "$binary" not in row.text():
                        problem(f"{name}: multipart field '{field}' is not shown as a file")
    if len(problems) == found_before:
        print(f"ok   {name}: description, {len(op.get('parameters', []))} described "
              f"parameters, {len(op['responses'])} responses"
              f"{', request body fields' if request else ''}")


def main():
    url, out = sys.argv[1].rstrip("/"), sys.argv[2]
    os.makedirs(out, exist_ok=True)
    spec = json.load(urlopen(f"{url}/openapi.json"))
    version = subprocess.run(["chromium", "--version"], capture_output=True, text=True)
    print(f"     {version.stdout.strip()}")
    check_assets(url)
    check_overview(url, spec, out)
    for path, method, op in operations(spec):
        check_operation(url, spec, path, method, op, out)
    for shot, page in (("docs.png", "/docs"), ("upload_local.png", "/docs#/Uploads/upload_local")):
        target = os.path.join(out, shot)
        chromium(f"--screenshot={target}", "--window-size=1280,2200", f"{url}{page}")
        if not os.path.getsize(target):
            problem(f"the screenshot {target} is empty")
        print(f"ok   screenshot {target}")
    if problems:
        sys.exit(f"{len(problems)} problems in the rendered Swagger UI")


if __name__ == "__main__":
    main()
