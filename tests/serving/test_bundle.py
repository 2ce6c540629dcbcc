"""The package step's bundle: a reader loads wholly one publication while another replaces it."""
from __future__ import annotations

import threading

import pandas as pd


def test_a_bundle_read_while_it_is_republished_is_wholly_one_publication(trained, tmp_path):
    from flows.config import load_params
    from flows.steps import staged_dir
    from models.registry import Registry
    from serving.bundle import load_bundle, write_bundle

    params = load_params(trained)
    registry = Registry(params.train.registry_dir)
    tag = registry.champion()
    # A second set of tables: the first half of the events, so that the two publications differ.
    half = tmp_path / "half"
    half.mkdir()
    events = pd.read_parquet(params.validation.validated_dir / "events.parquet")
    events.iloc[: len(events) // 2].to_parquet(half / "events.parquet")
    pd.read_parquet(params.validation.validated_dir / "items.parquet").to_parquet(half / "items.parquet")
    variants = [params, params.model_copy(update={"validate_": params.validation.model_copy(update={"validated_dir": half})})]
    folder = tmp_path / "serving"
    events_of: dict[str, int] = {}
    done = threading.Event()

    def publish() -> None:
        i = 0
        while not done.is_set():
            with staged_dir(folder) as out:
                write_bundle(variants[i % 2], tag, registry.info(tag), out)
                events_of[load_manifest(out)] = len(pd.read_parquet(out / "events.parquet"))
            i += 1
            done.wait(0.1)  # a run publishes once; here, as often as a read takes

    def load_manifest(out) -> str:
        import json

        return json.loads((out / "bundle.json").read_text())["published"]

    with staged_dir(folder) as out:
        write_bundle(params, tag, registry.info(tag), out)
        events_of[load_manifest(out)] = len(events)
    writer = threading.Thread(target=publish)
    writer.start()
    try:
        loaded = [load_bundle(folder) for _ in range(40)]
    finally:
        done.set()
        writer.join()
    assert len({b.published for b in loaded}) > 1  # publications did overtake the reads
    for bundle in loaded:
        assert len(bundle.events) == events_of[bundle.published], bundle.published
