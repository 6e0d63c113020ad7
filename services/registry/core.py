"""The registry's logic: models, versions and their artifacts, aliases with the promotion
gate and canary weights, the alias audit log and the change feed. No transport here; the
gRPC servicer converts requests and calls these methods (from a worker thread)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from services.registry import entities as e
from services.registry.pagination import decode_token, encode_token, page_size
from services.registry.store import (
    AliasChangeRow,
    AliasRow,
    ArtifactRow,
    Base,
    ChangeRow,
    ModelRow,
    VersionRow,
)
from services.registry.upload import ArtifactReceiver
from shared.aliases import CANARY, PRODUCTION
from shared.blobstore import BlobStore, is_sha256_hex
from shared.db import write_lock
from shared.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    invalid,
)
from shared.names import check_name

# Advisory-lock key that orders every registry write (see shared.db.write_lock).
_WRITE_LOCK_KEY = 0x7F6D657368_01
MAX_TAGS = 64
MAX_TAG_LENGTH = 1024


def _now() -> datetime:
    return datetime.now(UTC)


def _raise_if(violations: list[FieldViolation | None]) -> None:
    found = [v for v in violations if v is not None]
    if found:
        raise InvalidArgument(found)


def _check_map(field: str, values: dict[str, str]) -> FieldViolation | None:
    if len(values) > MAX_TAGS:
        return FieldViolation(field, f"at most {MAX_TAGS} entries")
    for key, value in values.items():
        if not key or len(key) > 128 or len(value) > MAX_TAG_LENGTH:
            return FieldViolation(
                f"{field}[{key!r}]", f"keys 1-128 characters, values at most {MAX_TAG_LENGTH}"
            )
    return None


def _check_metrics(metrics: dict[str, float]) -> FieldViolation | None:
    for key, value in metrics.items():
        if not key or len(key) > 128:
            return FieldViolation(f"metrics[{key!r}]", "metric names are 1-128 characters")
        if not math.isfinite(value):
            return FieldViolation(f"metrics[{key!r}]", "must be a finite number")
    return None


def _model(row: ModelRow) -> e.Model:
    rule = e.PromotionRule(row.promotion_metric, row.min_improvement, row.higher_is_better)
    return e.Model(
        row.name, row.description, rule, dict(row.tags), row.created_at, row.latest_version
    )


def _version(row: VersionRow, aliases: list[str]) -> e.ModelVersion:
    return e.ModelVersion(
        model=row.model.name,
        version=row.number,
        artifacts=[
            e.ArtifactSpec(a.name, a.size_bytes, a.sha256, a.media_type) for a in row.artifacts
        ],
        metrics=dict(row.metrics),
        params=dict(row.params),
        tags=dict(row.tags),
        lineage=e.Lineage(row.dataset_version, row.training_job, row.code_version),
        created_at=row.created_at,
        aliases=sorted(aliases),
        idempotency_key=row.idempotency_key or "",
    )


def _alias(row: AliasRow, model: str) -> e.Alias:
    return e.Alias(model, row.name, row.version.number, row.traffic_weight, row.updated_at)


def _alias_change(row: AliasChangeRow) -> e.AliasChange:
    return e.AliasChange(
        row.model,
        row.alias,
        row.old_version,
        row.new_version,
        row.old_traffic_weight,
        row.new_traffic_weight,
        row.actor,
        row.reason,
        row.overridden,
        row.changed_at,
        row.revision,
    )


def _change(row: ChangeRow) -> e.Change:
    return e.Change(
        row.revision,
        e.EventType(row.event_type),
        row.model,
        row.version,
        row.alias,
        row.traffic_weight,
        row.changed_at,
    )


class VersionUpload:
    """An upload in progress; `finish` records the version, `abort` discards the bytes."""

    def __init__(
        self, registry: Registry, header: e.UploadHeader, existing: e.ModelVersion | None
    ) -> None:
        self._registry = registry
        self._header = header
        self.existing = existing
        self._receiver = ArtifactReceiver(registry.blobs, header.artifacts)

    def write(self, data: bytes) -> None:
        self._receiver.write(data)

    def finish(self) -> tuple[e.ModelVersion, bool]:
        self._receiver.finish()
        return self._registry._record_version(self._header)

    def abort(self) -> None:
        self._receiver.abort()


class Registry:
    def __init__(
        self,
        engine: Engine,
        blobs: BlobStore,
        *,
        default_rule: e.PromotionRule,
        max_artifact_bytes: int,
        default_page_size: int = 50,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        Base.metadata.create_all(engine)
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.blobs = blobs
        self._default_rule = default_rule
        self._max_artifact_bytes = max_artifact_bytes
        self._default_page_size = default_page_size
        self._on_change = on_change

    # --- sessions and lookups -------------------------------------------------------------

    def _write(self) -> Session:
        session = self._sessions()
        session.begin()
        write_lock(session, _WRITE_LOCK_KEY)
        return session

    def _get_model_row(self, session: Session, name: str, field: str = "model") -> ModelRow:
        _raise_if([check_name(field, name)])
        row = session.scalar(select(ModelRow).where(ModelRow.name == name))
        if row is None:
            raise NotFound("model", name, field)
        return row

    def _get_version_row(
        self, session: Session, model: ModelRow, number: int, field: str = "version"
    ) -> VersionRow:
        if number <= 0:
            raise invalid(field, "must be a version number >= 1")
        row = session.scalar(
            select(VersionRow)
            .where(VersionRow.model_id == model.id, VersionRow.number == number)
            .options(selectinload(VersionRow.artifacts))
        )
        if row is None:
            raise NotFound("model version", f"{model.name}/{number}", field)
        return row

    def _aliases_of(self, session: Session, version_ids: list[int]) -> dict[int, list[str]]:
        names: dict[int, list[str]] = {vid: [] for vid in version_ids}
        rows = session.execute(
            select(AliasRow.version_id, AliasRow.name).where(AliasRow.version_id.in_(version_ids))
        )
        for version_id, name in rows:
            names[version_id].append(name)
        return names

    def _append_change(
        self,
        session: Session,
        event_type: e.EventType,
        model: str,
        version: int = 0,
        alias: str = "",
        traffic_weight: int = 0,
    ) -> ChangeRow:
        row = ChangeRow(
            event_type=event_type.value,
            model=model,
            version=version,
            alias=alias,
            traffic_weight=traffic_weight,
            changed_at=_now(),
        )
        session.add(row)
        session.flush()
        return row

    def _commit(self, session: Session) -> None:
        session.commit()
        self._on_change()

    # --- models ---------------------------------------------------------------------------

    def create_model(
        self,
        name: str,
        description: str = "",
        rule: e.PromotionRule | None = None,
        tags: dict[str, str] | None = None,
    ) -> e.Model:
        tags = tags or {}
        violations = [check_name("name", name), _check_map("tags", tags)]
        if rule is not None:
            violations.append(check_name("promotion_rule.metric", rule.metric))
            if not math.isfinite(rule.min_improvement) or rule.min_improvement < 0:
                violations.append(
                    FieldViolation("promotion_rule.min_improvement", "must be finite and >= 0")
                )
        if len(description) > 4096:
            violations.append(FieldViolation("description", "at most 4096 characters"))
        _raise_if(violations)
        with self._write() as session:
            if session.scalar(select(ModelRow).where(ModelRow.name == name)) is not None:
                raise AlreadyExists("model", name, "name")
            row = self._insert_model(session, name, description, rule or self._default_rule, tags)
            self._commit(session)
            return _model(row)

    def _insert_model(
        self,
        session: Session,
        name: str,
        description: str,
        rule: e.PromotionRule,
        tags: dict[str, str],
    ) -> ModelRow:
        row = ModelRow(
            name=name,
            description=description,
            promotion_metric=rule.metric,
            min_improvement=rule.min_improvement,
            higher_is_better=rule.higher_is_better,
            tags=tags,
            created_at=_now(),
            latest_version=0,
        )
        session.add(row)
        session.flush()
        self._append_change(session, e.EventType.MODEL_CREATED, name)
        return row

    def get_model(self, name: str) -> e.Model:
        with self._sessions() as session:
            return _model(self._get_model_row(session, name, "name"))

    def list_models(self, size: int = 0, token: str = "") -> e.Page[e.Model]:
        limit = page_size(size, self._default_page_size)
        after = decode_token(token)
        query = select(ModelRow).order_by(ModelRow.name).limit(limit + 1)
        if after is not None:
            query = query.where(ModelRow.name > str(after))
        with self._sessions() as session:
            rows = list(session.scalars(query))
        more = len(rows) > limit
        rows = rows[:limit]
        next_token = encode_token(rows[-1].name) if more else ""
        return e.Page([_model(r) for r in rows], next_token)

    # --- versions -------------------------------------------------------------------------

    def begin_upload(self, header: e.UploadHeader) -> VersionUpload:
        """Validate a header; the upload returned receives the artifact bytes."""
        violations: list[FieldViolation | None] = [
            check_name("header.model", header.model),
            _check_map("header.params", header.params),
            _check_map("header.tags", header.tags),
            _check_metrics(header.metrics),
        ]
        if not header.artifacts:
            violations.append(FieldViolation("header.artifacts", "at least one artifact"))
        seen: set[str] = set()
        for i, spec in enumerate(header.artifacts):
            field = f"header.artifacts[{i}]"
            violations.append(check_name(f"{field}.name", spec.name))
            if spec.name in seen:
                violations.append(FieldViolation(f"{field}.name", "duplicate artifact name"))
            seen.add(spec.name)
            if not is_sha256_hex(spec.sha256):
                violations.append(
                    FieldViolation(f"{field}.sha256", "must be 64 lower-case hex characters")
                )
            if spec.size_bytes < 0 or spec.size_bytes > self._max_artifact_bytes:
                violations.append(
                    FieldViolation(
                        f"{field}.size_bytes",
                        f"must be between 0 and {self._max_artifact_bytes} bytes "
                        f"(got {spec.size_bytes})",
                    )
                )
        if len(header.idempotency_key) > 256:
            violations.append(FieldViolation("header.idempotency_key", "at most 256 characters"))
        _raise_if(violations)
        existing = None
        with self._sessions() as session:
            model = session.scalar(select(ModelRow).where(ModelRow.name == header.model))
            if model is None and not header.create_model:
                raise NotFound("model", header.model, "header.model")
            if model is not None and header.idempotency_key:
                existing = self._find_by_key(session, model, header.idempotency_key)
        return VersionUpload(self, header, existing)

    def _find_by_key(self, session: Session, model: ModelRow, key: str) -> e.ModelVersion | None:
        row = session.scalar(
            select(VersionRow)
            .where(VersionRow.model_id == model.id, VersionRow.idempotency_key == key)
            .options(selectinload(VersionRow.artifacts))
        )
        if row is None:
            return None
        return _version(row, self._aliases_of(session, [row.id])[row.id])

    def _record_version(self, header: e.UploadHeader) -> tuple[e.ModelVersion, bool]:
        """Insert the version once its blobs are durable; one transaction, or nothing."""
        session = self._write()
        try:
            model = session.scalar(select(ModelRow).where(ModelRow.name == header.model))
            if model is None:
                if not header.create_model:
                    raise NotFound("model", header.model, "header.model")
                model = self._insert_model(session, header.model, "", self._default_rule, {})
            if header.idempotency_key:
                existing = self._find_by_key(session, model, header.idempotency_key)
                if existing is not None:
                    session.rollback()
                    return existing, False
            model.latest_version += 1
            row = VersionRow(
                model_id=model.id,
                number=model.latest_version,
                idempotency_key=header.idempotency_key or None,
                metrics=header.metrics,
                params=header.params,
                tags=header.tags,
                dataset_version=header.lineage.dataset_version,
                training_job=header.lineage.training_job,
                code_version=header.lineage.code_version,
                created_at=_now(),
                artifacts=[
                    ArtifactRow(
                        position=i,
                        name=a.name,
                        size_bytes=a.size_bytes,
                        sha256=a.sha256,
                        media_type=a.media_type,
                    )
                    for i, a in enumerate(header.artifacts)
                ],
            )
            row.model = model
            session.add(row)
            session.flush()
            self._append_change(session, e.EventType.VERSION_CREATED, model.name, row.number)
            version = _version(row, [])
            self._commit(session)
            return version, True
        except IntegrityError:
            # A concurrent upload with the same idempotency key won the race.
            session.rollback()
            with self._sessions() as fresh:
                model = self._get_model_row(fresh, header.model, "header.model")
                existing = self._find_by_key(fresh, model, header.idempotency_key)
            if existing is None:
                raise
            return existing, False
        finally:
            session.close()

    def get_version(self, model: str, version: int = 0, alias: str = "") -> e.ModelVersion:
        with self._sessions() as session:
            model_row = self._get_model_row(session, model)
            if alias:
                _raise_if([check_name("alias", alias)])
                alias_row = session.get(AliasRow, (model_row.id, alias))
                if alias_row is None:
                    raise NotFound("alias", f"{model}@{alias}", "alias")
                version = alias_row.version.number
            row = self._get_version_row(session, model_row, version)
            return _version(row, self._aliases_of(session, [row.id])[row.id])

    def list_versions(
        self, model: str, size: int = 0, token: str = "", dataset_version: str = ""
    ) -> e.Page[e.ModelVersion]:
        limit = page_size(size, self._default_page_size)
        after = decode_token(token)
        query = (
            select(VersionRow)
            .options(selectinload(VersionRow.artifacts), selectinload(VersionRow.model))
            .order_by(VersionRow.id)
            .limit(limit + 1)
        )
        with self._sessions() as session:
            if model:
                query = query.where(VersionRow.model_id == self._get_model_row(session, model).id)
            elif not dataset_version:
                raise invalid("dataset_version", "required when model is empty")
            if dataset_version:
                query = query.where(VersionRow.dataset_version == dataset_version)
            if after is not None:
                if not isinstance(after, int):
                    raise invalid("page_token", "not a page token this server issued")
                query = query.where(VersionRow.id > after)
            rows = list(session.scalars(query))
            more = len(rows) > limit
            rows = rows[:limit]
            aliases = self._aliases_of(session, [r.id for r in rows])
            versions = [_version(r, aliases[r.id]) for r in rows]
        return e.Page(versions, encode_token(rows[-1].id) if more else "")

    def delete_version(self, model: str, version: int) -> None:
        with self._write() as session:
            model_row = self._get_model_row(session, model)
            row = self._get_version_row(session, model_row, version)
            aliases = self._aliases_of(session, [row.id])[row.id]
            if aliases:
                raise FailedPrecondition(
                    f"version {version} of {model!r} is named by alias(es) "
                    f"{', '.join(sorted(aliases))}; move or delete them first"
                )
            digests = {a.sha256 for a in row.artifacts}
            session.delete(row)
            self._append_change(session, e.EventType.VERSION_DELETED, model, version)
            session.flush()
            still_used = set(
                session.scalars(select(ArtifactRow.sha256).where(ArtifactRow.sha256.in_(digests)))
            )
            self._commit(session)
        for digest in digests - still_used:
            self.blobs.delete(digest)

    def open_artifact(
        self, model: str, version: int, artifact: str = "", chunk_bytes: int = 0
    ) -> tuple[e.ArtifactSpec, Iterator[bytes]]:
        if chunk_bytes < 0 or chunk_bytes > 16 * 1024 * 1024:
            raise invalid("chunk_bytes", "must be between 0 and 16 MiB")
        found = self.get_version(model, version)
        if artifact:
            matches = [a for a in found.artifacts if a.name == artifact]
            if not matches:
                raise NotFound("artifact", f"{model}/{version}/{artifact}", "artifact")
            spec = matches[0]
        else:
            spec = found.artifacts[0]
        return spec, self.blobs.read_chunks(spec.sha256, chunk_bytes or 1024 * 1024)

    # --- aliases --------------------------------------------------------------------------

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
        _raise_if(violations)
        with self._write() as session:
            model_row = self._get_model_row(session, model)
            target = self._get_version_row(session, model_row, version)
            current = session.get(AliasRow, (model_row.id, alias))
            old_version = current.version.number if current else 0
            old_weight = current.traffic_weight if current else 0
            if old_version == version and old_weight == traffic_weight:
                return _alias(current, model), None  # type: ignore[arg-type]
            overridden = False
            if alias == PRODUCTION and current is not None and old_version != version:
                overridden = self._check_gate(model_row, target, current.version, override_gate)
            if current is None:
                current = AliasRow(model_id=model_row.id, name=alias)
                session.add(current)
            current.version_id = target.id
            current.version = target
            current.traffic_weight = traffic_weight
            current.updated_at = _now()
            event = (
                e.EventType.ALIAS_WEIGHT_CHANGED
                if old_version == version
                else e.EventType.ALIAS_MOVED
            )
            change = self._append_change(session, event, model, version, alias, traffic_weight)
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
            result = _alias(current, model), _alias_change(audit)
            self._commit(session)
            return result

    def _check_gate(
        self, model: ModelRow, candidate: VersionRow, current: VersionRow, override: bool
    ) -> bool:
        """Allow promotion, or raise; True when it passes only by the recorded override."""
        rule = _model(model).promotion_rule
        metric = rule.metric
        candidate_value = candidate.metrics.get(metric)
        current_value = current.metrics.get(metric)
        if candidate_value is None or current_value is None:
            problem = (
                f"version {candidate.number if candidate_value is None else current.number} "
                f"has no {metric!r} metric to compare"
            )
        else:
            gain = rule.improvement(candidate_value, current_value)
            if gain > 0 and gain >= rule.min_improvement:
                return False
            problem = (
                f"version {candidate.number} {metric}={candidate_value:g} does not beat "
                f"production version {current.number} {metric}={current_value:g} by "
                f"{rule.min_improvement:g} ({'higher' if rule.higher_is_better else 'lower'} "
                "is better)"
            )
        if override:
            return True
        raise FailedPrecondition(f"promotion refused: {problem}; set override_gate with a reason")

    def delete_alias(self, model: str, alias: str, actor: str = "", reason: str = "") -> None:
        _raise_if([check_name("alias", alias)])
        with self._write() as session:
            model_row = self._get_model_row(session, model)
            current = session.get(AliasRow, (model_row.id, alias))
            if current is None:
                raise NotFound("alias", f"{model}@{alias}", "alias")
            old_version, old_weight = current.version.number, current.traffic_weight
            session.delete(current)
            change = self._append_change(session, e.EventType.ALIAS_DELETED, model, 0, alias)
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
            self._commit(session)

    def list_aliases(self, model: str) -> list[e.Alias]:
        with self._sessions() as session:
            model_row = self._get_model_row(session, model)
            rows = session.scalars(
                select(AliasRow)
                .where(AliasRow.model_id == model_row.id)
                .options(selectinload(AliasRow.version))
                .order_by(AliasRow.name)
            )
            return [_alias(r, model) for r in rows]

    def list_alias_history(
        self, model: str, size: int = 0, token: str = ""
    ) -> e.Page[e.AliasChange]:
        limit = page_size(size, self._default_page_size)
        after = decode_token(token)
        with self._sessions() as session:
            self._get_model_row(session, model)
            query = (
                select(AliasChangeRow)
                .where(AliasChangeRow.model == model)
                .order_by(AliasChangeRow.id)
                .limit(limit + 1)
            )
            if after is not None:
                if not isinstance(after, int):
                    raise invalid("page_token", "not a page token this server issued")
                query = query.where(AliasChangeRow.id > after)
            rows = list(session.scalars(query))
        more = len(rows) > limit
        rows = rows[:limit]
        return e.Page([_alias_change(r) for r in rows], encode_token(rows[-1].id) if more else "")

    # --- change feed ----------------------------------------------------------------------

    def changes_after(
        self, revision: int, models: list[str] | None = None, limit: int = 500
    ) -> list[e.Change]:
        if revision < 0:
            raise invalid("since_revision", "must be >= 0")
        _raise_if([check_name(f"models[{i}]", m) for i, m in enumerate(models or [])])
        query = (
            select(ChangeRow)
            .where(ChangeRow.revision > revision)
            .order_by(ChangeRow.revision)
            .limit(limit)
        )
        if models:
            query = query.where(ChangeRow.model.in_(models))
        with self._sessions() as session:
            return [_change(r) for r in session.scalars(query)]
