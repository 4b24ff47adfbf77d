"""Browser tests' parts: headless Chromium driven by selenium, and a tiny reverse proxy that adds a path prefix."""

import http.client
import json
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

import testbed as tb

# Without the background-networking switches Chromium tries outside connections (updates, sync,
# field trials) that this machine refuses; QUIC is off so every request goes over loopback TCP.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
)
# Hop-by-hop headers (RFC 9110 7.6.1) are the proxy's own business, never forwarded.
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


def chromium(user_data_dir: Path | None = None, download_dir: Path | None = None) -> webdriver.Chrome:
    """Debian's chromium through its chromium-driver, headless, with the console and network logs on.

    Downloads go to ``download_dir`` (without asking) when it is given.
    """
    binary, driver = tb.which("chromium"), tb.which("chromedriver")
    if not binary or not driver:
        raise RuntimeError("chromium and chromedriver are missing (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir or tempfile.mkdtemp(prefix='chromium-')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    if download_dir is not None:
        options.add_experimental_option(
            "prefs", {"download.default_directory": str(download_dir), "download.prompt_for_download": False}
        )
    browser = webdriver.Chrome(options=options, service=Service(driver))
    if download_dir is not None:
        # Headless Chromium saves nothing unless told where (the preference alone is not enough).
        browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    return browser


def downloaded(folder: Path, timeout_s: float = 30) -> Path:
    """The one file Chromium finished downloading into ``folder`` (waits while it is partial)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = [f for f in folder.iterdir() if not f.name.endswith(".crdownload")]
        if len(done) == 1 and not list(folder.glob("*.crdownload")):
            return done[0]
        time.sleep(0.1)
    raise AssertionError(f"no finished download in {folder}: {sorted(f.name for f in folder.iterdir())}")


@dataclass
class BrowserLog:
    """Console messages and requested URLs, gathered as the test goes (the driver hands each out once)."""

    driver: webdriver.Chrome
    console: list[dict] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)  # URLs of requests the page aborted
    _urls: dict[str, str] = field(default_factory=dict)

    def collect(self) -> None:
        self.console += self.driver.get_log("browser")
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            params = message.get("params", {})
            if message["method"] == "Network.requestWillBeSent":
                self.requests.append(params["request"]["url"])
                self._urls[params["requestId"]] = params["request"]["url"]
            elif message["method"] == "Network.loadingFailed" and params.get("canceled"):
                self.cancelled.append(self._urls.get(params["requestId"], ""))

    def errors(self) -> list[dict]:
        self.collect()
        return [m for m in self.console if m["level"] == "SEVERE"]


class PrefixProxy:
    """A reverse proxy on a loopback port: ``/<prefix>/x`` goes to ``upstream/x``; anything else is 404.

    It does what an ingress with a rewrite does, so a console that used an absolute URL would break.
    Every path asked is recorded, and those whose answer the browser no longer wanted.
    """

    def __init__(self, prefix: str, upstream_port: int) -> None:
        self.prefix = "/" + prefix.strip("/")
        self.upstream_port = upstream_port
        self.paths: list[str] = []
        self.cancelled: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args) -> None:  # quiet: the test reads ``paths``
                pass

            def _forward(self) -> None:
                proxy.paths.append(self.path)
                if not (self.path + "/").startswith(proxy.prefix + "/"):
                    self.send_error(404, "outside the proxy's prefix")
                    return
                upstream_path = self.path[len(proxy.prefix) :] or "/"
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
                try:
                    conn.request(self.command, upstream_path, body=body, headers=headers)
                    answer = conn.getresponse()
                    content = answer.read()
                finally:
                    conn.close()
                try:
                    self.send_response(answer.status, answer.reason)
                    for k, v in answer.getheaders():
                        if k.lower() not in _HOP and k.lower() != "content-length":
                            self.send_header(k, v)
                    self.send_header("Content-Length", str(len(content)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(content)
                except (BrokenPipeError, ConnectionResetError):
                    proxy.cancelled.append(self.path)  # the page cancelled the request (its view changed)

            do_GET = do_POST = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.prefix}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# Schemes the browser answers itself (its new-tab page, in-page data), never over the network.
_LOCAL_SCHEMES = {"about", "blob", "chrome", "data"}


def leaving_the_machine(urls: list[str]) -> list[str]:
    """The URLs among ``urls`` that would leave the machine: every one not on 127.0.0.1 nor browser-internal."""
    return [u for u in urls if urlsplit(u).scheme not in _LOCAL_SCHEMES and urlsplit(u).hostname != "127.0.0.1"]
