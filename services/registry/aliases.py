"""Aliases: names for versions (`production` through the promotion gate, `canary` with a
traffic weight), each move written to the audit log and the change feed in the same
transaction as the move itself."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from services.registry import entities as e
from services.registry.database import RegistryDatabase, now
from services.registry.gate import check_promotion
from services.registry.pagination import decode_id_token, encode_token, page_size
from services.registry.rows import alias_change_of, alias_of, model_of
from services.registry.store import AliasChangeRow, AliasRow
from shared.aliases import CANARY, PRODUCTION
from shared.errors import FieldViolation, NotFound, raise_violations
from shared.names import check_name


class AliasBook:
    def __init__(self, db: RegistryDatabase, default_page_size: int = 50) -> None:
        self._db = db
        self._default_page_size = default_page_size

    def set_alias(
        self,
        model: str,
        alias: str,
        version: int,
        *,
        traffic_weight: int = 0,
        actor: str = "",
        reason: str = "",
        override_gate: bool = False,
    ) -> tuple[e.Alias, e.AliasChange | None]:
        violations = [check_name("alias", alias)]
        if alias == CANARY and not 0 <= traffic_weight <= 100:
            violations.append(FieldViolation("traffic_weight", "must be between 0 and 100"))
        if alias != CANARY and traffic_weight != 0:
            violations.append(
                FieldViolation("traffic_weight", f"only the {CANARY!r} alias carries a weight")
            )
        if override_gate and not reason.strip():
            violations.append(FieldViolation("reason", "required when override_gate is set"))
        if len(actor) > 256 or len(reason) > 4096:
            violations.append(FieldViolation("reason", "actor <= 256, reason <= 4096 characters"))
        raise_violations(violations)
        with self._db.write() as session:
            result = self.set_in(
                session, model, alias, version, traffic_weight, actor, reason, override_gate
            )
            if result[1] is not None:
                self._db.commit(session)
            return result

    def set_in(
        self,
        session: Session,
        model: str,
        alias: str,
        version: int,
        traffic_weight: int,
        actor: str,
        reason: str,
        override_gate: bool = False,
    ) -> tuple[e.Alias, e.AliasChange | None]:
        """Move an alias inside the caller's write transaction (arguments checked)."""
        model_row = self._db.model_row(session, model)
        target = self._db.version_row(session, model_row, version)
        current = session.get(AliasRow, (model_row.id, alias))
        old_version = current.version.number if current else 0
        old_weight = current.traffic_weight if current else 0
        if old_version == version and old_weight == traffic_weight:
            return alias_of(current, model), None  # type: ignore[arg-type]
        overridden = False
        if alias == PRODUCTION and current is not None and old_version != version:
            overridden = check_promotion(
                model_of(model_row).promotion_rule,
                target.number,
                target.metrics,
                current.version.number,
                current.version.metrics,
                override_gate,
            )
        if current is None:
            current = AliasRow(model_id=model_row.id, name=alias)
            session.add(current)
        current.version_id = target.id
        current.version = target
        current.traffic_weight = traffic_weight
        current.updated_at = now()
        event = (
            e.EventType.ALIAS_WEIGHT_CHANGED if old_version == version else e.EventType.ALIAS_MOVED
        )
        change = self._db.append_change(session, event, model, version, alias, traffic_weight)
        audit = AliasChangeRow(
            model=model,
            alias=alias,
            old_version=old_version,
            new_version=version,
            old_traffic_weight=old_weight,
            new_traffic_weight=traffic_weight,
            actor=actor or "anonymous",
            reason=reason,
            overridden=overridden,
            changed_at=change.changed_at,
            revision=change.revision,
        )
        session.add(audit)
        session.flush()
        return alias_of(current, model), alias_change_of(audit)

    def delete_alias(self, model: str, alias: str, actor: str = "", reason: str = "") -> None:
        raise_violations([check_name("alias", alias)])
        with self._db.write() as session:
            self.delete_in(session, model, alias, actor, reason)
            self._db.commit(session)

    def delete_in(self, session: Session, model: str, alias: str, actor: str, reason: str) -> None:
        """Delete an alias inside the caller's write transaction."""
        model_row = self._db.model_row(session, model)
        current = session.get(AliasRow, (model_row.id, alias))
        if current is None:
            raise NotFound("alias", f"{model}@{alias}", "alias")
        old_version, old_weight = current.version.number, current.traffic_weight
        session.delete(current)
        change = self._db.append_change(session, e.EventType.ALIAS_DELETED, model, 0, alias)
        session.add(
            AliasChangeRow(
                model=model,
                alias=alias,
                old_version=old_version,
                new_version=0,
                old_traffic_weight=old_weight,
                new_traffic_weight=0,
                actor=actor or "anonymous",
                reason=reason,
                overridden=False,
                changed_at=change.changed_at,
                revision=change.revision,
            )
        )

    def list_aliases(self, model: str) -> list[e.Alias]:
        with self._db.read() as session:
            model_row = self._db.model_row(session, model)
            rows = session.scalars(
                select(AliasRow)
                .where(AliasRow.model_id == model_row.id)
                .options(selectinload(AliasRow.version))
                .order_by(AliasRow.name)
            )
            return [alias_of(r, model) for r in rows]

    def list_alias_history(
        self, model: str, size: int = 0, token: str = ""
    ) -> e.Page[e.AliasChange]:
        limit = page_size(size, self._default_page_size)
        after = decode_id_token(token)
        with self._db.read() as session:
            self._db.model_row(session, model)
            query = (
                select(AliasChangeRow)
                .where(AliasChangeRow.model == model)
                .order_by(AliasChangeRow.id)
                .limit(limit + 1)
            )
            if after is not None:
                query = query.where(AliasChangeRow.id > after)
            rows = list(session.scalars(query))
        more = len(rows) > limit
        rows = rows[:limit]
        return e.Page([alias_change_of(r) for r in rows], encode_token(rows[-1].id) if more else "")
