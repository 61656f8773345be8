"""Opens an hwkd HTML report in a real headless browser (Debian's Chromium through Selenium and chromium-driver)
with every host name unresolvable, and reports what a reader would meet: console errors, requests that tried
to leave the page's folder, whether the Bokeh plots rendered and whether each audio element loaded.

    python tests/browser.py REPORT/index.html [SCREENSHOT.png]     (the README's screenshots)
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def available() -> bool:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()


def open_report(page: Path, screenshot: Path | None = None, width: int = 1200, timeout_s: float = 60,
                select: int | None = None) -> dict:
    """select: the index of a point to select (as a click does) in the page's first plotted data source; the
    text the page then shows for it comes back as "selected"."""
    from selenium import webdriver
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--host-resolver-rules=MAP * ~NOTFOUND", "--allow-file-access-from-files", f"--window-size={width},900"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    drv = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        drv.get(Path(page).resolve().as_uri())
        deadline = time.time() + timeout_s
        plots = audio = None
        while time.time() < deadline:
            plots = drv.execute_script(
                "return (window.Bokeh && Bokeh.index) ? Object.keys(Bokeh.index).length : 0")
            audio = drv.execute_script("""
                return Array.from(document.querySelectorAll('audio')).map(a => ({
                    src: a.getAttribute('src'), ready: a.readyState, duration: a.duration,
                    error: a.error ? a.error.code : null}));""")
            if plots and all(a["ready"] >= 1 or a["error"] for a in audio):
                break
            time.sleep(0.5)
        canvases = drv.execute_script("""
            const count = (root) => {           // canvases, through Bokeh's nested shadow roots
                let n = root.querySelectorAll('canvas').length;
                for (const el of root.querySelectorAll('*')) { if (el.shadowRoot) { n += count(el.shadowRoot); } }
                return n; };
            return count(document);""")
        selected = None
        if select is not None:
            selected = drv.execute_script("""
                for (const doc of Bokeh.documents) {
                    for (const m of doc.all_models) {
                        if (m.selected !== undefined && m.data !== undefined && m.data.trial !== undefined) {
                            m.selected.indices = [arguments[0]];
                            return true; } } }
                return false;""", select)
            for _ in range(20):                  # the page's callback runs after the change event
                time.sleep(0.25)
                selected = drv.execute_script(
                    "const el = document.getElementById('selected'); return el ? el.innerText : null")
                if selected and "pick it" in selected:
                    break
        logs = drv.get_log("browser")
        perf = drv.get_log("performance")
        import json
        external = []
        for entry in perf:
            msg = json.loads(entry["message"])["message"]
            if msg.get("method") == "Network.requestWillBeSent":
                url = msg["params"]["request"]["url"]
                if not url.startswith(("file://", "data:", "blob:", "about:")):
                    external.append(url)
        if screenshot is not None:
            height = drv.execute_script("return document.body.scrollHeight")
            drv.set_window_size(width, min(int(height) + 40, 12000))
            time.sleep(0.5)
            drv.save_screenshot(str(screenshot))
        return {"console_errors": [e["message"] for e in logs if e["level"] == "SEVERE"],
                "external_requests": external, "bokeh_views": plots or 0, "canvases": canvases,
                "audio": audio or [], "selected": selected}
    finally:
        drv.quit()


if __name__ == "__main__":
    res = open_report(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else None)
    print(res)
