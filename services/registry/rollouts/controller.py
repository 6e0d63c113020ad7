"""The rollout controller: starts a rollout when a model with a policy gets a version that
passes the promotion gate, and moves each running rollout by its evidence.

Every `tick` it reads the database (never its own memory, so a controller killed with
SIGKILL and started again resumes each rollout at its recorded step), and for each running
rollout reads both versions' figures from the inference service, evaluates the policy's
checks (services.registry.rollouts.evidence), and then:

- rolls back at the first failed check;
- once the step has held `step_seconds`, the canary has answered `step_min_requests` per
  step so far, and every check passes: steps up, or after the last step (100 %) promotes;
- rolls back a step still undecided after `step_timeout_seconds` (too little traffic or
  feedback, or a canary that never loaded);
- ends, leaving the aliases alone, a rollout whose canary someone moved by hand.

It runs in one registry replica at a time, the holder of the `rollout-controller` lease
(shared.leases; services.registry.server). Each transition is also conditional on the
rollout being where the tick saw it (RolloutBook), so even a holder that has lost its
lease mid-tick cannot step a rollout twice."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from services.registry.core import Registry
from services.registry.gate import check_promotion
from services.registry.rollouts.book import RolloutBook
from services.registry.rollouts.entities import Rollout, RolloutState
from services.registry.rollouts.evidence import CheckResult, Verdict, VersionFigures, evaluate
from services.registry.rollouts.policy import RolloutPolicy
from shared.aliases import CANARY
from shared.errors import DomainError, FailedPrecondition, NotFound

log = logging.getLogger(__name__)


class FiguresSource(Protocol):
    async def figures(self, model: str) -> dict[int, VersionFigures]:
        """Each loaded version's figures since it was loaded, by version number."""
        ...


class RolloutController:
    def __init__(
        self,
        registry: Registry,
        book: RolloutBook,
        source: FiguresSource,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._registry = registry
        self._book = book
        self._source = source
        self._clock = clock

    async def tick(self) -> None:
        for model, version, production, policy in await asyncio.to_thread(self._book.candidates):
            try:
                await asyncio.to_thread(self._begin, model, version, production, policy)
            except FailedPrecondition as error:
                log.info("rollout not started", extra={"model": model, "error": error.message})
            except Exception:  # noqa: BLE001 - the other models' rollouts go on
                log.exception("rollout could not start", extra={"model": model})
        for rollout in await asyncio.to_thread(self._book.active):
            if rollout.state is RolloutState.RUNNING:
                try:
                    await self._judge(rollout)
                except FailedPrecondition as error:
                    # Another controller, or a person, moved it meanwhile: next tick re-reads.
                    log.info(
                        "rollout moved on", extra={"model": rollout.model, "error": error.message}
                    )
                except Exception:  # noqa: BLE001 - the other models' rollouts go on
                    log.exception("rollout tick failed", extra={"model": rollout.model})

    def _begin(self, model: str, version: int, production: int, policy: RolloutPolicy) -> None:
        rule = self._registry.get_model(model).promotion_rule
        candidate = self._registry.get_version(model, version)
        current = self._registry.get_version(model, production)
        try:
            check_promotion(rule, version, candidate.metrics, production, current.metrics, False)
        except FailedPrecondition as refused:
            self._book.start(model, version, production, policy, refused.message, refused=True)
            log.info("rollout refused by the gate", extra={"model": model, "version": version})
            return
        value = candidate.metrics.get(rule.metric)
        detail = (
            f"version {version} passed the promotion gate ({rule.metric} {value:g} vs "
            f"production version {production} {current.metrics.get(rule.metric):g}); "
            f"canary at {policy.steps[0]}%"
        )
        self._book.start(model, version, production, policy, detail)
        log.info("rollout started", extra={"model": model, "version": version})

    async def _judge(self, rollout: Rollout) -> None:
        try:
            canary = await asyncio.to_thread(self._registry.get_version, rollout.model, 0, CANARY)
            moved_to = canary.version
        except NotFound:
            moved_to = 0
        if moved_to != rollout.version:
            where = f"to version {moved_to}" if moved_to else "away"
            await asyncio.to_thread(
                self._book.abandon, rollout, f"the canary alias was moved {where} by hand"
            )
            return
        policy = rollout.policy
        step = f"step {rollout.step + 1} of {len(policy.steps)} ({rollout.traffic_weight}%)"
        try:
            figures = await self._source.figures(rollout.model)
        except (DomainError, OSError) as error:
            figures = {}
            log.warning("no figures from the inference service", extra={"error": str(error)})
        canary_figures = figures.get(rollout.version)
        production_figures = figures.get(rollout.production_version)
        if canary_figures is None or production_figures is None:
            results: list[CheckResult] = []
            waiting = "the inference service does not serve both versions yet"
        else:
            results = [
                evaluate(check, canary_figures, production_figures, policy.confidence)
                for check in policy.checks
            ]
            waiting = ""
        evidence = {key: value for r in results for key, value in r.evidence.items()}
        if canary_figures is not None:
            evidence["canary.requests"] = canary_figures.requests
        failed = [r for r in results if r.verdict is Verdict.FAIL]
        if failed:
            detail = f"{step} failed: " + "; ".join(r.detail for r in failed)
            await asyncio.to_thread(self._book.roll_back, rollout, detail, evidence)
            log.warning("rollout rolled back", extra={"model": rollout.model, "detail": detail})
            return
        held_s = (self._clock() - rollout.step_started_at).total_seconds()
        wanted = (rollout.step + 1) * policy.step_min_requests
        served = canary_figures.requests if canary_figures is not None else 0
        undecided = [r.detail for r in results if r.verdict is Verdict.WAIT]
        if waiting:
            undecided.append(waiting)
        if served < wanted:
            undecided.append(f"canary requests {served} of {wanted}")
        if not undecided and held_s >= policy.step_seconds:
            detail = f"{step} passed after {held_s:.1f} s: " + "; ".join(r.detail for r in results)
            if rollout.last_step:
                await self._promote(rollout, detail, evidence)
            else:
                await asyncio.to_thread(self._book.advance, rollout, detail, evidence)
            return
        if held_s > policy.step_timeout_seconds:
            detail = (
                f"{step} undecided after {held_s:.1f} s (timeout "
                f"{policy.step_timeout_seconds:g} s): " + "; ".join(undecided or ["holding"])
            )
            await asyncio.to_thread(self._book.roll_back, rollout, detail, evidence)

    async def _promote(self, rollout: Rollout, detail: str, evidence: dict[str, float]) -> None:
        try:
            await asyncio.to_thread(self._book.promote, rollout, detail, evidence)
        except FailedPrecondition as refused:
            # Production moved to a better version during the rollout: the gate says no.
            await asyncio.to_thread(
                self._book.roll_back, rollout, f"{detail}; promotion refused: {refused}", evidence
            )
