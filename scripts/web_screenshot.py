"""Screenshots the web chat page of a running `cria serve` after asking it questions, as a person
would (typing, Enter, waiting for the streamed reply): docs/serve-web-chat.png is made so, with
the demo's model.

    cria serve --model runs/demo/ppo/checkpoint &
    .venv/bin/pip install websocket-client
    .venv/bin/python scripts/web_screenshot.py docs/serve-web-chat.png \
        "What is the price of the Ion Lamp?" "Where does Sami Holm live?"
"""

import base64
import json
import subprocess
import sys
import tempfile
import time
import urllib.request

import websocket

URL = "http://127.0.0.1:8000/"
PORT = 9333


def main(out, questions):
    profile = tempfile.mkdtemp()
    browser = subprocess.Popen(
        ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", f"--remote-debugging-port={PORT}",
         "--remote-allow-origins=*", f"--user-data-dir={profile}", "--window-size=1280,800", URL],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            try:
                tabs = json.load(urllib.request.urlopen(f"http://127.0.0.1:{PORT}/json"))
                break
            except OSError:
                time.sleep(0.2)
        page = next(t for t in tabs if t["type"] == "page")
        ws = websocket.create_connection(page["webSocketDebuggerUrl"])
        ids = iter(range(1, 1 << 30))

        def call(method, **params):
            n = next(ids)
            ws.send(json.dumps({"id": n, "method": method, "params": params}))
            while True:
                r = json.loads(ws.recv())
                if r.get("id") == n:
                    return r.get("result")

        def evaluate(js):
            return call("Runtime.evaluate", expression=js, returnByValue=True, awaitPromise=True)["result"].get("value")

        def wait(js):
            for _ in range(600):
                if evaluate(js):
                    return
                time.sleep(0.05)
            raise SystemExit(f"timed out waiting for {js}")

        wait("document.querySelector('#model').options.length > 0")
        evaluate("const t = document.querySelector('#temperature'); t.value = '0'; t.dispatchEvent(new Event('change')); true")
        for q in questions:
            evaluate("document.querySelector('#input').focus(); true")
            call("Input.insertText", text=q)
            for kind in ("keyDown", "keyUp"):
                call("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter", windowsVirtualKeyCode=13, text="\r")
            time.sleep(0.3)
            wait("!document.querySelector('.cursor') && document.querySelectorAll('.msg.assistant').length > 0")
        print(evaluate("Array.from(document.querySelectorAll('.msg .body')).map(e => e.textContent).join('\\n')"))
        shot = call("Page.captureScreenshot", format="png")
        with open(out, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
    finally:
        browser.kill()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
