"""Domain exceptions raised by service cores, as `google.rpc.Status` values.

Cores raise these and never build status codes themselves; nothing here depends on a
transport. Each error carries a canonical `Code` and typed details (BadRequest field
violations, ResourceInfo, RetryInfo); the gRPC error interceptor (`shared.interceptors`)
sends that status as it is, and the HTTP front ends map the code with `shared.http_codes`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

# Caller-supplied text (names, values) in a status is cut to this many characters, and a
# whole message to MAX_MESSAGE: a status travels in HTTP/2 trailers, which clients refuse
# past 8 KiB, so an echoed 3,000-character name must not turn NOT_FOUND into a failed call.
MAX_ECHO = 256
MAX_MESSAGE = 1024


def bounded(text: str, limit: int = MAX_ECHO) -> str:
    """`text`, or its first `limit` characters with how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class Code(IntEnum):
    """The canonical status codes (`google.rpc.Code`), the numbers gRPC uses on the wire."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class DomainError(Exception):
    """Base of every error a core may raise on purpose."""

    code: Code = Code.UNKNOWN

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def details(self) -> list[any_pb2.Any]:
        return []

    def to_status(self) -> status_pb2.Status:
        status = status_pb2.Status(code=self.code, message=bounded(self.message, MAX_MESSAGE))
        status.details.extend(self.details())
        return status


def _pack(message) -> any_pb2.Any:  # type: ignore[no-untyped-def]
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


class InvalidArgument(DomainError):
    """The request is malformed; `violations` say which fields and why."""

    code = Code.INVALID_ARGUMENT

    def __init__(self, violations: list[FieldViolation] | FieldViolation) -> None:
        if isinstance(violations, FieldViolation):
            violations = [violations]
        self.violations = violations
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))

    def details(self) -> list[any_pb2.Any]:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=bounded(v.field), description=bounded(v.description)
                )
                for v in self.violations
            ]
        )
        return [_pack(bad_request)]

    def renamed(self, rename: Callable[[str], str]) -> InvalidArgument:
        """The same violations with each field renamed (into a protocol's field paths)."""
        return InvalidArgument(
            [FieldViolation(rename(v.field), v.description) for v in self.violations]
        )


def invalid(field: str, description: str) -> InvalidArgument:
    return InvalidArgument(FieldViolation(field, description))


def raise_violations(checks: list[FieldViolation | None]) -> None:
    """InvalidArgument naming every violation among `checks` (None: that check passed)."""
    found = [v for v in checks if v is not None]
    if found:
        raise InvalidArgument(found)


class _ResourceError(DomainError):
    """An error about one named resource; `field` names the request field that named it."""

    def __init__(
        self, resource_type: str, resource_name: str, message: str, field: str | None
    ) -> None:
        super().__init__(message)
        self.resource_type = resource_type
        self.resource_name = resource_name
        self.field = field

    def details(self) -> list[any_pb2.Any]:
        info = error_details_pb2.ResourceInfo(
            resource_type=self.resource_type,
            resource_name=bounded(self.resource_name),
            description=bounded(self.message),
        )
        details = [_pack(info)]
        if self.field is not None:
            violation = error_details_pb2.BadRequest.FieldViolation(
                field=self.field, description=bounded(self.message)
            )
            details.append(_pack(error_details_pb2.BadRequest(field_violations=[violation])))
        return details


class NotFound(_ResourceError):
    code = Code.NOT_FOUND

    def __init__(self, resource_type: str, resource_name: str, field: str | None = None) -> None:
        message = f"{resource_type} {bounded(resource_name)!r} not found"
        super().__init__(resource_type, resource_name, message, field)


class AlreadyExists(_ResourceError):
    code = Code.ALREADY_EXISTS

    def __init__(self, resource_type: str, resource_name: str, field: str | None = None) -> None:
        message = f"{resource_type} {bounded(resource_name)!r} already exists"
        super().__init__(resource_type, resource_name, message, field)


class FailedPrecondition(DomainError):
    """The system is not in a state that allows the operation (it may be later)."""

    code = Code.FAILED_PRECONDITION


class ResourceExhausted(DomainError):
    """A bounded resource (a queue, a quota) is full; retry after `retry_after_s`."""

    code = Code.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def details(self) -> list[any_pb2.Any]:
        if self.retry_after_s is None:
            return []
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(self.retry_after_s * 1e9))
        return [_pack(error_details_pb2.RetryInfo(retry_delay=delay))]


class Unavailable(ResourceExhausted):
    """A dependency or the service itself cannot answer now; safe to retry."""

    code = Code.UNAVAILABLE


class Unauthenticated(DomainError):
    """The call carries no credentials, or credentials this service does not accept."""

    code = Code.UNAUTHENTICATED


class PermissionDenied(DomainError):
    """The caller is known, and its roles do not grant what the call needs."""

    code = Code.PERMISSION_DENIED


class DataLoss(DomainError):
    """Stored data does not match its recorded digest."""

    code = Code.DATA_LOSS


class DeadlineExceeded(DomainError):
    code = Code.DEADLINE_EXCEEDED


class Cancelled(DomainError):
    code = Code.CANCELLED


class RemoteStatus(DomainError):
    """A failure another process already turned into a `google.rpc.Status`: raised again
    as it came, code, message and details unchanged."""

    def __init__(self, status: status_pb2.Status) -> None:
        super().__init__(status.message)
        known = status.code in Code._value2member_map_
        self.code = Code(status.code) if known else Code.UNKNOWN
        self._status = status

    def to_status(self) -> status_pb2.Status:
        return self._status

    @property
    def retry_after_s(self) -> float | None:
        """The delay its RetryInfo asks for, as ResourceExhausted's; None without one."""
        for detail in self._status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return info.retry_delay.ToTimedelta().total_seconds()
        return None


def from_status(status: status_pb2.Status) -> DomainError:
    """A status another process sent, as a domain error: InvalidArgument when it names
    fields (so an adapter can rename them as for its own errors), else RemoteStatus."""
    if status.code == Code.INVALID_ARGUMENT:
        for detail in status.details:
            bad_request = error_details_pb2.BadRequest()
            if detail.Unpack(bad_request) and bad_request.field_violations:
                return InvalidArgument(
                    [FieldViolation(v.field, v.description) for v in bad_request.field_violations]
                )
    return RemoteStatus(status)
