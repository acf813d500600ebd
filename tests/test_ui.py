"""`tailor ui`, the dashboard over a runs folder, checked in headless Chromium over a real socket:
the runs list, a run page, the predictions filters, runs side by side, a ladder updating live while
it runs, every request staying on the machine, and the key when one is set."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import quote

import httpx
import pytest
import uvicorn

from conftest import write_tickets
from tailor.config import experiment_from_dict
from tailor.ladder import run_ladder
from tailor.report import find_chromium, render_url
from tailor.ui.app import create_app

needs_chromium = pytest.mark.skipif(find_chromium() is None, reason="no Chromium binary installed")


def _experiment(tmp, name: str, lora_steps: int):
    return experiment_from_dict({
        "model": "tiny-test", "task": str(write_tickets(tmp / "tickets.jsonl", 60)), "name": name,
        "task_options": {"test": 16, "dev": 4}, "runs_dir": str(tmp / "runs"), "latency_requests": 0,
        "forgetting": False, "curate": False, "dtype": "fp32", "report": True,
        "arms": ["zero-shot", {"name": "lora", "method": "lora", "steps": lora_steps, "batch_size": 4,
                               "log_every": 1}]}, "exp.yaml")


class Server:
    """The dashboard on a free loopback port, in a thread."""

    def __init__(self, root, api_key=None):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(root, api_key), host="127.0.0.1", port=self.port,
                                                    log_level="error"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        for _ in range(100):
            if self.server.started:
                return self
            time.sleep(0.05)
        raise RuntimeError("dashboard did not start")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ui")
    results = run_ladder(_experiment(tmp, "first", 3), progress=False)
    with Server(tmp / "runs") as server:
        yield results, server, tmp


def _local_only(page, server) -> None:
    assert page.errors == []
    assert page.requests and all(u.startswith(server.url) or u.startswith("data:") for u in page.requests), page.requests


@needs_chromium
def test_runs_list_and_run_page_in_chromium_show_the_arms_with_their_intervals(finished):
    results, server, _ = finished
    name = results.run_dir.rsplit("/", 1)[-1]
    page = render_url(server.url + "/")
    _local_only(page, server)
    assert f'data-name="{name}" data-state="finished"' in page.dom
    best = next(a for a in results.arms if a.name == (results.recommendation.best_arm or results.recommendation.arm))
    assert f"{best.name}: {best.metrics['accuracy']:.3f}" in page.dom
    run = render_url(f"{server.url}/run/{quote(name)}")
    _local_only(run, server)
    for arm in results.arms:
        assert f'data-arm="{arm.name}"' in run.dom
        assert f"{arm.interval[0]:.3f}–{arm.interval[1]:.3f}" in run.dom   # each arm's 95% interval, as results.json has it
    assert results.recommendation.text[:60].replace("&", "&amp;") in run.dom
    report = render_url(f"{server.url}/run/{quote(name)}/report")
    _local_only(report, server)


@needs_chromium
def test_the_predictions_filters_show_only_the_rows_asked_for(finished):
    results, server, tmp = finished
    name = results.run_dir.rsplit("/", 1)[-1]
    import json
    rows = [json.loads(line) for line in open(f"{results.run_dir}/predictions-zero-shot.jsonl")]
    wrong = [r for r in rows if r["prediction"].strip() != r["target"].strip()]
    base = f"{server.url}/run/{quote(name)}/predictions/zero-shot"
    everything = render_url(base)
    assert everything.dom.count('class="row') == len(rows)
    only_wrong = render_url(base + "?wrong=true")
    _local_only(only_wrong, server)
    assert only_wrong.dom.count('class="row wrong"') == only_wrong.dom.count('class="row') == len(wrong)
    label = rows[0]["target"]
    by_label = render_url(f"{base}?label={label}")
    assert by_label.dom.count('class="row') == sum(r["target"] == label for r in rows)
    needle = rows[3]["id"]
    found = render_url(f"{base}?q={needle}")
    matching = sum(needle in r["id"] for r in rows)
    assert f'data-id="{needle}"' in found.dom and f'<span id="matching">{matching}</span>' in found.dom


@needs_chromium
def test_a_running_ladder_updates_live_then_shows_as_finished_beside_the_first_run(finished):
    results, server, tmp = finished
    # a second ladder on the same task, in a thread, writing to the same runs folder the dashboard reads
    second = _experiment(tmp, "second", 300)
    done: dict = {}
    thread = threading.Thread(target=lambda: done.setdefault("results", run_ladder(second, progress=False)))
    thread.start()
    try:
        def live_page():
            names = [r["name"] for r in httpx.get(server.url + "/api/runs").json() if r["state"] == "running"]
            if not names:
                return None
            page = render_url(f"{server.url}/run/{quote(names[0])}")
            return page if 'id="live-done"' in page.dom and 'id="live-arm">lora<' in page.dom else None

        first = None
        for _ in range(300):
            first = live_page()
            if first:
                break
            time.sleep(0.1)
        assert first is not None, "never saw the LoRA arm training live"
        _local_only(first, server)
        assert '<meta http-equiv="refresh"' in first.dom and 'class="state running"' in first.dom
        assert 'data-arm="zero-shot"' in first.dom   # the arm already done, with its metric
        step = int(first.dom.split('id="live-done">')[1].split("<")[0])
        later = None
        for _ in range(300):
            later = live_page()
            if later is None or int(later.dom.split('id="live-done">')[1].split("<")[0]) > step:
                break
            time.sleep(0.1)
        assert later is not None and int(later.dom.split('id="live-done">')[1].split("<")[0]) > step
    finally:
        thread.join(300)
    name = done["results"].run_dir.rsplit("/", 1)[-1]
    final = render_url(f"{server.url}/run/{quote(name)}")
    assert 'class="state finished"' in final.dom and 'id="live"' not in final.dom and "refresh" not in final.dom
    compare = render_url(f"{server.url}/compare?task={quote(results.experiment.task)}")
    _local_only(compare, server)
    assert compare.dom.count('<tr data-arm="') == 2 and compare.dom.count("/run/") >= 2


def test_names_from_requests_stay_inside_the_runs_folder_and_a_key_is_required_when_set(finished, tmp_path):
    results, server, tmp = finished
    # (a literal /run/.. is resolved by the client before it is sent, so the dots go encoded)
    name = results.run_dir.rsplit("/", 1)[-1]
    for path in ("/run/%2E%2E", "/run/..%2F..%2Fetc", "/run/nope", f"/run/{name}/predictions/..%2F..%2Fconfig"):
        assert httpx.get(server.url + path).status_code == 404, path
    write_tickets(tmp_path / "x.jsonl", 4)
    with Server(tmp / "runs", api_key="s3cret") as keyed:
        assert httpx.get(keyed.url + "/").status_code == 401
        assert httpx.get(keyed.url + "/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        with httpx.Client() as client:   # a browser opens /?key= once; the cookie carries it after
            assert client.get(keyed.url + "/?key=s3cret").status_code == 200
            assert client.get(keyed.url + "/api/runs").status_code == 200
