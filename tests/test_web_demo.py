"""The web demo (``python -m common.app``) driven in a real headless browser: upload an image, press Detect, get a
score, a decision and a heatmap. Skipped without gradio, selenium or the system's chromium + chromedriver."""
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from common.data.synthetic import make_class
from method_harness import export, train_tiny

pytest.importorskip("gradio")
webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium / chromedriver not installed")


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """An exported tiny OrthoAD model served by the demo on a free loopback port."""
    root = tmp_path_factory.mktemp("demo")
    make_class(str(root / "data"), "bottle", size=64, n_train=8, n_test_good=2, n_test_defect=1)
    train_tiny("orthoad", str(root / "data"), str(root / "out"))
    export("orthoad", "--cls", "bottle", "--output_dir", str(root / "out"))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "common.app", "--model_dir",
                               str(root / "out" / "bottle" / "inference"), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while time.time() < deadline and server.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("the demo did not start: " + (server.stdout.read() if server.stdout else ""))
    yield url, root
    server.terminate()
    server.wait(timeout=30)


@pytest.mark.slow
def test_upload_produces_a_score_and_a_heatmap(demo):
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, root = demo
    options = Options()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.binary_location = CHROMIUM
    browser = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        browser.get(url)
        wait = WebDriverWait(browser, 60)
        upload = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#input_image input[type=file]"))[0]
        upload.send_keys(str(root / "data" / "bottle" / "test" / "blob" / "000.png"))
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#input_image img"))
        browser.find_element(By.CSS_SELECTOR, "#detect").click()
        heatmap = wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#heatmap img"))[0]
        assert heatmap.get_attribute("src")
        assert browser.find_elements(By.CSS_SELECTOR, "#mask img")
        score = float(browser.find_element(By.CSS_SELECTOR, "#score input").get_attribute("value"))
        decision = browser.find_element(By.CSS_SELECTOR, "#decision textarea").get_attribute("value")
        assert score > 0 and decision in ("normal", "anomalous")
    finally:
        browser.quit()
