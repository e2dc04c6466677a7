"""Device claims as rows: which generator serves on a machine's accelerator, and which round wants it. The protocol
(who waits, who sleeps, when a claim is dead) is training.handoff's; this part only reads and writes the rows."""

from sqlalchemy import update
from sqlmodel import col, select

from data.models import DeviceClaim, utcnow

HELD = ("wanted", "granted")  # a claim in these states keeps the generator asleep while its round lives


class Devices:
    """store.devices: every method runs one short session of the store's. A row is keyed by (host, device)."""

    def __init__(self, store):
        self.store = store

    def get(self, host: str, device: str) -> DeviceClaim | None:
        with self.store.read() as s:
            return s.exec(select(DeviceClaim).where(DeviceClaim.host == host, DeviceClaim.device == device)).first()

    def all(self) -> list[DeviceClaim]:
        with self.store.read() as s:
            return list(s.exec(select(DeviceClaim).order_by(DeviceClaim.id)).all())

    def _row(self, s, host: str, device: str) -> DeviceClaim:
        # Inside a write transaction (BEGIN IMMEDIATE, or the advisory lock): no other writer adds it meanwhile.
        row = s.exec(select(DeviceClaim).where(DeviceClaim.host == host, DeviceClaim.device == device)).first()
        return row or DeviceClaim(host=host, device=device)

    # -- the generator's side ------------------------------------------------------------------------------------
    def register_generator(self, host: str, device: str, pid: int, note: str) -> None:
        """Generator `pid` serves on `device` from now on (its heartbeat starts now)."""
        with self.store.write() as s:
            row = self._row(s, host, device)
            row.generator_pid, row.generator_seen_at, row.generator_note = pid, utcnow(), note
            s.add(row)

    def generator_beat(self, host: str, device: str, pid: int, note: str | None = None) -> None:
        """Refresh generator `pid`'s heartbeat (and its note, when given)."""
        values = {"generator_seen_at": utcnow(), **({"generator_note": note} if note is not None else {})}
        self._update_generator(host, device, pid, **values)

    def unregister_generator(self, host: str, device: str, pid: int, note: str) -> None:
        """Generator `pid` stopped: nothing serves on `device` any more (unless another generator took over)."""
        self._update_generator(host, device, pid, generator_pid=None, generator_note=note)

    def _update_generator(self, host: str, device: str, pid: int, **values) -> None:
        with self.store.write() as s:
            s.exec(update(DeviceClaim).where(DeviceClaim.host == host, DeviceClaim.device == device,
                                             DeviceClaim.generator_pid == pid).values(**values))

    def grant(self, host: str, device: str, run_id: int, note: str) -> bool:
        """The generator slept for round `run_id`: its claim reads granted. False when the claim is no longer that
        round's, or no longer held."""
        with self.store.write() as s:
            result = s.exec(update(DeviceClaim).where(
                DeviceClaim.host == host, DeviceClaim.device == device, DeviceClaim.run_id == run_id,
                col(DeviceClaim.state).in_(HELD),
            ).values(state="granted", granted_at=utcnow(), generator_note=note))
            return result.rowcount == 1

    # -- the round's side ----------------------------------------------------------------------------------------
    def want(self, host: str, device: str, run_id: int) -> DeviceClaim:
        """Round `run_id` asks for `device`; returns the row (with the generator registered on it, if any)."""
        with self.store.write() as s:
            row = self._row(s, host, device)
            row.run_id, row.state, row.wanted_at = run_id, "wanted", utcnow()
            row.granted_at = row.released_at = None
            s.add(row)
            return row

    def release(self, host: str, device: str, run_id: int) -> bool:
        """Round `run_id` is done with `device` (success or failure); False when it held no claim on it."""
        with self.store.write() as s:
            result = s.exec(update(DeviceClaim).where(
                DeviceClaim.host == host, DeviceClaim.device == device, DeviceClaim.run_id == run_id,
                col(DeviceClaim.state).in_(HELD),
            ).values(state="released", released_at=utcnow()))
            return result.rowcount == 1
