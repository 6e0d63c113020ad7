"""Rollout policies and rollouts in the registry's database.

Every transition is one write transaction that checks the rollout is still in the state
and at the step the caller saw (so a controller restarted after a SIGKILL, or a second
registry replica, can never step twice), moves the `canary` (and at the end `production`)
alias through the alias book in the same transaction, and appends the decision with its
evidence to the rollout's events and to the change feed. (model, version) is unique: a
version is rolled out once."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.registry import entities as e
from services.registry.aliases import AliasBook
from services.registry.database import RegistryDatabase, now
from services.registry.rollouts.entities import Rollout, RolloutEvent, RolloutState
from services.registry.rollouts.policy import PolicyDraft, RolloutPolicy, check_policy
from services.registry.store import (
    AliasRow,
    ModelRow,
    RolloutEventRow,
    RolloutPolicyRow,
    RolloutRow,
    VersionRow,
)
from shared.aliases import CANARY, PRODUCTION
from shared.db import as_utc
from shared.errors import FailedPrecondition, NotFound, invalid

CONTROLLER = "rollout-controller"
MAX_DETAIL = 4096

EVENT_TYPES = {
    "started": e.EventType.ROLLOUT_STARTED,
    "stepped": e.EventType.ROLLOUT_STEPPED,
    "paused": e.EventType.ROLLOUT_PAUSED,
    "resumed": e.EventType.ROLLOUT_RESUMED,
    "promoted": e.EventType.ROLLOUT_PROMOTED,
    "rolled_back": e.EventType.ROLLOUT_ROLLED_BACK,
    "aborted": e.EventType.ROLLOUT_ABORTED,
    "refused": e.EventType.ROLLOUT_REFUSED,
}


def _check_words(actor: str, reason: str) -> None:
    if len(actor) > 256 or len(reason) > MAX_DETAIL:
        raise invalid("reason", f"actor <= 256, reason <= {MAX_DETAIL} characters")


def _event_of(row: RolloutEventRow) -> RolloutEvent:
    return RolloutEvent(
        row.version,
        row.kind,
        row.step,
        row.traffic_weight,
        row.actor,
        row.detail,
        dict(row.evidence),
        as_utc(row.happened_at),
        row.revision,
    )


def _rollout_of(row: RolloutRow, events: list[RolloutEventRow] | None = None) -> Rollout:
    return Rollout(
        row.id,
        row.model,
        row.version,
        row.production_version,
        RolloutState(row.state),
        row.step,
        row.traffic_weight,
        RolloutPolicy.from_json(row.policy),
        as_utc(row.started_at),
        as_utc(row.step_started_at),
        as_utc(row.updated_at),
        [_event_of(r) for r in events or []],
    )


class RolloutBook:
    def __init__(self, db: RegistryDatabase, aliases: AliasBook) -> None:
        self._db = db
        self._aliases = aliases

    # --- policies -------------------------------------------------------------------------

    def set_policy(self, model: str, draft: PolicyDraft) -> tuple[RolloutPolicy, datetime]:
        policy = check_policy(draft)
        with self._db.write() as session:
            model_row = self._db.model_row(session, model, "policy.model")
            row = session.get(RolloutPolicyRow, model_row.id)
            if row is None:
                row = RolloutPolicyRow(model_id=model_row.id)
                session.add(row)
            row.policy = policy.to_json()
            row.updated_at = now()
            self._db.commit(session)
            return policy, row.updated_at

    def get_policy(self, model: str) -> tuple[RolloutPolicy, datetime]:
        with self._db.read() as session:
            row = session.get(RolloutPolicyRow, self._db.model_row(session, model).id)
            if row is None:
                raise NotFound("rollout policy", model, "model")
            return RolloutPolicy.from_json(row.policy), row.updated_at

    def delete_policy(self, model: str) -> None:
        with self._db.write() as session:
            row = session.get(RolloutPolicyRow, self._db.model_row(session, model).id)
            if row is None:
                raise NotFound("rollout policy", model, "model")
            session.delete(row)
            self._db.commit(session)

    # --- reading rollouts -----------------------------------------------------------------

    def latest(self, model: str) -> Rollout:
        """The model's most recent rollout, with its events."""
        with self._db.read() as session:
            self._db.model_row(session, model)
            row = session.scalar(
                select(RolloutRow)
                .where(RolloutRow.model == model)
                .order_by(RolloutRow.id.desc())
                .limit(1)
            )
            if row is None:
                raise NotFound("rollout", model, "model")
            events = list(
                session.scalars(
                    select(RolloutEventRow)
                    .where(RolloutEventRow.rollout_id == row.id)
                    .order_by(RolloutEventRow.id)
                )
            )
            return _rollout_of(row, events)

    def active(self) -> list[Rollout]:
        """Rollouts running or paused, of every model."""
        states = [RolloutState.RUNNING.value, RolloutState.PAUSED.value]
        with self._db.read() as session:
            rows = session.scalars(select(RolloutRow).where(RolloutRow.state.in_(states)))
            return [_rollout_of(r) for r in rows]

    def candidates(self) -> list[tuple[str, int, int, RolloutPolicy]]:
        """(model, version, production version, policy) of each model with a policy whose
        newest version is newer than production and was never rolled out, while no
        rollout of the model is active."""
        found = []
        with self._db.read() as session:
            for policy_row in session.scalars(select(RolloutPolicyRow)):
                model = session.get(ModelRow, policy_row.model_id)
                if model is None:
                    continue
                production = session.get(AliasRow, (model.id, PRODUCTION))
                if production is None or model.latest_version <= production.version.number:
                    continue
                rolled = session.scalar(
                    select(RolloutRow.id).where(
                        RolloutRow.model == model.name,
                        (RolloutRow.version == model.latest_version)
                        | RolloutRow.state.in_(
                            [RolloutState.RUNNING.value, RolloutState.PAUSED.value]
                        ),
                    )
                )
                if rolled is not None:
                    continue
                exists = session.scalar(
                    select(VersionRow.id).where(
                        VersionRow.model_id == model.id, VersionRow.number == model.latest_version
                    )
                )
                if exists is not None:
                    found.append(
                        (
                            model.name,
                            model.latest_version,
                            production.version.number,
                            RolloutPolicy.from_json(policy_row.policy),
                        )
                    )
        return found

    # --- transitions ----------------------------------------------------------------------

    def start(
        self,
        model: str,
        version: int,
        production: int,
        policy: RolloutPolicy,
        detail: str,
        *,
        refused: bool = False,
    ) -> Rollout:
        """Record the rollout of `version`: its first step (the canary at the first
        weight), or, `refused`, a rollout that never takes traffic."""
        session = self._db.write()
        try:
            at = now()
            state = RolloutState.REFUSED if refused else RolloutState.RUNNING
            weight = 0 if refused else policy.steps[0]
            row = RolloutRow(
                model=model,
                version=version,
                production_version=production,
                state=state.value,
                step=0,
                traffic_weight=weight,
                policy=policy.to_json(),
                started_at=at,
                step_started_at=at,
                updated_at=at,
            )
            session.add(row)
            session.flush()
            if not refused:
                self._aliases.set_in(session, model, CANARY, version, weight, CONTROLLER, detail)
            self._event(session, row, "refused" if refused else "started", CONTROLLER, detail)
            self._db.commit(session)
            return _rollout_of(row)
        except IntegrityError:
            session.rollback()
            raise FailedPrecondition(
                f"version {version} of {model!r} was already rolled out"
            ) from None
        finally:
            session.close()

    def advance(self, rollout: Rollout, detail: str, evidence: dict[str, float]) -> Rollout:
        """Move the canary to the next step's weight."""
        with self._db.write() as session:
            row = self._current(session, rollout, RolloutState.RUNNING)
            self._check_canary(session, row)
            row.step += 1
            row.traffic_weight = rollout.policy.steps[row.step]
            row.step_started_at = row.updated_at = now()
            self._aliases.set_in(
                session, row.model, CANARY, row.version, row.traffic_weight, CONTROLLER, detail
            )
            self._event(session, row, "stepped", CONTROLLER, detail, evidence)
            self._db.commit(session)
            return _rollout_of(row)

    def promote(self, rollout: Rollout, detail: str, evidence: dict[str, float]) -> Rollout:
        """Make the version production (through the promotion gate) and drop the canary."""
        with self._db.write() as session:
            row = self._current(session, rollout, RolloutState.RUNNING)
            self._check_canary(session, row)
            self._aliases.set_in(session, row.model, PRODUCTION, row.version, 0, CONTROLLER, detail)
            self._drop_canary(session, row, detail)
            return self._finish(
                session, row, RolloutState.PROMOTED, "promoted", CONTROLLER, detail, evidence
            )

    def roll_back(self, rollout: Rollout, detail: str, evidence: dict[str, float]) -> Rollout:
        """Drop the canary: production takes all traffic again."""
        with self._db.write() as session:
            row = self._current(session, rollout, RolloutState.RUNNING)
            self._drop_canary(session, row, detail)
            return self._finish(
                session, row, RolloutState.ROLLED_BACK, "rolled_back", CONTROLLER, detail, evidence
            )

    def pause(self, model: str, actor: str, reason: str) -> Rollout:
        _check_words(actor, reason)
        with self._db.write() as session:
            row = self._active_row(session, model, RolloutState.RUNNING, "pause")
            row.state = RolloutState.PAUSED.value
            row.updated_at = now()
            self._event(session, row, "paused", actor, reason or "paused")
            self._db.commit(session)
            return _rollout_of(row)

    def resume(self, model: str, actor: str, reason: str) -> Rollout:
        _check_words(actor, reason)
        with self._db.write() as session:
            row = self._active_row(session, model, RolloutState.PAUSED, "resume")
            row.state = RolloutState.RUNNING.value
            row.step_started_at = row.updated_at = now()
            self._event(session, row, "resumed", actor, reason or "resumed")
            self._db.commit(session)
            return _rollout_of(row)

    def abort(self, model: str, actor: str, reason: str) -> Rollout:
        _check_words(actor, reason)
        with self._db.write() as session:
            row = self._active_row(session, model, None, "abort")
            detail = reason or "aborted"
            self._drop_canary(session, row, detail, actor)
            return self._finish(session, row, RolloutState.ABORTED, "aborted", actor, detail, {})

    def abandon(self, rollout: Rollout, detail: str) -> Rollout:
        """End a rollout whose canary someone moved by hand, leaving the aliases alone."""
        with self._db.write() as session:
            row = self._current(session, rollout, None)
            return self._finish(
                session, row, RolloutState.ABORTED, "aborted", CONTROLLER, detail, {}
            )

    # --- helpers --------------------------------------------------------------------------

    def _current(
        self, session: Session, rollout: Rollout, state: RolloutState | None
    ) -> RolloutRow:
        """The rollout's row, if it is still where the caller saw it."""
        row = session.get(RolloutRow, rollout.id)
        if (
            row is None
            or row.step != rollout.step
            or row.state != rollout.state.value
            or as_utc(row.updated_at) != rollout.updated_at
            or (state is not None and row.state != state.value)
        ):
            raise FailedPrecondition(
                f"the rollout of {rollout.model!r} version {rollout.version} moved on "
                "meanwhile; read it again"
            )
        return row

    def _check_canary(self, session: Session, row: RolloutRow) -> None:
        """Refuse a step when the canary is no longer where the rollout put it (moved by
        hand meanwhile): the next tick sees it and ends the rollout."""
        canary = session.get(AliasRow, (self._db.model_row(session, row.model).id, CANARY))
        if (
            canary is None
            or canary.version.number != row.version
            or canary.traffic_weight != row.traffic_weight
        ):
            raise FailedPrecondition(
                f"the canary of {row.model!r} was moved by hand during the rollout"
            )

    def _active_row(
        self, session: Session, model: str, state: RolloutState | None, verb: str
    ) -> RolloutRow:
        self._db.model_row(session, model)
        row = session.scalar(
            select(RolloutRow).where(
                RolloutRow.model == model,
                RolloutRow.state.in_([RolloutState.RUNNING.value, RolloutState.PAUSED.value]),
            )
        )
        if row is None:
            raise FailedPrecondition(f"no rollout of {model!r} is running or paused to {verb}")
        if state is not None and row.state != state.value:
            raise FailedPrecondition(
                f"the rollout of {model!r} is {row.state.lower()}; cannot {verb} it"
            )
        return row

    def _drop_canary(
        self, session: Session, row: RolloutRow, detail: str, actor: str = CONTROLLER
    ) -> None:
        canary = session.get(AliasRow, (self._db.model_row(session, row.model).id, CANARY))
        if canary is not None and canary.version.number == row.version:
            self._aliases.delete_in(session, row.model, CANARY, actor, detail)

    def _finish(
        self,
        session: Session,
        row: RolloutRow,
        state: RolloutState,
        kind: str,
        actor: str,
        detail: str,
        evidence: dict[str, float],
    ) -> Rollout:
        row.state = state.value
        row.updated_at = now()
        self._event(session, row, kind, actor, detail, evidence)
        self._db.commit(session)
        return _rollout_of(row)

    def _event(
        self,
        session: Session,
        row: RolloutRow,
        kind: str,
        actor: str,
        detail: str,
        evidence: dict[str, float] | None = None,
    ) -> None:
        detail = detail[:MAX_DETAIL]
        change = self._db.append_change(
            session, EVENT_TYPES[kind], row.model, row.version, CANARY, row.traffic_weight
        )
        session.add(
            RolloutEventRow(
                rollout_id=row.id,
                version=row.version,
                kind=kind,
                step=row.step,
                traffic_weight=row.traffic_weight,
                actor=actor or "anonymous",
                detail=detail,
                evidence=evidence or {},
                happened_at=change.changed_at,
                revision=change.revision,
            )
        )
        session.flush()
