"""The bento, served for real with `bentoml serve <tag>` on a free port (the ``served``
fixture) and called over HTTP: every endpoint, concurrent requests batched, concurrent events
all kept. Then the demo page in headless Chromium: pick a user, post an event, watch the list
change, and catalogue titles holding markup shown as text."""
from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import WRITE_TOKEN, XSS_TITLE, call


def test_the_bento_packs_the_champion_the_bundle_and_a_dockerfile(served):
    bento = served["bento"]
    assert [str(m.tag) for m in bento.info.all_models] == [served["summary"]["model"]]
    root = Path(bento.path)
    assert (root / "src" / "bundle" / "bundle.json").exists() and (root / "src" / "serving" / "static" / "demo.html").exists()
    # No Docker engine here: the generated Dockerfile and requirements are what can be checked.
    dockerfile = (root / "env" / "docker" / "Dockerfile").read_text()
    assert "FROM " in dockerfile and "requirements.txt" in dockerfile
    requirements = (root / "env" / "python" / "requirements.txt").read_text()
    assert "torch==2.13.0" in requirements and "feast==0.67.0" in requirements


def test_every_endpoint_answers_over_http(served):
    base = served["base"]
    status, version = call(base, "/version")
    assert status == 200 and version["model"] == served["summary"]["model"]
    events = json.loads((Path(served["bento"].path) / "src" / "bundle" / "bundle.json").read_text())
    user = 1
    status, recs = call(base, "/recommend", {"user_id": user, "k": 5})
    assert status == 200 and len(recs["items"]) == 5, recs
    item = recs["items"][0]["item_id"]
    status, why = call(base, "/explain", {"user_id": user, "item_id": item})
    assert status == 200 and why["recent"], why
    status, similar = call(base, "/similar", {"item_id": item, "k": 3})
    assert status == 200 and len(similar["lm"]) == 3
    status, _ = call(base, "/livez")
    assert status == 200
    status, page = call(base, "/")
    assert status == 200 and "decayrec demo" in page
    assert events["model"] == served["summary"]["model"]


def test_bentomls_own_client_calls_every_post_endpoint_by_name(served):
    import bentoml
    from bentoml.exceptions import BentoMLException

    base = served["base"]
    with bentoml.SyncHTTPClient(base, token=WRITE_TOKEN) as client:
        assert {"recommend", "explain", "similar", "events"} <= set(client.endpoints)
        recs = client.recommend(user_id=3, k=5)
        assert len(recs["items"]) == 5 and recs["user_id"] == 3 and not recs["fallback"]
        item = recs["items"][0]["item_id"]
        assert client.explain(user_id=3, item_id=item)["item_id"] == item
        assert len(client.similar(item_id=item, k=3)["lm"]) == 3
        now = client.request("GET", "/version").json()["now"]
        event = {"user_id": 3, "item_id": item, "event_type": "rating", "value": 4.0, "timestamp": now}
        assert client.events([event])["accepted"] == 1
        assert item not in [r["item_id"] for r in client.recommend(user_id=3, k=5)["items"]]
        with pytest.raises(BentoMLException) as refused:  # the routes' own validation: no coercion
            client.recommend(user_id="3", k=5)
        assert refused.value.error_code == 422
    with bentoml.SyncHTTPClient(base) as anonymous, pytest.raises(BentoMLException) as unauthorised:
        anonymous.events([event])
    assert unauthorised.value.error_code == 401


def test_concurrent_recommendations_are_batched_and_answered_as_one_by_one(served):
    base = served["base"]
    users = list(range(2, 10))
    with ThreadPoolExecutor(max_workers=16) as pool:
        replies = list(pool.map(lambda u: call(base, "/recommend", {"user_id": u, "k": 10}), users * 6))
    assert all(status == 200 for status, _ in replies), replies
    assert max(body["batch"] for _, body in replies) > 1  # requests waited together somewhere
    alone = {u: call(base, "/recommend", {"user_id": u, "k": 10})[1]["items"] for u in users}
    for u, (_, body) in zip(users * 6, replies):
        mine, single = body["items"], alone[u]
        # A batch sums in another order (BLAS over more rows): scores agree to float32
        # rounding, and only items whose scores tie that closely may change places.
        assert [r["score"] for r in mine] == pytest.approx([r["score"] for r in single], rel=1e-4, abs=1e-5)
        near = lambda x, y: abs(x - y) <= 1e-4 * abs(y) + 1e-5  # noqa: E731
        for a, b in zip(mine, single):
            if a["item_id"] != b["item_id"]:  # a near-tie in the lone answer, or a tie at its cut-off
                twin = [r for r in single if r["item_id"] == a["item_id"]]
                assert (twin and near(twin[0]["score"], b["score"])) or near(a["score"], single[-1]["score"]), (a, single)


def test_events_posted_concurrently_are_all_kept_and_seen(served):
    base = served["base"]
    now = call(base, "/version")[1]["now"]
    status, recs = call(base, "/recommend", {"user_id": 1, "k": 40})
    items = [r["item_id"] for r in recs["items"]]
    # Four events a batch for a new user: distinct by their values (the same event twice would count once).
    batches = [[{"user_id": 1, "item_id": items[i], "event_type": "rating", "value": 4.0, "timestamp": now}]
               + [{"user_id": 900_000 + i, "item_id": items[i], "event_type": "rating", "value": 1.0 + j, "timestamp": now}
                  for j in range(4)] for i in range(40)]
    before = _lines(served)
    with ThreadPoolExecutor(max_workers=8) as pool:
        replies = list(pool.map(lambda batch: call(base, "/events", batch), batches))
    assert all(status == 200 and body["accepted"] == 5 for status, body in replies), replies
    assert _lines(served) == before + 200  # none lost, none torn
    after = [r["item_id"] for r in call(base, "/recommend", {"user_id": 1, "k": 40})[1]["items"]]
    assert not set(items) & set(after)  # every posted item is now seen
    status, newcomer = call(base, "/recommend", {"user_id": 900_000, "k": 3})
    assert status == 200 and not newcomer["fallback"]  # a new user with live events is known


def _lines(served) -> int:
    log = served["events_log"]
    return log.read_text().count("\n") if log.exists() else 0


@pytest.mark.skipif(not shutil.which("chromedriver"), reason="Debian's chromium-driver is not installed (.ci/run installs it)")
def test_the_demo_page_shows_recommendations_and_updates_after_an_event(served):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = Options()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    try:
        driver.get(served["base"] + "/")
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "1")
        rows = driver.find_elements(By.CSS_SELECTOR, "#recs tr")
        assert len(rows) == 10
        first = rows[0].get_attribute("data-item")
        assert driver.find_element(By.ID, "topics").text.startswith("lately:")
        # Every title carries markup: shown as its text, never run or parsed.
        assert XSS_TITLE in rows[0].find_elements(By.TAG_NAME, "td")[1].text
        assert not driver.find_elements(By.CSS_SELECTOR, "#recs img")
        assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-pwned") is None
        driver.find_element(By.ID, "token").send_keys(WRITE_TOKEN)  # the service has a write token set
        rows[0].find_element(By.TAG_NAME, "button").click()
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-events") == "1")
        after = [r.get_attribute("data-item") for r in driver.find_elements(By.CSS_SELECTOR, "#recs tr")]
        assert first not in after and len(after) == 10
        assert "event posted (1 accepted)" in driver.find_element(By.ID, "status").text
        assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-pwned") is None
    finally:
        driver.quit()
