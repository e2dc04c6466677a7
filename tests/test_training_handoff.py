"""training.handoff: the generator sleeps during a round (when it can), then serves the deployed version."""

import pytest
from conftest import add_labelled_pairs, short_long_pairs

from app.services import rounds as training_rounds
from training.handoff import can_sleep, generator_asleep, serve, train_with_handoff


class FakeBackend:
    def __init__(self, path: str):
        self.path = path
        self.calls: list[str] = []

    def load_version(self, path: str) -> None:
        assert "sleep" not in self.calls or self.calls[-1] == "wake", "loaded while asleep"
        self.calls.append(f"load {path}")
        self.path = path


class SleepyBackend(FakeBackend):
    def sleep(self, level: int = 1) -> None:
        self.calls.append("sleep")

    def wake(self) -> None:
        self.calls.append("wake")


def test_a_sleepy_backend_sleeps_through_the_round_then_loads_the_new_version():
    backend = SleepyBackend("/models/v0")
    seen = []
    result = train_with_handoff(backend, lambda: seen.append(list(backend.calls)) or "trained",
                                lambda: "/models/v1")
    assert result == "trained"
    assert seen == [["sleep"]]  # asleep while training
    assert backend.calls == ["sleep", "wake", "load /models/v1"]


def test_a_backend_without_sleep_just_swaps():
    backend = FakeBackend("/models/v0")
    assert not can_sleep(backend)
    train_with_handoff(backend, lambda: None, lambda: "/models/v1")
    assert backend.calls == ["load /models/v1"]


def test_nothing_deployed_anew_means_no_swap_and_a_failure_still_wakes():
    backend = SleepyBackend("/models/v0")
    train_with_handoff(backend, lambda: None, lambda: "/models/v0")
    assert backend.calls == ["sleep", "wake"]
    backend.calls.clear()
    with pytest.raises(RuntimeError), generator_asleep(backend):
        raise RuntimeError("training crashed")
    assert backend.calls == ["sleep", "wake"]
    assert not serve(backend, None)


@pytest.mark.slow
def test_service_round_with_an_in_process_generator(tiny_app):
    app = tiny_app(training__max_steps=2)
    add_labelled_pairs(app.store, app.store.versions.get("v0").id, short_long_pairs(10))
    backend = SleepyBackend(app.store.versions.get("v0").path)
    run_id = training_rounds.start_round(app, deploy=True, generator=backend)
    assert training_rounds.round_status(app, run_id)["status"] == "done"
    assert backend.calls == ["sleep", "wake", f"load {app.store.versions.get('v1').path}"]


@pytest.mark.slow
def test_hf_backend_hand_off_is_a_load_version(tiny_app):
    from generation.backends import load_backend

    app = tiny_app(training__max_steps=2)
    add_labelled_pairs(app.store, app.store.versions.get("v0").id, short_long_pairs(10))
    with load_backend("hf", app.store.versions.get("v0").path, device="cpu") as backend:
        training_rounds.start_round(app, deploy=True, generator=backend)
        assert backend.path == app.store.versions.get("v1").path
