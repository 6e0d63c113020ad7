"""The registry's models, versions and their artifacts, and the change feed. Aliases and the
promotion gate are `AliasBook` (services.registry.aliases), reached as `Registry.aliases`;
rollout policies and rollouts are `RolloutBook` (services.registry.rollouts.book), reached
as `Registry.rollouts`. No transport here; the gRPC servicer converts requests and calls
these methods (from a worker thread)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, selectinload

from services.registry import entities as e
from services.registry.aliases import AliasBook
from services.registry.database import RegistryDatabase, now
from services.registry.pagination import decode_id_token, decode_token, encode_token, page_size
from services.registry.rollouts.book import RolloutBook
from services.registry.rows import change_of, model_of, version_of
from services.registry.store import (
    AliasRow,
    ArtifactRow,
    ChangeRow,
    ModelRow,
    RolloutEventRow,
    VersionRow,
)
from services.registry.upload import ArtifactReceiver
from shared.blobstore import BlobStore, is_sha256_hex
from shared.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    NotFound,
    invalid,
    raise_violations,
)
from shared.names import check_name

MAX_TAGS = 64
MAX_TAG_LENGTH = 1024


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
        self._db = RegistryDatabase(engine, on_change)
        self.blobs = blobs
        self.aliases = AliasBook(self._db, default_page_size)
        self.rollouts = RolloutBook(self._db, self.aliases)
        self._default_rule = default_rule
        self._max_artifact_bytes = max_artifact_bytes
        self._default_page_size = default_page_size

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
        raise_violations(violations)
        with self._db.write() as session:
            if session.scalar(select(ModelRow).where(ModelRow.name == name)) is not None:
                raise AlreadyExists("model", name, "name")
            row = self._insert_model(session, name, description, rule or self._default_rule, tags)
            self._db.commit(session)
            return model_of(row)

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
            created_at=now(),
            latest_version=0,
        )
        session.add(row)
        session.flush()
        self._db.append_change(session, e.EventType.MODEL_CREATED, name)
        return row

    def get_model(self, name: str) -> e.Model:
        with self._db.read() as session:
            return model_of(self._db.model_row(session, name, "name"))

    def list_models(self, size: int = 0, token: str = "") -> e.Page[e.Model]:
        limit = page_size(size, self._default_page_size)
        after = decode_token(token)
        query = select(ModelRow).order_by(ModelRow.name).limit(limit + 1)
        if after is not None:
            query = query.where(ModelRow.name > str(after))
        with self._db.read() as session:
            rows = list(session.scalars(query))
        more = len(rows) > limit
        rows = rows[:limit]
        next_token = encode_token(rows[-1].name) if more else ""
        return e.Page([model_of(r) for r in rows], next_token)

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
        raise_violations(violations)
        existing = None
        with self._db.read() as session:
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
        return version_of(row, self._db.aliases_of(session, [row.id])[row.id])

    def _record_version(self, header: e.UploadHeader) -> tuple[e.ModelVersion, bool]:
        """Insert the version once its blobs are durable; one transaction, or nothing."""
        session = self._db.write()
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
                created_at=now(),
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
            self._db.append_change(session, e.EventType.VERSION_CREATED, model.name, row.number)
            version = version_of(row, [])
            self._db.commit(session)
            return version, True
        except IntegrityError:
            # A concurrent upload with the same idempotency key won the race.
            session.rollback()
            with self._db.read() as fresh:
                model = self._db.model_row(fresh, header.model, "header.model")
                existing = self._find_by_key(fresh, model, header.idempotency_key)
            if existing is None:
                raise
            return existing, False
        finally:
            session.close()

    def get_version(self, model: str, version: int = 0, alias: str = "") -> e.ModelVersion:
        with self._db.read() as session:
            model_row = self._db.model_row(session, model)
            if alias:
                raise_violations([check_name("alias", alias)])
                alias_row = session.get(AliasRow, (model_row.id, alias))
                if alias_row is None:
                    raise NotFound("alias", f"{model}@{alias}", "alias")
                version = alias_row.version.number
            row = self._db.version_row(session, model_row, version)
            return version_of(row, self._db.aliases_of(session, [row.id])[row.id])

    def list_versions(
        self, model: str, size: int = 0, token: str = "", dataset_version: str = ""
    ) -> e.Page[e.ModelVersion]:
        limit = page_size(size, self._default_page_size)
        after = decode_id_token(token)
        query = (
            select(VersionRow)
            .options(selectinload(VersionRow.artifacts), selectinload(VersionRow.model))
            .order_by(VersionRow.id)
            .limit(limit + 1)
        )
        with self._db.read() as session:
            if model:
                query = query.where(VersionRow.model_id == self._db.model_row(session, model).id)
            elif not dataset_version:
                raise invalid("dataset_version", "required when model is empty")
            if dataset_version:
                query = query.where(VersionRow.dataset_version == dataset_version)
            if after is not None:
                query = query.where(VersionRow.id > after)
            rows = list(session.scalars(query))
            more = len(rows) > limit
            rows = rows[:limit]
            aliases = self._db.aliases_of(session, [r.id for r in rows])
            versions = [version_of(r, aliases[r.id]) for r in rows]
        return e.Page(versions, encode_token(rows[-1].id) if more else "")

    def delete_version(self, model: str, version: int) -> None:
        with self._db.write() as session:
            model_row = self._db.model_row(session, model)
            row = self._db.version_row(session, model_row, version)
            aliases = self._db.aliases_of(session, [row.id])[row.id]
            if aliases:
                raise FailedPrecondition(
                    f"version {version} of {model!r} is named by alias(es) "
                    f"{', '.join(sorted(aliases))}; move or delete them first"
                )
            digests = {a.sha256 for a in row.artifacts}
            session.delete(row)
            self._db.append_change(session, e.EventType.VERSION_DELETED, model, version)
            session.flush()
            still_used = set(
                session.scalars(select(ArtifactRow.sha256).where(ArtifactRow.sha256.in_(digests)))
            )
            self._db.commit(session)
        if self.blobs.shared:
            # Another replica may be committing the same content: the collector's grace
            # period decides (shared.blob_collector).
            return
        for digest in digests - still_used:
            self.blobs.delete(digest)

    def referenced_blobs(self, digests: set[str]) -> set[str]:
        """Which of `digests` some artifact names."""
        ordered = sorted(digests)
        found: set[str] = set()
        with self._db.read() as session:
            for start in range(0, len(ordered), 500):
                batch = ordered[start : start + 500]
                found |= set(
                    session.scalars(select(ArtifactRow.sha256).where(ArtifactRow.sha256.in_(batch)))
                )
        return found

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

    # --- change feed ----------------------------------------------------------------------

    def changes_after(
        self, revision: int, models: list[str] | None = None, limit: int = 500
    ) -> list[e.Change]:
        if revision < 0:
            raise invalid("since_revision", "must be >= 0")
        raise_violations([check_name(f"models[{i}]", m) for i, m in enumerate(models or [])])
        query = (
            select(ChangeRow)
            .where(ChangeRow.revision > revision)
            .order_by(ChangeRow.revision)
            .limit(limit)
        )
        if models:
            query = query.where(ChangeRow.model.in_(models))
        with self._db.read() as session:
            rows = list(session.scalars(query))
            rollout_revisions = [r.revision for r in rows if r.event_type.startswith("ROLLOUT_")]
            details: dict[int, str] = {}
            if rollout_revisions:
                found = session.execute(
                    select(RolloutEventRow.revision, RolloutEventRow.detail).where(
                        RolloutEventRow.revision.in_(rollout_revisions)
                    )
                )
                details = {revision: detail for revision, detail in found}
            return [change_of(r, details.get(r.revision, "")) for r in rows]
